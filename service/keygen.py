"""``python -m service.keygen NAME``: create an API key for a client called NAME.

Prints the key (give it to the client once; it is not stored) and the configuration entry
``NAME:<sha256>`` for ``CXR_AUTH__API_KEYS``, which holds only the hash.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets

from service.auth import key_digest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.keygen", description=__doc__)
    parser.add_argument("name", help="key id shown in the audit log, e.g. pacs-gateway")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", args.name):
        parser.error("NAME: 1-64 of A-Z a-z 0-9 . _ -")
    key = secrets.token_urlsafe(32)
    entry = f"{args.name}:{key_digest(key)}"
    print(f"key (give to the client, not stored anywhere): {key}")
    print(f"config entry: CXR_AUTH__API_KEYS='{json.dumps([entry])}'")


if __name__ == "__main__":
    main()
