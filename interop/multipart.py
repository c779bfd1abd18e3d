"""``multipart/related`` encoding (RFC 2387), the shape STOW-RS and DICOMweb gateways take.

The DICOM parts come first (``application/dicom``, the root ``type``), so a gateway can forward
them to STOW-RS as they are; other parts (the FHIR Bundle, a push problem) follow with their
own Content-Type.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    content_type: str
    body: bytes
    location: str | None = None  # Content-Location, e.g. the SOP Instance's role


@dataclass(frozen=True)
class Related:
    body: bytes
    content_type: str


def encode_related(parts: list[Part], root_type: str = "application/dicom") -> Related:
    """Encode ``parts``; the boundary is random and checked against every body."""
    while True:
        boundary = "cxr-" + secrets.token_hex(16)
        marker = b"--" + boundary.encode("ascii")
        if not any(marker in p.body for p in parts):
            break
    chunks: list[bytes] = []
    for p in parts:
        headers = f"Content-Type: {p.content_type}\r\n"
        if p.location:
            headers += f"Content-Location: {p.location}\r\n"
        chunks += [marker, b"\r\n", headers.encode("ascii"), b"\r\n", p.body, b"\r\n"]
    chunks += [marker, b"--\r\n"]
    content_type = f'multipart/related; type="{root_type}"; boundary={boundary}'
    return Related(b"".join(chunks), content_type)
