"""Readiness of the service's components (models, optional LLM, draining on shutdown)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Readiness:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._components: dict[str, bool] = {}
        # Components reported in the snapshot but not required for readiness (e.g. the LLM:
        # classification must stay available while it is down).
        self.optional: set[str] = set()
        self.draining = False
        # Conditions checked afresh on every probe (e.g. free temporary storage), so readiness
        # recovers by itself when the condition clears.
        self._probes: dict[str, Callable[[], bool]] = {}

    def set(self, component: str, ready: bool) -> None:
        with self._lock:
            self._components[component] = ready

    def probe(self, component: str, check: Callable[[], bool]) -> None:
        with self._lock:
            self._probes[component] = check

    def snapshot(self) -> dict[str, bool]:
        with self._lock:
            snap, probes = dict(self._components), dict(self._probes)
        for name, check in probes.items():
            try:
                snap[name] = bool(check())
            except OSError:
                snap[name] = False
        return snap

    @property
    def ready(self) -> bool:
        snap = {k: v for k, v in self.snapshot().items() if k not in self.optional}
        return bool(snap) and all(snap.values()) and not self.draining
