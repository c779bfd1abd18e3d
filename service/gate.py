"""Admission control: a bounded number of running and waiting requests per resource.

Work beyond ``slots + queue`` is refused at once with :class:`Overloaded` (503 + Retry-After)
instead of piling up until clients time out. With ``max_wait_s`` a request is also refused when
the wait it would face (requests ahead of it x the recent service time / slots) exceeds that
budget: a count alone cannot bound latency when one request takes 0.05 s on a small JPEG and
2 s on a 5 MP DICOM Grad-CAM. Blocking work runs in worker threads so the event loop keeps
answering health checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

import anyio
from anyio import to_thread

from service.metrics import Metrics

T = TypeVar("T")


class Overloaded(Exception):
    """All slots and queue places are taken."""

    def __init__(self, resource: str, retry_after_s: int) -> None:
        super().__init__(resource)
        self.resource = resource
        self.retry_after_s = retry_after_s


class WorkGate:
    def __init__(
        self,
        resource: str,
        slots: int,
        queue: int,
        retry_after_s: int,
        on_idle: Callable[[], None] | None = None,
        max_wait_s: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.resource = resource
        self.slots = slots
        self.capacity = slots + queue
        self.retry_after_s = retry_after_s
        self.max_wait_s = max_wait_s
        self._admitted = 0
        self._limiter = anyio.CapacityLimiter(slots)
        self._service_s: float | None = None  # moving average of recent calls' durations
        # Housekeeping when the last admitted request finishes (e.g. returning freed memory);
        # started in a worker thread and not awaited, so no response waits for it.
        self._on_idle = on_idle
        self._metrics = metrics

    def _report_load(self) -> None:
        if self._metrics is not None:
            queued = max(0, self._admitted - self.slots)
            self._metrics.gate_load(self.resource, self._admitted, queued)

    @property
    def in_flight(self) -> int:
        return self._admitted

    def expected_wait_s(self) -> float:
        """Queueing delay a request admitted now should expect (0 while a slot is free)."""
        ahead = self._admitted - self.slots + 1
        if ahead <= 0 or self._service_s is None:
            return 0.0
        return ahead * self._service_s / self.slots

    def _record(self, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.gate_work(self.resource, seconds)
        previous = self._service_s
        self._service_s = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def would_refuse(self) -> bool:
        """Whether a request arriving now would be refused (used to refuse before its body is
        read: a refusal must stay cheap, or refused 18 MB uploads starve the accepted ones)."""
        return self._admitted >= self.capacity or (
            self.max_wait_s is not None and self.expected_wait_s() > self.max_wait_s
        )

    async def run(self, func: Callable[[], T]) -> T:
        """Run blocking ``func`` in a worker thread once a slot is free, or refuse immediately."""
        if self.would_refuse():
            raise Overloaded(self.resource, self.retry_after_s)
        self._admitted += 1
        self._report_load()

        def timed() -> T:
            started = time.perf_counter()
            try:
                return func()
            finally:
                self._record(time.perf_counter() - started)

        try:
            return await to_thread.run_sync(timed, limiter=self._limiter)
        finally:
            self._admitted -= 1
            self._report_load()
            if self._admitted == 0 and self._on_idle is not None:
                asyncio.get_running_loop().run_in_executor(None, self._on_idle)
