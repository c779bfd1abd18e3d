"""Admission control: a bounded number of running and waiting requests per resource.

Work beyond ``slots + queue`` is refused at once with :class:`Overloaded` (503 + Retry-After)
instead of piling up until clients time out. With ``max_wait_s`` a request is also refused when
the wait it would face (requests ahead of it x the recent service time / slots) exceeds that
budget: a count alone cannot bound latency when one request takes 0.05 s on a small JPEG and
2 s on a 5 MP DICOM Grad-CAM.

Requests therefore carry a *cost* (work units, e.g. route weight x megapixels; see
``service.usecases.pixel_cost``) and the gate learns seconds per unit. The expected wait
replays the admitted work on the slots: what the running requests have left, then every
queued request's cost. Counting requests let two 29 KB uploads that decode to 30 MP each hold
both slots for 18-55 s while the gate, taught by cheap requests, kept admitting victims
(security review F1). Blocking work runs in worker threads so the event loop keeps answering
health checks.

With ``heavy_cost`` set, work costing more than that may hold at most ``slots - 1`` slots: one
slot always stays for small requests. Costing alone still let a /classify wait up to 2 s behind
two 30 MP Grad-CAMs (it was admitted whenever one of them was about to end, then shared the
cores with the next); with the lane it runs beside at most one heavy request.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

import anyio
from anyio import to_thread

from service.errors import Overloaded as Overloaded  # re-exported: callers catch it here
from service.metrics import Metrics

T = TypeVar("T")


@dataclass
class _Ticket:
    cost: float
    heavy: bool = False
    in_line: bool = True  # queued for a slot (a heavy one only once it holds a heavy permit)
    started: float | None = None  # perf_counter when its worker thread began


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
        heavy_cost: float | None = None,
    ) -> None:
        self.resource = resource
        self.slots = slots
        self.capacity = slots + queue
        self.retry_after_s = retry_after_s
        self.max_wait_s = max_wait_s
        self._tickets: list[_Ticket] = []  # admitted: running and waiting, in arrival order
        self._limiter = anyio.CapacityLimiter(slots)
        # One slot is kept for small work only where there is a slot to spare.
        self.heavy_cost = heavy_cost if slots > 1 else None
        self._heavy = anyio.CapacityLimiter(slots - 1) if self.heavy_cost is not None else None
        self._unit_s: float | None = None  # moving average of seconds per unit of cost
        # Housekeeping when the last admitted request finishes (e.g. returning freed memory);
        # started in a worker thread and not awaited, so no response waits for it.
        self._on_idle = on_idle
        self._metrics = metrics

    def _report_load(self) -> None:
        if self._metrics is not None:
            admitted = len(self._tickets)
            self._metrics.gate_load(self.resource, admitted, max(0, admitted - self.slots))

    @property
    def in_flight(self) -> int:
        return len(self._tickets)

    @property
    def admitted_cost(self) -> float:
        return sum(t.cost for t in self._tickets)

    def is_heavy(self, cost: float) -> bool:
        return self.heavy_cost is not None and cost > self.heavy_cost

    def expected_wait_s(self, cost: float = 1.0) -> float:
        """Queueing delay a request of ``cost`` admitted now should expect (0 while a slot it
        may use is free): each slot's remaining work, then the requests queued ahead of it
        assigned to the slot that frees first. Heavy work also waits for its own lanes."""
        if self._unit_s is None:
            return 0.0
        wait = self._replay(self.slots, [t for t in self._tickets if t.in_line])
        if self.is_heavy(cost):
            heavy = [t for t in self._tickets if t.heavy]
            wait = max(wait, self._replay(self.slots - 1, heavy))
        return wait

    def _replay(self, lanes: int, tickets: list[_Ticket]) -> float:
        unit_s = self._unit_s or 0.0
        if len(tickets) < lanes:
            return 0.0
        now = time.perf_counter()
        free_at = [0.0] * lanes
        running = [t for t in tickets if t.started is not None][:lanes]
        for i, t in enumerate(running):
            # A request that has overrun its estimate (a loaded machine, a slow decode) is taken
            # to need a quarter of it more, not nothing: clamping at 0 admitted cheap requests
            # behind 30 MP Grad-CAMs that still ran for seconds.
            estimate = t.cost * unit_s
            free_at[i] = max(estimate - (now - (t.started or now)), 0.25 * estimate)
        heapq.heapify(free_at)
        for t in tickets:
            if t.started is None:
                heapq.heappush(free_at, heapq.heappop(free_at) + t.cost * unit_s)
        return free_at[0]

    def _record(self, seconds: float, cost: float) -> None:
        if self._metrics is not None:
            self._metrics.gate_work(self.resource, seconds)
        per_unit = seconds / max(cost, 1e-6)
        previous = self._unit_s
        self._unit_s = per_unit if previous is None else 0.8 * previous + 0.2 * per_unit

    def would_refuse(self, cost: float = 1.0) -> bool:
        """Whether a request of ``cost`` arriving now would be refused (decided before any
        decoding: a refusal must stay cheap, or refused 18 MB uploads starve the accepted ones)."""
        return len(self._tickets) >= self.capacity or (
            self.max_wait_s is not None and self.expected_wait_s(cost) > self.max_wait_s
        )

    async def run(self, func: Callable[[], T], cost: float = 1.0) -> T:
        """Run blocking ``func`` in a worker thread once a slot is free, or refuse immediately.

        ``cost``: the request's work in the gate's units (1.0 = a typical small request)."""
        cost = max(cost, 1e-3)
        if self.would_refuse(cost):
            raise Overloaded(self.resource, self.retry_after_s)
        heavy = self.is_heavy(cost)
        ticket = _Ticket(cost, heavy=heavy, in_line=not heavy)
        self._tickets.append(ticket)
        self._report_load()

        def timed() -> T:
            ticket.started = time.perf_counter()
            try:
                return func()
            finally:
                self._record(time.perf_counter() - ticket.started, ticket.cost)

        try:
            # Heavy work first takes one of the slots - 1 heavy permits, then a slot.
            lane: AbstractAsyncContextManager[object] = (
                self._heavy if heavy and self._heavy is not None else nullcontext()
            )
            async with lane:
                ticket.in_line = True
                return await to_thread.run_sync(timed, limiter=self._limiter)
        finally:
            self._tickets.remove(ticket)
            self._report_load()
            if not self._tickets and self._on_idle is not None:
                asyncio.get_running_loop().run_in_executor(None, self._on_idle)
