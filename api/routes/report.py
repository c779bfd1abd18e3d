"""POST /report and POST /explain/report: grounded, reproducible radiology reports."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from api.deps import InteropDep, PopulationQuery, ReportDep
from api.disconnect import cancel_on_disconnect
from api.interop import (
    PushQuery,
    bundle_answer,
    check_push,
    dicom_answer,
    fhir_answer,
    format_query,
    format_responses,
)
from api.jobs import IdempotencyKey, add_job_routes, job_fields, submit_job
from api.problems import problem_for, problem_responses
from api.schemas.report import (
    BundleJob,
    ReportJob,
    ReportResponse,
    SectionEventOut,
)
from api.schemas.report_out import evidence_out, report_response
from api.upload import Upload, UploadDep, upload_request_body
from inference.errors import IntakeError
from inference.operating import Population
from reporting.evidence import Language
from reporting.report import HEADINGS
from reporting.stream import StreamEvent
from service.errors import JobCancelled, ServiceError
from service.interop_usecase import InteropService, Linked
from service.jobs import JobKind, Params
from service.report_usecase import ReportOutcome, ReportService, VisionEvidence

router = APIRouter(tags=["report"])
ERRORS = problem_responses(400, 408, 413, 415, 422, 500, 503)
# Routes that wait for the language model: 504 when it misses its deadline.
LLM_ERRORS = problem_responses(400, 408, 413, 415, 422, 500, 503, 504)

ReportFormat = Literal["json", "dicom-sr", "fhir", "bundle"]
LangQuery = Annotated[Literal["en", "ru"], Query(description="Report language.")]
LimeQuery = Annotated[bool, Query(description="Include LIME in the zone descriptors.")]
AttrQuery = Annotated[
    bool, Query(description="Add Shapley attributions of the descriptors (slower).")
]
DebugQuery = Annotated[
    bool,
    Query(
        description="Also return the model sentences the grounding check removed (and, on "
        "the stream, the raw unchecked model text). Off by default: that text is unsupported."
    ),
]


@router.post(
    "/report",
    operation_id="report",
    summary="Structured radiology report grounded in the classifier and its explanations",
    response_model=ReportResponse,
    responses={**LLM_ERRORS, **format_responses("dicom-sr", "fhir", "bundle")},
    openapi_extra=upload_request_body(),
)
async def report(
    request: Request,
    upload: UploadDep,
    service: ReportDep,
    interop: InteropDep,
    lang: LangQuery = "en",
    lime: LimeQuery = True,
    attributions: AttrQuery = False,
    population: PopulationQuery = None,
    fmt: Annotated[ReportFormat, format_query("dicom-sr", "fhir", "bundle")] = "json",
    push: PushQuery = False,
    debug: DebugQuery = False,
) -> ReportResponse | Response:
    check_push(push, fmt, interop)
    if fmt == "bundle":
        return await _bundle(request, interop, upload, lang, lime, push)
    if fmt != "json":
        return await _interop_report(
            request, interop, upload, fmt, push, lang, lime, attributions, population
        )
    outcome = await _written(request, upload, service, lang, lime, attributions, population)
    return report_response(outcome, service, debug)


async def _written(
    request: Request,
    upload: Upload,
    service: ReportService,
    lang: Language,
    lime: bool,
    attributions: bool,
    population: Population | None,
) -> ReportOutcome:
    """The one path /report and /explain/report share: the report, its work cancelled when
    the client leaves (the LIME step within a batch, the LLM within a token)."""
    async with cancel_on_disconnect(request) as control:
        return await service.report(upload.data, lang, lime, attributions, control, population)


async def _bundle(
    request: Request,
    interop: InteropService,
    upload: Upload,
    lang: Language,
    lime: bool,
    push: bool,
) -> Response:
    async with cancel_on_disconnect(request) as control:
        b = await interop.bundle(upload.data, upload.sha256, lang, lime, push, control)
    return bundle_answer(request, b)


async def _interop_report(
    request: Request,
    interop: InteropService,
    upload: Upload,
    fmt: str,
    push: bool,
    lang: Language,
    lime: bool,
    attributions: bool,
    population: Population | None,
) -> Response:
    """The report as an SR or a FHIR Bundle, linked to a source made from the same vision."""
    async with cancel_on_disconnect(request) as control:
        w = await interop.written(
            upload.data, upload.sha256, lang, lime, attributions, control, population
        )
    if fmt == "fhir":
        return fhir_answer(interop.fhir_from(w.source, w.outcome, lime))
    return await dicom_answer(
        interop, Linked(interop.sr_from(w.source, w.outcome, lime), w.source), push
    )


@router.post(
    "/explain/report",
    operation_id="explain_report",
    summary="Report plus Shapley attributions of each descriptor and each report token",
    response_model=ReportResponse,
    responses=LLM_ERRORS,
    openapi_extra=upload_request_body(),
)
async def explain_report(
    request: Request,
    upload: UploadDep,
    service: ReportDep,
    lang: LangQuery = "en",
    lime: LimeQuery = True,
    population: PopulationQuery = None,
    debug: DebugQuery = False,
) -> ReportResponse:
    outcome = await _written(request, upload, service, lang, lime, True, population)
    return report_response(outcome, service, debug)


REPORT_JOBS = "/report/jobs"
EXPLAIN_REPORT_JOBS = "/explain/report/jobs"
_JOB_PATHS: dict[JobKind, str] = {"report": REPORT_JOBS, "explain_report": EXPLAIN_REPORT_JOBS}


async def _queued(
    request: Request,
    response: Response,
    kind: JobKind,
    params: Params,
    upload: Upload,
    key: str | None,
) -> ReportJob:
    """Submit a report job of ``kind`` and answer its 202 body."""
    base = _JOB_PATHS[kind]
    view = await submit_job(request, response, kind, params, upload.data, key, base)
    return ReportJob(**job_fields(view, request, base))


@router.post(
    REPORT_JOBS,
    operation_id="submit_report_job",
    summary="Queue a report and answer at once (202 + job URL)",
    description="The same report as POST /report, written in the background (by a worker "
    "process when CXR_JOBS__BACKEND=redis). Poll the job URL; kept for CXR_EXPLAIN__JOB_TTL_S "
    "seconds.",
    status_code=202,
    response_model=ReportJob,
    responses=ERRORS,
    openapi_extra=upload_request_body(),
)
async def submit_report_job(
    request: Request,
    response: Response,
    upload: UploadDep,
    idempotency_key: IdempotencyKey = None,
    lang: LangQuery = "en",
    lime: LimeQuery = True,
    attributions: AttrQuery = False,
    population: PopulationQuery = None,
) -> ReportJob:
    params = {"lang": lang, "lime": lime, "attributions": attributions, "population": population}
    return await _queued(request, response, "report", params, upload, idempotency_key)


add_job_routes(
    router,
    REPORT_JOBS,
    "report",
    ReportJob,
    (
        "State of a report job, with the report once it has succeeded",
        "Cancel a report job (its LIME step stops within one model batch)",
    ),
)


@router.post(
    EXPLAIN_REPORT_JOBS,
    operation_id="submit_explain_report_job",
    summary="Queue a report with Shapley attributions and answer at once (202 + job URL)",
    description="The same answer as POST /explain/report, computed in the background.",
    status_code=202,
    response_model=ReportJob,
    responses=ERRORS,
    openapi_extra=upload_request_body(),
)
async def submit_explain_report_job(
    request: Request,
    response: Response,
    upload: UploadDep,
    idempotency_key: IdempotencyKey = None,
    lang: LangQuery = "en",
    lime: LimeQuery = True,
    population: PopulationQuery = None,
) -> ReportJob:
    params = {"lang": lang, "lime": lime, "attributions": True, "population": population}
    return await _queued(request, response, "explain_report", params, upload, idempotency_key)


add_job_routes(
    router,
    EXPLAIN_REPORT_JOBS,
    "explain_report",
    ReportJob,
    (
        "State of an explained-report job, with its answer once it has succeeded",
        "Cancel an explained-report job",
    ),
)


BUNDLE_JOBS = "/report/bundle/jobs"


@router.post(
    BUNDLE_JOBS,
    operation_id="submit_bundle_job",
    summary="Queue the DICOM SR/SEG/SC + FHIR bundle of a report (202 + job URL)",
    description="The same objects as POST /report?format=bundle (optionally pushed over "
    "STOW-RS), built in the background; the job's result holds each part base64-encoded.",
    status_code=202,
    response_model=BundleJob,
    responses=ERRORS,
    openapi_extra=upload_request_body(),
)
async def submit_bundle_job(
    request: Request,
    response: Response,
    upload: UploadDep,
    interop: InteropDep,
    idempotency_key: IdempotencyKey = None,
    lang: LangQuery = "en",
    lime: LimeQuery = True,
    push: PushQuery = False,
) -> BundleJob:
    check_push(push, "bundle", interop)
    params = {"lang": lang, "lime": lime, "push": push}
    view = await submit_job(
        request, response, "bundle", params, upload.data, idempotency_key, BUNDLE_JOBS
    )
    return BundleJob(**job_fields(view, request, BUNDLE_JOBS))


add_job_routes(
    router,
    BUNDLE_JOBS,
    "bundle",
    BundleJob,
    (
        "State of a bundle job, with its parts once it has succeeded",
        "Cancel a bundle job",
    ),
)


@router.post(
    "/report/stream",
    operation_id="report_stream",
    summary="The same report as Server-Sent Events, sentence by sentence as it is written",
    description="The vision stage runs before the stream starts, so an upload it refuses "
    "(invalid, not a chest radiograph, no lungs) or a full gate gets an ordinary problem+json "
    "answer (4xx, or 503 + Retry-After) instead of a 200 stream. "
    "Events, in order: `evidence` (EvidenceOut, the vision stage's result); then while the "
    "model writes, `sentence` ({name, text}) for each sentence that "
    "passed the grounding check; then one `section` per report section in order "
    "(SectionEventOut: name, heading, text, provenance; replace what was shown for it: a "
    "section without enough supported text falls back to its template); then `report` (the "
    "whole ReportResponse), or `error` (a Problem plus retry_after_s) as the last event. "
    "Unchecked model text is never sent unless debug=true (`draft` events, {text}). A client "
    "that disconnects stops the generation within a token.",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **LLM_ERRORS},
    openapi_extra=upload_request_body(),
)
async def report_stream(
    request: Request,
    upload: UploadDep,
    service: ReportDep,
    lang: LangQuery = "en",
    lime: LimeQuery = True,
    population: PopulationQuery = None,
    debug: DebugQuery = False,
) -> StreamingResponse:
    service.require_llm()  # a plain 503 before the stream starts
    t0 = time.perf_counter()
    async with cancel_on_disconnect(request) as control:
        # Refusals (422 not_a_chest_radiograph, 503 overloaded, ...) as plain answers.
        vision = await service.evidence(upload.data, lime, control, population, lang)
    vision_ms = round((time.perf_counter() - t0) * 1000.0, 2)
    events = _report_events(request, vision, vision_ms, service, lang, debug)
    return StreamingResponse(events, media_type="text/event-stream")


def _sse(event: str, payload: str) -> str:
    return f"event: {event}\ndata: {payload}\n\n"


def _stream_event(e: StreamEvent, lang: Literal["en", "ru"]) -> str:
    if e.kind == "draft":
        return _sse("draft", json.dumps({"text": e.text}, ensure_ascii=False))
    if e.kind == "sentence":
        return _sse("sentence", json.dumps({"name": e.section, "text": e.text}, ensure_ascii=False))
    assert e.section is not None and e.provenance is not None
    section = SectionEventOut(
        name=e.section, heading=HEADINGS[lang][e.section], text=e.text, provenance=e.provenance
    )
    return _sse("section", section.model_dump_json())


def _error_event(exc: Exception, request_id: str | None) -> str:
    # The status line is already sent: the problem the route would have answered, in-band,
    # as the last event (its ``status`` says which; ``retry_after_s`` stands for the header).
    p = problem_for(exc, request_id)
    return _sse("error", json.dumps(p.body | {"retry_after_s": p.retry_after_s}))


async def _report_events(
    request: Request,
    vision: VisionEvidence,
    vision_ms: float,
    service: ReportService,
    lang: Literal["en", "ru"],
    debug: bool,
) -> AsyncIterator[str]:
    """The generation runs as its own task feeding a queue, so this generator only ever
    waits on the queue: a client that leaves sets the cancel flag (watcher), which stops the
    LLM between tokens and frees the one LLM slot for the next report (F6). A failure after
    the status line (the LLM down or too slow) ends the stream with an `error` event."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
    gate = service.registry.input_gate.version

    def on_event(e: StreamEvent) -> None:  # called from the worker thread
        if debug or e.kind != "draft":
            loop.call_soon_threadsafe(queue.put_nowait, e)

    async with cancel_on_disconnect(request) as control:
        task: asyncio.Future[ReportOutcome] | None = None
        try:
            yield _sse("evidence", evidence_out(vision, lang, gate).model_dump_json())
            task = asyncio.ensure_future(
                service.write(vision, lang, False, vision_ms, on_event, control.cancelled)
            )
            task.add_done_callback(lambda _: queue.put_nowait(None))
            while (event := await queue.get()) is not None:
                yield _stream_event(event, lang)
            outcome = await task
            yield _sse("report", report_response(outcome, service, debug).model_dump_json())
        except JobCancelled:
            return  # the client has gone; nobody reads the rest
        except (ServiceError, IntakeError) as exc:
            yield _error_event(exc, getattr(request.state, "request_id", None))
        finally:
            if task is not None and not task.done():
                control.cancelled.set()  # the stream was closed under us (client left)
                task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[ReportOutcome]) -> None:
    """Consume the outcome of a generation nobody waits for (it ends in JobCancelled)."""
    if not task.cancelled():
        task.exception()
