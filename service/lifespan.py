"""Lifespan: load every model once, expose typed state to requests.

Models load before the server accepts traffic; a model that fails verification raises here, so
the process exits non-zero and never reports ready (see Starlette's "Lifespan State").
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypedDict

from anyio import to_thread
from arq.connections import RedisSettings, create_pool

from inference.intake import Limits
from service.explain_usecase import ExplainService
from service.gate import WorkGate
from service.interop_usecase import InteropService, stow_config
from service.jobs import Describe, JobStore, MemoryJobStore, Runner
from service.memory import release_free_heap
from service.metrics import Metrics
from service.readiness import Readiness
from service.redis_jobs import RedisJobStore
from service.registry import ModelRegistry, load_registry
from service.report_usecase import LoadedBackend, ReportService, build_report_service, load_backend
from service.settings import Settings
from service.usecases import AnalysisService

log = logging.getLogger("cxr.service")


def temp_free_bytes() -> int:
    """Free bytes where uploads spool (multipart parts over 1 MB go to the temp dir)."""
    return shutil.disk_usage(tempfile.gettempdir()).free


class AppState(TypedDict):
    settings: Settings
    registry: ModelRegistry
    analysis: AnalysisService
    explain: ExplainService
    readiness: Readiness
    model_versions: dict[str, str]
    report: ReportService
    jobs: JobStore
    metrics: Metrics
    interop: InteropService


@dataclass(frozen=True)
class JobKinds:
    """How jobs run and fail, supplied by the composition root (the runner renders each kind's
    response, which is the API layer's business). ``runner`` gets the interop service, which
    holds every other service the kinds need (analysis, explain, report)."""

    runner: Callable[[InteropService], Runner]
    describe: Describe


def build_state(
    settings: Settings,
    registry: ModelRegistry,
    llm: LoadedBackend = (None, "not loaded"),
    *,
    kinds: JobKinds,
    metrics: Metrics,
    jobs: JobStore | None = None,
) -> AppState:
    """Every service of one process. ``jobs``: a store built elsewhere (Redis), else the
    in-memory one running jobs here."""
    c = settings.concurrency
    gate = WorkGate(
        "inference",
        c.inference_slots,
        c.max_queue,
        c.retry_after_s,
        on_idle=release_free_heap,
        max_wait_s=c.max_wait_s,
        metrics=metrics,
        heavy_cost=c.heavy_cost,
    )
    limits = Limits(
        max_pixels=settings.limits.max_pixels,
        max_side=settings.limits.max_side,
        work_side=settings.limits.work_max_side,
    )
    e = settings.explain
    lime_gate = WorkGate(
        "lime",
        e.lime_slots,
        e.lime_queue,
        e.retry_after_s,
        on_idle=release_free_heap,
        max_wait_s=e.lime_max_wait_s,
        metrics=metrics,
    )
    explain = ExplainService(registry, gate, lime_gate, limits, e.lime_batch_size)
    readiness = Readiness()
    readiness.set("models", True)
    min_free = settings.limits.min_free_temp_bytes
    readiness.probe("temp_storage", lambda: temp_free_bytes() >= min_free)
    readiness.optional.add("llm")
    readiness.set("llm", llm[0] is not None)
    analysis = AnalysisService(registry, gate, limits, settings.limits.max_study_pixels)
    report = build_report_service(registry, explain, settings.report, *llm, metrics=metrics)
    if report.generator is not None and settings.report.warm_up:
        # reported, never required: a cold prompt cache only makes the first reports slower
        readiness.optional.add("llm_prompt_cache")
        readiness.probe("llm_prompt_cache", report.warmed.is_set)
    interop = InteropService(analysis, explain, report, stow_config(settings.pacs))
    if jobs is None:
        jobs = MemoryJobStore(
            kinds.runner(interop),
            kinds.describe,
            e.job_capacity,
            e.job_ttl_s,
            e.retry_after_s,
            on_transition=metrics.job,
        )
    return AppState(
        settings=settings,
        registry=registry,
        analysis=analysis,
        explain=explain,
        readiness=readiness,
        model_versions=registry.versions(),
        report=report,
        jobs=jobs,
        metrics=metrics,
        interop=interop,
    )


async def redis_job_store(settings: Settings, metrics: Metrics) -> RedisJobStore:
    """The API side of durable jobs (settings.jobs.backend == "redis")."""
    j, e = settings.jobs, settings.explain
    redis = await create_pool(RedisSettings.from_dsn(j.redis_url))
    return RedisJobStore(
        redis,
        capacity=e.job_capacity,
        ttl_s=e.job_ttl_s,
        timeout_s=j.timeout_s,
        retry_after_s=e.retry_after_s,
        queue_name=j.queue_name,
        on_transition=metrics.job,
    )


def make_lifespan(
    settings: Settings, kinds: JobKinds, metrics: Metrics
) -> Callable[[Any], AbstractAsyncContextManager[AppState]]:
    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[AppState]:
        registry = await to_thread.run_sync(load_registry, settings)
        llm = await to_thread.run_sync(load_backend, settings.report)
        jobs = None
        if settings.jobs.backend == "redis":
            jobs = await redis_job_store(settings, metrics)
        state = build_state(settings, registry, llm, kinds=kinds, metrics=metrics, jobs=jobs)
        log.info("models ready: %s", ", ".join(sorted(state["model_versions"])))
        state["report"].start_warm_up()
        try:
            yield state
        finally:
            state["readiness"].draining = True
            await state["jobs"].close()
            state["report"].close()

    return lifespan


# Gates a request to each path certainly passes through. Reports take the inference or the LIME
# gate depending on a query parameter, so only their LLM gate is checked up front; the vision
# gate still refuses them (after the upload) when it is full.
_GATED_PATHS: dict[str, tuple[str, ...]] = {
    "/classify": ("inference",),
    "/classify/study": ("inference",),
    "/segment": ("inference",),
    "/render": ("inference",),
    "/explain/gradcam": ("inference",),
    "/explain/lime": ("lime",),
    "/report": ("llm",),
    "/report/stream": ("llm",),
    "/explain/report": ("llm",),
}


# Grad-CAM of any film over ~1.2 MP is heavy work (ConcurrencySettings.heavy_cost). Before the
# body is read its size is unknown, so such a request is judged by the heavy lane: a 30 MP
# attack upload is then refused unread while the small lane keeps its slot (judged as a small
# request it was admitted, received and parsed, and only then refused).
_PRESUMED_HEAVY = frozenset({"/explain/gradcam"})


def presumed_cost(gate: WorkGate, path: str) -> float:
    """The cost a request on ``path`` is judged by before its upload is read."""
    if path in _PRESUMED_HEAVY and gate.heavy_cost is not None:
        return gate.heavy_cost + 1.0
    return 1.0


def first_refusing(gates: dict[str, WorkGate], path: str) -> WorkGate | None:
    for name in _GATED_PATHS.get(path, ()):
        gate = gates.get(name)
        if gate is not None and gate.would_refuse(presumed_cost(gate, path)):
            return gate
    return None


def refusing_gate(state: dict[str, object], path: str) -> WorkGate | None:
    """The first gate on ``path`` that would refuse a request now, if any.

    ``state`` is the lifespan state as Starlette hands it to each request (before startup it is
    empty and nothing is refused here; the routes answer 503 not-ready themselves).
    """
    explain = state.get("explain")
    report = state.get("report")
    gates: dict[str, WorkGate] = {}
    if isinstance(explain, ExplainService):
        gates["inference"], gates["lime"] = explain.gate, explain.lime_gate
    if isinstance(report, ReportService):
        gates["llm"] = report.llm_gate
    return first_refusing(gates, path)
