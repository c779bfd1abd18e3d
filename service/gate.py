"""Admission control: a bounded number of running and waiting requests per resource.

Work beyond ``slots + queue`` is refused at once with :class:`Overloaded` (503 + Retry-After)
instead of piling up until clients time out. Blocking work runs in worker threads so the event
loop keeps answering health checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
from anyio import to_thread

T = TypeVar("T")


class Overloaded(Exception):
    """All slots and queue places are taken."""

    def __init__(self, resource: str, retry_after_s: int) -> None:
        super().__init__(resource)
        self.resource = resource
        self.retry_after_s = retry_after_s


class WorkGate:
    def __init__(self, resource: str, slots: int, queue: int, retry_after_s: int) -> None:
        self.resource = resource
        self.capacity = slots + queue
        self.retry_after_s = retry_after_s
        self._admitted = 0
        self._limiter = anyio.CapacityLimiter(slots)

    @property
    def in_flight(self) -> int:
        return self._admitted

    async def run(self, func: Callable[[], T]) -> T:
        """Run blocking ``func`` in a worker thread once a slot is free, or refuse immediately."""
        if self._admitted >= self.capacity:
            raise Overloaded(self.resource, self.retry_after_s)
        self._admitted += 1
        try:
            return await to_thread.run_sync(func, limiter=self._limiter)
        finally:
            self._admitted -= 1
