from __future__ import annotations

import threading

import anyio
import pytest

from service.gate import Overloaded, WorkGate


def test_gate_refuses_beyond_slots_plus_queue() -> None:
    release = threading.Event()
    gate = WorkGate("inference", slots=1, queue=1, retry_after_s=3)
    outcomes: list[str] = []

    async def call() -> None:
        try:
            await gate.run(release.wait)
            outcomes.append("done")
        except Overloaded as exc:
            assert exc.retry_after_s == 3
            outcomes.append("refused")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(call)
            await anyio.sleep(0.2)
            assert gate.in_flight == 2
            release.set()

    anyio.run(main)
    assert sorted(outcomes) == ["done", "done", "refused", "refused"]
    assert gate.in_flight == 0


def test_gate_releases_after_errors() -> None:
    gate = WorkGate("inference", slots=1, queue=0, retry_after_s=1)

    def boom() -> None:
        raise ValueError("x")

    async def main() -> None:
        with pytest.raises(ValueError):
            await gate.run(boom)
        assert gate.in_flight == 0
        assert await gate.run(lambda: 7) == 7

    anyio.run(main)
