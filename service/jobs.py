"""Jobs for work that takes seconds to minutes (LIME, reports): the store interface and the
in-memory store of the single-process mode.

A submit answers at once with a job id; the job waits for its gate (retrying while the gate
refuses, so a queued job is never dropped), runs, and keeps its result for ``ttl_s``. A job is
visible only to the principal that submitted it. Cancelling sets an event that the work checks
between model batches, so a running LIME stops and frees its slot within one batch.

Two stores implement :class:`JobStore`: :class:`MemoryJobStore` (this module; one process, jobs
lost on restart, the laptop default) and ``service.redis_jobs.RedisJobStore`` (durable jobs run
by separate worker processes, the scale-out path). Both keep only what the client reads back:
the job's JSON result or its problem body, never arrays or the upload.

Bounded everywhere: at most ``capacity`` jobs queued or running (beyond that 503 +
Retry-After), at most ``keep_finished`` finished jobs kept (memory store), each for ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from service.errors import JobCancelled as JobCancelled  # re-exported for the work
from service.errors import Overloaded

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE: frozenset[JobState] = frozenset({"queued", "running"})
# Kinds of job; each has a handler in api/job_kinds.py. "bundle": the DICOM SR/SEG/SC + FHIR
# export of a report (POST /report?format=bundle).
JobKind = Literal["lime", "report", "explain_report", "bundle"]
Params = Mapping[str, str | int | float | bool | None]
Json = dict[str, Any]


@dataclass(frozen=True)
class JobControl:
    """What the work sees: its cancel flag (check it between batches) and a start signal."""

    cancelled: threading.Event
    started: Callable[[], None]

    def check(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled()


@dataclass(frozen=True)
class JobSpec:
    """What to run: the kind and its validated query parameters (JSON scalars only)."""

    kind: JobKind
    params: Params


@dataclass(frozen=True)
class JobView:
    """A job as its client sees it. ``result`` is the response the synchronous route would
    give, ``error`` the problem body it would give (request_id left empty)."""

    id: str
    kind: JobKind
    state: JobState
    created_unix: float
    attempts: int
    result: Json | None = None
    error: Json | None = None


# Runs one job: the encoded result, or raises (JobCancelled, Overloaded: retried, anything
# else: the job fails with ``Describe(exc)`` as its problem).
Runner = Callable[[JobSpec, bytes, JobControl], Awaitable[Json]]
Describe = Callable[[BaseException], Json]


class JobStore(Protocol):
    async def submit(
        self, spec: JobSpec, data: bytes, principal: str | None, idempotency_key: str | None
    ) -> JobView:
        """Queue a job (or return the job already submitted with this idempotency key by this
        principal); raise :class:`Overloaded` when the queue is full."""
        ...

    async def get(self, job_id: str, principal: str | None) -> JobView | None:
        """The job, or None when unknown, expired, or submitted by another principal."""
        ...

    async def cancel(self, job_id: str, principal: str | None) -> JobView | None:
        """Ask an active job to stop (a queued one is cancelled at once); as :meth:`get`."""
        ...

    async def depth(self) -> int:
        """Jobs queued or running."""
        ...

    async def close(self) -> None: ...


async def run_with_retry(runner: Runner, spec: JobSpec, data: bytes, control: JobControl) -> Json:
    """Run the job, waiting and retrying while its gate refuses (busy with interactive
    requests): a queued job is never dropped because the server was busy."""
    while True:
        control.check()
        try:
            return await runner(spec, data, control)
        except Overloaded as exc:
            await asyncio.sleep(min(float(exc.retry_after_s), 2.0))


@dataclass
class _Job:
    id: str
    spec: JobSpec
    principal: str | None
    created_unix: float
    idempotency_key: str | None
    state: JobState = "queued"
    attempts: int = 0
    finished_monotonic: float | None = None
    result: Json | None = None
    error: Json | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[None] | None = None

    def view(self) -> JobView:
        return JobView(
            self.id,
            self.spec.kind,
            self.state,
            self.created_unix,
            self.attempts,
            self.result,
            self.error,
        )


class MemoryJobStore:
    """Jobs as tasks of this process's event loop (lost on restart)."""

    def __init__(
        self,
        runner: Runner,
        describe: Describe,
        capacity: int,
        ttl_s: float,
        retry_after_s: int,
        keep_finished: int = 16,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[JobKind, JobState], None] | None = None,
    ) -> None:
        self.runner = runner
        self.describe = describe
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.retry_after_s = retry_after_s
        self.keep_finished = keep_finished
        self._clock = clock
        self._on_transition = on_transition or (lambda kind, state: None)
        self._jobs: dict[str, _Job] = {}

    def _purge(self) -> None:
        now = self._clock()
        # Stable sort by finish time: ties keep submission order (oldest first).
        finished = sorted(
            (
                (j.finished_monotonic, j.id)
                for j in self._jobs.values()
                if j.finished_monotonic is not None
            ),
            key=lambda pair: pair[0],
        )
        excess = len(finished) - self.keep_finished
        for i, (at, job_id) in enumerate(finished):
            if i < excess or now - at > self.ttl_s:
                del self._jobs[job_id]

    def _active(self) -> int:
        return sum(1 for j in self._jobs.values() if j.state in ACTIVE)

    def _by_key(self, principal: str | None, key: str) -> _Job | None:
        return next(
            (
                j
                for j in self._jobs.values()
                if j.idempotency_key == key and j.principal == principal
            ),
            None,
        )

    async def submit(
        self, spec: JobSpec, data: bytes, principal: str | None, idempotency_key: str | None
    ) -> JobView:
        self._purge()
        if idempotency_key is not None:
            earlier = self._by_key(principal, idempotency_key)
            if earlier is not None:
                return earlier.view()
        if self._active() >= self.capacity:
            raise Overloaded("jobs", self.retry_after_s)
        job = _Job(secrets.token_hex(16), spec, principal, time.time(), idempotency_key)
        self._jobs[job.id] = job
        self._on_transition(spec.kind, "queued")
        job.task = asyncio.get_running_loop().create_task(self._run(job, data))
        return job.view()

    def _find(self, job_id: str, principal: str | None) -> _Job | None:
        self._purge()
        job = self._jobs.get(job_id)
        if job is None or job.principal != principal:
            return None
        return job

    async def get(self, job_id: str, principal: str | None) -> JobView | None:
        job = self._find(job_id, principal)
        return None if job is None else job.view()

    async def cancel(self, job_id: str, principal: str | None) -> JobView | None:
        job = self._find(job_id, principal)
        if job is None:
            return None
        if job.state in ACTIVE:
            job.cancelled.set()
            if job.state == "queued":
                self._finish(job, "cancelled")
        return job.view()

    async def depth(self) -> int:
        return self._active()

    def _finish(self, job: _Job, state: JobState) -> None:
        if job.state in ACTIVE:
            job.state = state
            job.finished_monotonic = self._clock()
            self._on_transition(job.spec.kind, state)

    async def _run(self, job: _Job, data: bytes) -> None:
        def started() -> None:
            if job.state == "queued":
                job.state = "running"
                job.attempts += 1
                self._on_transition(job.spec.kind, "running")

        control = JobControl(job.cancelled, started)
        try:
            job.result = await run_with_retry(self.runner, job.spec, data, control)
        except JobCancelled:
            self._finish(job, "cancelled")
        except Exception as exc:  # reported to the client as the job's problem
            job.error = self.describe(exc)
            self._finish(job, "failed")
        else:
            self._finish(job, "succeeded")

    async def close(self) -> None:
        """Cancel every job (shutdown)."""
        for job in self._jobs.values():
            job.cancelled.set()
        tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
