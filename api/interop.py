"""The ``format`` and ``push`` query parameters: DICOM / FHIR / multipart answers.

JSON stays the default. ``push=true`` (with a DICOM format or ``bundle``) also sends the
answer's DICOM instances to the configured PACS over STOW-RS; the analysis is returned
whatever the push outcome, which the ``X-CXR-Push`` header states
(``stored; instances=N; attempts=K`` or ``failed; code=...; attempts=K``). A bundle whose push
failed ends with an ``application/problem+json`` part (status 502, stable ``code``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Query, Request, Response

from api.problems import problem_body
from interop.stow import PushResult
from service.errors import InvalidRequest
from service.interop_usecase import (
    DICOM,
    FHIR_JSON,
    Bundle,
    InteropService,
    Linked,
    PushNotConfigured,
    encode_bundle,
    stand_in_objects,
)

PushQuery = Annotated[
    bool,
    Query(
        description="Also store the DICOM answer in the PACS (STOW-RS to CXR_PACS__STOW_URL). "
        "Needs a DICOM format or bundle; the outcome is in the X-CXR-Push header."
    ),
]
PUSH_HEADER = "X-CXR-Push"
MEDIA = {
    "dicom-sr": DICOM,
    "dicom-seg": DICOM,
    "dicom-sc": DICOM,
    "fhir": FHIR_JSON,
    "bundle": "multipart/related",
}
_DESCRIPTIONS = {
    "dicom-sr": "Comprehensive SR (TID 1500 measurement report), UNVERIFIED",
    "dicom-seg": "Binary DICOM Segmentation of the anatomy",
    "dicom-sc": 'Secondary Capture of the overlay, "AI — not for diagnosis" burned in',
    "fhir": "FHIR R4B Bundle: DiagnosticReport (preliminary), Observations, Device, Provenance",
    "bundle": "multipart/related; type=application/dicom: SR, SEG, SC, a GSPS with the "
    "outlines and the answer (and, for a non-DICOM upload, a Secondary Capture of it first), "
    "then the FHIR Bundle",
}


def format_query(*formats: str) -> Any:
    choices = ", ".join(f"`{f}` ({_DESCRIPTIONS[f]})" for f in formats)
    return Query(alias="format", description=f"Answer format: `json` (default), {choices}.")


def format_responses(*formats: str) -> dict[int | str, dict[str, Any]]:
    """The 200 answer's extra media types for OpenAPI (next to application/json)."""
    content: dict[str, Any] = {}
    for f in formats:
        schema = {"type": "string", "format": "binary", "description": _DESCRIPTIONS[f]}
        content.setdefault(MEDIA[f], {"schema": schema})
    if "fhir" in formats:
        content[FHIR_JSON] = {"schema": {"type": "object", "description": _DESCRIPTIONS["fhir"]}}
    push = {"description": "Push outcome when push=true", "schema": {"type": "string"}}
    return {200: {"content": content, "headers": {PUSH_HEADER: push}}}


def check_push(push: bool, fmt: str, interop: InteropService) -> None:
    if not push:
        return
    if fmt in ("json", "fhir"):
        raise InvalidRequest(
            "invalid_parameter", "push=true needs format=dicom-* or format=bundle."
        )
    if interop.pacs is None:
        raise PushNotConfigured()


def push_header(result: PushResult | None) -> dict[str, str]:
    if result is None:
        return {}
    if result.status == "stored":
        value = f"stored; instances={result.instances}; attempts={result.attempts}"
    else:
        value = f"failed; code={result.code}; attempts={result.attempts}"
    return {PUSH_HEADER: value}


def push_problem(request: Request, result: PushResult | None) -> bytes | None:
    if result is None or result.status == "stored":
        return None
    rid = getattr(request.state, "request_id", None)
    body = problem_body(502, result.code or "pacs_push_failed", result.detail or "", rid)
    body |= {
        "title": "PACS push failed",
        "attempts": result.attempts,
        "instances_stored": result.instances,
        "http_status": result.http_status,
    }
    return json.dumps(body).encode("utf-8")


async def dicom_answer(interop: InteropService, linked: Linked, push: bool) -> Response:
    """One DICOM instance as application/dicom; pushed first when asked, after the stand-in
    source image it references (made from the same decode, for a PNG or JPEG upload)."""
    result = None
    if push:
        result = await interop.push([*stand_in_objects(linked.source), linked.obj])
    return Response(linked.obj.encode(), media_type=DICOM, headers=push_header(result))


def bundle_answer(request: Request, bundle: Bundle) -> Response:
    related = encode_bundle(bundle, push_problem(request, bundle.push))
    return Response(related.body, media_type=related.content_type, headers=push_header(bundle.push))


def fhir_answer(body: bytes) -> Response:
    return Response(body, media_type=FHIR_JSON)
