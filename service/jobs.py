"""Asynchronous jobs for work that takes seconds to minutes (LIME on large uploads).

A submit answers at once with a job id; the job waits for its gate (retrying while the gate
refuses, so a queued job is never dropped), runs, and keeps its result for ``ttl_s``. A job is
visible only to the principal that submitted it. Cancelling sets an event that the work checks
between model batches, so a running LIME stops and frees its slot within one batch.

Bounded everywhere: at most ``capacity`` jobs queued or running (beyond that 503 +
Retry-After), at most ``keep_finished`` finished jobs kept, each for ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from service.gate import Overloaded

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE: frozenset[JobState] = frozenset({"queued", "running"})


class JobCancelled(Exception):
    """Raised inside the work when its job has been cancelled."""


@dataclass(frozen=True)
class JobControl:
    """What the work sees: its cancel flag (check it between batches) and a start signal."""

    cancelled: threading.Event
    started: Callable[[], None]

    def check(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled()


@dataclass
class Job:
    id: str
    principal: str | None
    created_unix: float
    state: JobState = "queued"
    finished_monotonic: float | None = None
    result: object | None = None
    error: BaseException | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[None] | None = None


Work = Callable[[JobControl], Awaitable[object]]


class JobQueue:
    def __init__(
        self,
        capacity: int,
        ttl_s: float,
        retry_after_s: int,
        keep_finished: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.retry_after_s = retry_after_s
        self.keep_finished = keep_finished
        self._clock = clock
        self._jobs: dict[str, Job] = {}

    def _purge(self) -> None:
        now = self._clock()
        finished = [
            (j.finished_monotonic, j)
            for j in self._jobs.values()
            if j.finished_monotonic is not None
        ]
        finished.sort(key=lambda pair: pair[0])
        excess = len(finished) - self.keep_finished
        for i, (at, job) in enumerate(finished):
            if i < excess or now - at > self.ttl_s:
                del self._jobs[job.id]

    def active(self) -> int:
        return sum(1 for j in self._jobs.values() if j.state in ACTIVE)

    def submit(self, principal: str | None, work: Work) -> Job:
        """Start ``work`` as a job now, or raise :class:`Overloaded` when the queue is full."""
        self._purge()
        if self.active() >= self.capacity:
            raise Overloaded("jobs", self.retry_after_s)
        job = Job(id=secrets.token_hex(16), principal=principal, created_unix=time.time())
        self._jobs[job.id] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job, work))
        return job

    def get(self, job_id: str, principal: str | None) -> Job | None:
        """The job, or None when unknown, expired, or submitted by another principal."""
        self._purge()
        job = self._jobs.get(job_id)
        if job is None or job.principal != principal:
            return None
        return job

    def cancel(self, job_id: str, principal: str | None) -> Job | None:
        job = self.get(job_id, principal)
        if job is not None and job.state in ACTIVE:
            job.cancelled.set()
            if job.state == "queued":
                self._finish(job, "cancelled")
        return job

    def _finish(self, job: Job, state: JobState) -> None:
        if job.state in ACTIVE:
            job.state = state
            job.finished_monotonic = self._clock()

    async def _run(self, job: Job, work: Work) -> None:
        def started() -> None:
            if job.state == "queued":
                job.state = "running"

        control = JobControl(job.cancelled, started)
        while True:
            if job.cancelled.is_set():
                self._finish(job, "cancelled")
                return
            try:
                job.result = await work(control)
            except Overloaded as exc:
                # The gate is busy with interactive requests: wait and try again.
                await asyncio.sleep(min(float(exc.retry_after_s), 2.0))
                continue
            except JobCancelled:
                self._finish(job, "cancelled")
            except Exception as exc:  # reported to the client as the job's problem
                job.error = exc
                self._finish(job, "failed")
            else:
                self._finish(job, "succeeded")
            return

    async def close(self) -> None:
        """Cancel every job (shutdown)."""
        for job in self._jobs.values():
            job.cancelled.set()
        tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
