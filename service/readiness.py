"""Readiness of the service's components (models, optional LLM, draining on shutdown)."""

from __future__ import annotations

import threading


class Readiness:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._components: dict[str, bool] = {}
        # Components reported in the snapshot but not required for readiness (e.g. the LLM:
        # classification must stay available while it is down).
        self.optional: set[str] = set()
        self.draining = False

    def set(self, component: str, ready: bool) -> None:
        with self._lock:
            self._components[component] = ready

    def snapshot(self) -> dict[str, bool]:
        with self._lock:
            return dict(self._components)

    @property
    def ready(self) -> bool:
        snap = {k: v for k, v in self.snapshot().items() if k not in self.optional}
        return bool(snap) and all(snap.values()) and not self.draining
