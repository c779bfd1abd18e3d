"""Multipart upload parsing with tight limits.

The form is parsed here (not by a ``File()`` parameter) so that the part limits are ours: one file
field, a handful of small fields, and no filename ever used, logged or echoed. The body size cap
itself is enforced while streaming, by :mod:`api.middleware`, before any part is spooled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.datastructures import UploadFile

MAX_FILES_PARSED = 8  # more than this is a framing problem (400 from Starlette)
MAX_FIELDS = 8
MAX_FIELD_BYTES = 64 * 1024


class UploadProblem(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Upload:
    data: bytes
    sha256: str


async def read_upload(request: Request) -> Upload:
    """Return the bytes of the single multipart field ``file``."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UploadProblem(
            422, "missing_file", "Send the radiograph as the multipart/form-data field 'file'."
        )
    async with request.form(
        max_files=MAX_FILES_PARSED, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES
    ) as form:
        files = [v for k, v in form.multi_items() if isinstance(v, UploadFile)]
        named = [v for k, v in form.multi_items() if k == "file" and isinstance(v, UploadFile)]
        if len(files) > 1:
            raise UploadProblem(422, "too_many_files", "Send exactly one file per request.")
        if not named:
            raise UploadProblem(422, "missing_file", "The multipart field 'file' is missing.")
        data = await named[0].read()
    if not data:
        raise UploadProblem(422, "empty_upload", "The uploaded file is empty.")
    digest = hashlib.sha256(data).hexdigest()
    request.state.upload_sha256 = digest  # for the audit record, never the filename
    return Upload(data=data, sha256=digest)


UploadDep = Annotated[Upload, Depends(read_upload)]


def upload_request_body(description: str = "The radiograph.") -> dict[str, Any]:
    """OpenAPI ``requestBody`` for routes that take one image in the field ``file``."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": description
                                + " PNG (8/16-bit), JPEG, WEBP or DICOM (CR/DX), detected from"
                                " the bytes.",
                            }
                        },
                    }
                }
            },
        }
    }
