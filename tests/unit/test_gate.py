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


def test_gate_refuses_when_the_expected_wait_exceeds_the_budget() -> None:
    """Queue places are free, but the requests ahead would take longer than max_wait_s."""
    import time

    release = threading.Event()
    gate = WorkGate("inference", slots=1, queue=10, retry_after_s=2, max_wait_s=0.25)
    outcomes: list[str] = []

    async def call(func: object) -> None:
        try:
            await gate.run(func)  # type: ignore[arg-type]
            outcomes.append("done")
        except Overloaded:
            outcomes.append("refused")

    async def main() -> None:
        await gate.run(lambda: time.sleep(0.2))  # teaches the gate: ~0.2 s per call
        assert gate.expected_wait_s() == 0.0  # idle: a request would run at once
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, release.wait)  # runs
            await anyio.sleep(0.05)
            tg.start_soon(call, release.wait)  # waits ~0.2 s: admitted
            await anyio.sleep(0.05)
            assert 0.15 < gate.expected_wait_s() < 0.5  # a third would wait ~0.4 s
            assert gate.would_refuse()
            tg.start_soon(call, release.wait)  # refused although 9 queue places are free
            await anyio.sleep(0.05)
            release.set()

    anyio.run(main)
    assert sorted(outcomes) == ["done", "done", "refused"]


def test_gate_runs_its_idle_hook_when_the_last_request_finishes() -> None:
    idle = threading.Event()
    gate = WorkGate("inference", slots=2, queue=0, retry_after_s=1, on_idle=idle.set)

    async def main() -> None:
        assert await gate.run(lambda: 3) == 3

    anyio.run(main)
    assert idle.wait(2.0)


def test_release_free_heap_is_safe_to_call() -> None:
    from service.memory import release_free_heap

    release_free_heap()  # glibc: returns free pages; elsewhere: a no-op


def test_expected_wait_counts_the_cost_of_admitted_work() -> None:
    """F1: two heavy requests (a 30 MP Grad-CAM each) must make a cheap one wait in the
    estimate, so it is refused at once instead of queueing for tens of seconds. Counting
    requests, the gate saw two requests and a service time learnt from cheap ones."""
    import time

    release = threading.Event()
    gate = WorkGate("inference", slots=2, queue=10, retry_after_s=2, max_wait_s=1.0)

    async def main() -> None:
        await gate.run(lambda: time.sleep(0.05), cost=1.0)  # teaches ~0.05 s per unit
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: gate.run(release.wait, cost=60.0))  # ~3 s each
            tg.start_soon(lambda: gate.run(release.wait, cost=60.0))
            await anyio.sleep(0.1)
            assert gate.in_flight == 2 and gate.admitted_cost == 120.0
            assert gate.expected_wait_s() > 2.0
            assert gate.would_refuse()
            with pytest.raises(Overloaded):
                await gate.run(lambda: None, cost=1.0)
            release.set()
        assert gate.expected_wait_s() == 0.0

    anyio.run(main)


def test_a_request_past_its_estimate_still_counts() -> None:
    """A Grad-CAM that overruns its estimate (loaded machine) must not make the gate look free:
    clamping its remaining time at zero admitted victims that then waited 14 s."""
    import time

    release = threading.Event()
    gate = WorkGate("inference", slots=1, queue=10, retry_after_s=2, max_wait_s=1.0)

    async def main() -> None:
        await gate.run(lambda: time.sleep(0.02), cost=1.0)  # ~0.02 s per unit
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: gate.run(release.wait, cost=400.0))  # estimate ~8 s
            await anyio.sleep(0.1)
            try:
                ticket = gate._tickets[0]  # noqa: SLF001 - pretend it has run for a minute
                assert ticket.started is not None
                ticket.started -= 60.0
                assert gate.expected_wait_s() >= 0.25 * 400 * 0.02 * 0.9
                assert gate.would_refuse()
            finally:
                release.set()

    anyio.run(main)


def test_heavy_work_leaves_a_slot_for_small_requests() -> None:
    """F1 victim: two 30 MP Grad-CAMs must not hold both slots. With ``heavy_cost`` the second
    one queues for the heavy lane, and a cheap /classify runs at once beside the first instead
    of being refused or waiting for it (measured before: admitted victims waited up to 2 s)."""
    import time

    release = threading.Event()
    gate = WorkGate(
        "inference", slots=2, queue=10, retry_after_s=2, max_wait_s=10.0, heavy_cost=6.0
    )
    order: list[str] = []

    async def main() -> None:
        await gate.run(lambda: time.sleep(0.01), cost=1.0)  # teaches ~0.01 s per unit
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: gate.run(release.wait, cost=20.0))
            tg.start_soon(lambda: gate.run(release.wait, cost=20.0))
            await anyio.sleep(0.2)
            running = [t for t in gate._tickets if t.started is not None]  # noqa: SLF001
            assert len(running) == 1  # the second heavy one waits for the heavy lane
            assert gate.expected_wait_s(1.0) == 0.0
            assert gate.expected_wait_s(20.0) > 0.0  # heavy work waits behind the heavy lane
            with anyio.fail_after(2.0):
                await gate.run(lambda: order.append("small"), cost=1.0)
            release.set()
        assert order == ["small"]

    anyio.run(main)


def test_heavy_requests_are_refused_when_their_lane_is_backed_up() -> None:
    import time

    release = threading.Event()
    gate = WorkGate("inference", slots=2, queue=10, retry_after_s=2, max_wait_s=1.0, heavy_cost=6.0)

    async def main() -> None:
        await gate.run(lambda: time.sleep(0.05), cost=1.0)  # ~0.05 s per unit
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: gate.run(release.wait, cost=60.0))  # ~3 s
            await anyio.sleep(0.1)
            try:
                assert not gate.would_refuse(1.0)
                assert gate.would_refuse(60.0)
                with pytest.raises(Overloaded):
                    await gate.run(lambda: None, cost=60.0)
            finally:
                release.set()

    anyio.run(main)


def test_one_slot_has_no_lane() -> None:
    gate = WorkGate("inference", slots=1, queue=1, retry_after_s=1, heavy_cost=6.0)
    assert gate.heavy_cost is None and not gate.is_heavy(100.0)


def test_a_gradcam_is_refused_unread_while_the_heavy_lane_is_backed_up() -> None:
    """Before the body is read a Grad-CAM is judged as heavy work; a /classify as small."""
    import time

    from service.lifespan import first_refusing

    release = threading.Event()
    gate = WorkGate("inference", slots=2, queue=10, retry_after_s=2, max_wait_s=1.0, heavy_cost=6.0)

    async def main() -> None:
        await gate.run(lambda: time.sleep(0.05), cost=1.0)  # ~0.05 s per unit
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: gate.run(release.wait, cost=60.0))  # a 30 MP Grad-CAM, ~3 s
            await anyio.sleep(0.1)
            try:
                assert first_refusing({"inference": gate}, "/explain/gradcam") is gate
                assert first_refusing({"inference": gate}, "/classify") is None
            finally:
                release.set()
        assert first_refusing({"inference": gate}, "/explain/gradcam") is None

    anyio.run(main)
