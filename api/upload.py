"""Multipart upload parsing with tight limits.

The form is parsed here (not by a ``File()`` parameter) so that the part limits are ours: one file
field, a handful of small fields, and no filename ever used, logged or echoed. The body size cap
itself is enforced while streaming, by :mod:`api.middleware`, before any part is spooled.
"""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile

from service.errors import InvalidRequest, ServiceUnavailable, UnsupportedMediaType

MAX_FILES_PARSED = 8  # more than this is a framing problem (400 from Starlette)
MAX_FIELDS = 8
MAX_FIELD_BYTES = 64 * 1024
MAX_STUDY_IMAGES = 6


@dataclass(frozen=True)
class Upload:
    data: bytes
    sha256: str


async def _read_files(request: Request, field: str, max_count: int) -> list[Upload]:
    """Bytes of every file in multipart ``field`` (1..max_count), other file fields refused."""
    content_type = request.headers.get("content-type", "")
    media, params = parse_options_header(content_type)
    if not content_type:
        raise InvalidRequest(
            "missing_file", f"Send the radiograph as the multipart/form-data field '{field}'."
        )
    if media != b"multipart/form-data":
        # A raw image body (or a urlencoded form) is the wrong encoding, not a missing field.
        raise UnsupportedMediaType(
            "multipart_required",
            f"Send the radiograph as the multipart/form-data field '{field}'.",
        )
    if b"charset" in params:
        _drop_charset(request, params)
    try:
        return await _parse(request, field, max_count)
    except OSError as exc:
        # Large parts spool to the temp dir; a full disk is a capacity problem, not a bad upload.
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ServiceUnavailable(
                "insufficient_storage", "Temporary storage is full; retry later.", 30
            ) from exc
        raise


def _drop_charset(request: Request, params: dict[bytes, bytes]) -> None:
    """Parse field names as UTF-8 whatever ``charset=`` says: Starlette decodes part names with
    the client's charset, so ``charset=utf-16`` turned the field ``file`` into garbage and the
    upload into ``missing_file`` (review F12; RFC 7578 4.6 has no charset parameter)."""
    boundary = params.get(b"boundary", b"").decode("latin-1")
    value = f'multipart/form-data; boundary="{boundary}"'.encode("latin-1")
    headers = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"content-type"]
    request.scope["headers"] = [*headers, (b"content-type", value)]
    if hasattr(request, "_headers"):
        del request._headers  # Starlette caches the parsed headers


async def _parse(request: Request, field: str, max_count: int) -> list[Upload]:
    async with request.form(
        max_files=MAX_FILES_PARSED, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES
    ) as form:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        named = [v for k, v in form.multi_items() if k == field and isinstance(v, UploadFile)]
        if not named:
            raise InvalidRequest("missing_file", f"The multipart field '{field}' is missing.")
        if len(files) > max_count or len(files) != len(named):
            raise InvalidRequest(
                "too_many_files", f"Send at most {max_count} file(s) in the field '{field}'."
            )
        blobs = [await f.read() for f in named]
    if not all(blobs):
        raise InvalidRequest("empty_upload", "The uploaded file is empty.")
    uploads = [Upload(data=b, sha256=hashlib.sha256(b).hexdigest()) for b in blobs]
    # For the audit record: content hashes, never filenames.
    request.state.upload_sha256 = ",".join(u.sha256 for u in uploads)
    return uploads


async def read_upload(request: Request) -> Upload:
    """Return the bytes of the single multipart field ``file``."""
    return (await _read_files(request, "file", 1))[0]


async def read_study(request: Request) -> list[Upload]:
    """Return the bytes of 1..MAX_STUDY_IMAGES files sent in the multipart field ``files``."""
    return await _read_files(request, "files", MAX_STUDY_IMAGES)


UploadDep = Annotated[Upload, Depends(read_upload)]
StudyDep = Annotated[list[Upload], Depends(read_study)]


_FORMATS = " PNG (8/16-bit), JPEG, WEBP or DICOM (CR/DX), detected from the bytes."


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
                                "description": description + _FORMATS,
                            }
                        },
                    }
                }
            },
        }
    }


def study_request_body() -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a study: 1..MAX_STUDY_IMAGES images in the field ``files``."""
    item = {"type": "string", "format": "binary", "description": "One view." + _FORMATS}
    schema = {
        "type": "object",
        "required": ["files"],
        "properties": {"files": {"type": "array", "items": item, "maxItems": MAX_STUDY_IMAGES}},
    }
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }
