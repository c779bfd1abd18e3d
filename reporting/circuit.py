"""A small circuit breaker for calls to a remote LLM.

closed -> (``failure_threshold`` consecutive failures) -> open for ``reset_after`` seconds
-> half-open: one trial call; success closes, failure re-opens. While open, calls fail fast
with LLMUnavailable carrying the remaining open time as Retry-After, so a dead LLM server
costs the API nothing but a 503.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from reporting.errors import LLMUnavailable


@dataclass(frozen=True)
class BreakerState:
    state: str
    consecutive_failures: int
    retry_after: float


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 3,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_after <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_after > 0")
        self._threshold = failure_threshold
        self._reset_after = reset_after
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    def state(self) -> BreakerState:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState("closed", self._failures, 0.0)
        remaining = self._opened_at + self._reset_after - self._clock()
        if remaining > 0:
            return BreakerState("open", self._failures, remaining)
        return BreakerState("half_open", self._failures, 0.0)

    def before_call(self) -> None:
        """Raise LLMUnavailable when the circuit is open (or a half-open trial is running)."""
        with self._lock:
            st = self._state_locked()
            if st.state == "open":
                raise LLMUnavailable("LLM circuit open after repeated failures", st.retry_after)
            if st.state == "half_open":
                if self._trial_in_flight:
                    raise LLMUnavailable("LLM circuit half-open; trial call running", 1.0)
                self._trial_in_flight = True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_in_flight = False
            if self._opened_at is not None or self._failures >= self._threshold:
                self._opened_at = self._clock()
