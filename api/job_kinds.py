"""What each kind of job runs and returns: the response its synchronous route would give.

Used by the API process (in-memory jobs) and by ``python -m service.worker`` (Redis jobs), so a
job's result is the same JSON whichever process ran it. Results are encoded outputs (PNGs as
base64, rounded numbers), never arrays; the bundle's DICOM instances and FHIR Bundle are kept as
base64 parts (what the multipart/related answer carries), never as datasets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

from api.problems import problem_for
from api.schemas.convert import image_out, model_info
from api.schemas.explain import lime_response
from api.schemas.report import bundle_result
from api.schemas.report_out import report_response
from explain import Target
from inference.operating import Population
from reporting.evidence import Language
from service.interop_usecase import InteropService
from service.jobs import JobControl, JobKind, JobSpec, Json, Runner
from service.lifespan import JobKinds

Handler = Callable[[JobSpec, bytes, JobControl], Awaitable[Json]]


def make_runner(interop: InteropService) -> Runner:
    explain, report = interop.explain, interop.report_service
    registry = explain.registry

    async def lime(spec: JobSpec, data: bytes, control: JobControl) -> Json:
        p = spec.params
        target = cast(Target | None, p.get("target"))
        population = cast(Population | None, p.get("population"))
        out = await explain.lime(
            data, target, int(p["n_samples"] or 0), int(p["seed"] or 0), control, population
        )
        info = model_info(registry.classifier)
        body = lime_response(out, info, image_out(out.image), registry.input_gate.version)
        return body.model_dump(mode="json")

    async def written(spec: JobSpec, data: bytes, control: JobControl) -> Json:
        p = spec.params
        control.started()
        attributions = spec.kind == "explain_report" or bool(p.get("attributions"))
        language = cast(Language, p["lang"])
        population = cast(Population | None, p.get("population"))
        out = await report.report(
            data, language, bool(p["lime"]), attributions, control, population
        )
        return report_response(out, report).model_dump(mode="json")

    async def bundle(spec: JobSpec, data: bytes, control: JobControl) -> Json:
        p = spec.params
        control.started()
        language = cast(Language, p["lang"])
        sha256 = hashlib.sha256(data).hexdigest()
        b = await interop.bundle(
            data, sha256, language, bool(p["lime"]), bool(p.get("push")), control
        )
        return bundle_result(b).model_dump(mode="json")

    handlers: dict[JobKind, Handler] = {
        "lime": lime,
        "report": written,
        "explain_report": written,
        "bundle": bundle,
    }

    async def run(spec: JobSpec, data: bytes, control: JobControl) -> Json:
        return await handlers[spec.kind](spec, data, control)

    return run


def describe(exc: BaseException) -> dict[str, Any]:
    """The problem body a synchronous call would have answered (request_id filled when read)."""
    p = problem_for(exc, None)
    return p.body if p.retry_after_s is None else p.body | {"retry_after_s": p.retry_after_s}


JOB_KINDS = JobKinds(runner=make_runner, describe=describe)
