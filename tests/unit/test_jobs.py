"""MemoryJobStore: bounded, per-principal, idempotent, cancellable, retries a busy gate,
forgets old results."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest

from service.gate import Overloaded
from service.jobs import JobCancelled, JobControl, JobSpec, JobView, Json, MemoryJobStore

SPEC = JobSpec("lime", {"n_samples": 50})
Work = Callable[[JobControl], Awaitable[Json]]


def _store(work: Work, **kwargs: object) -> MemoryJobStore:
    async def runner(spec: JobSpec, data: bytes, control: JobControl) -> Json:
        return await work(control)

    def describe(exc: BaseException) -> Json:
        return {"code": type(exc).__name__}

    options: dict = {"capacity": 2, "ttl_s": 60, "retry_after_s": 3} | kwargs
    return MemoryJobStore(runner, describe, **options)


async def _settled(store: MemoryJobStore, view: JobView, principal: str | None = None) -> JobView:
    for _ in range(200):
        now = await store.get(view.id, principal)
        assert now is not None
        if now.state not in ("queued", "running"):
            return now
        await asyncio.sleep(0.01)
    raise AssertionError("job did not finish")


def test_job_runs_and_keeps_its_result() -> None:
    async def main() -> None:
        async def work(control: JobControl) -> Json:
            control.started()
            return {"answer": 42}

        jobs = _store(work)
        job = await jobs.submit(SPEC, b"x", "pacs", None)
        assert job.state == "queued" and job.kind == "lime"
        done = await _settled(jobs, job, "pacs")
        assert (done.state, done.result, done.attempts) == ("succeeded", {"answer": 42}, 1)
        assert await jobs.get(job.id, "ris") is None  # another key cannot see it
        assert await jobs.get("0" * 32, "pacs") is None

    asyncio.run(main())


def test_same_idempotency_key_returns_the_same_job_per_principal() -> None:
    async def main() -> None:
        runs = []

        async def work(control: JobControl) -> Json:
            runs.append(1)
            return {}

        jobs = _store(work, capacity=5)
        first = await jobs.submit(SPEC, b"x", "pacs", "retry-0001")
        again = await jobs.submit(SPEC, b"x", "pacs", "retry-0001")
        other = await jobs.submit(SPEC, b"x", "ris", "retry-0001")
        assert again.id == first.id and other.id != first.id
        await _settled(jobs, first, "pacs")
        await _settled(jobs, other, "ris")
        assert len(runs) == 2

    asyncio.run(main())


def test_capacity_refuses_with_retry_after() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def work(control: JobControl) -> Json:
            await release.wait()
            return {}

        jobs = _store(work, retry_after_s=7)
        await jobs.submit(SPEC, b"", None, None)
        await jobs.submit(SPEC, b"", None, None)
        assert await jobs.depth() == 2
        with pytest.raises(Overloaded) as refused:
            await jobs.submit(SPEC, b"", None, None)
        assert refused.value.retry_after_s == 7
        release.set()
        await jobs.close()

    asyncio.run(main())


def test_busy_gate_is_retried_not_dropped() -> None:
    async def main() -> None:
        attempts = []

        async def work(control: JobControl) -> Json:
            attempts.append(1)
            if len(attempts) < 3:
                raise Overloaded("lime", 0)
            return {"done": True}

        jobs = _store(work, capacity=1)
        done = await _settled(jobs, await jobs.submit(SPEC, b"", None, None))
        assert (done.state, done.result, len(attempts)) == ("succeeded", {"done": True}, 3)

    asyncio.run(main())


def test_cancel_stops_a_running_job_at_its_next_check() -> None:
    async def main() -> None:
        in_batch = threading.Event()

        def blocking(control: JobControl) -> Json:
            control.started()
            for _ in range(1000):  # "model batches"
                control.check()
                in_batch.set()
                threading.Event().wait(0.01)
            return {"finished": True}

        async def work(control: JobControl) -> Json:
            return await asyncio.to_thread(blocking, control)

        jobs = _store(work, capacity=1)
        job = await jobs.submit(SPEC, b"", None, None)
        await asyncio.to_thread(in_batch.wait, 2)
        assert (await jobs.get(job.id, None)).state == "running"  # type: ignore[union-attr]
        assert (await jobs.cancel(job.id, None)) is not None
        done = await _settled(jobs, job)
        assert done.state == "cancelled" and done.result is None

    asyncio.run(main())


def test_failures_are_kept_for_the_client() -> None:
    async def main() -> None:
        async def work(control: JobControl) -> Json:
            raise ValueError("bad")

        jobs = _store(work, capacity=1)
        done = await _settled(jobs, await jobs.submit(SPEC, b"", None, None))
        assert done.state == "failed" and done.error == {"code": "ValueError"}

    asyncio.run(main())


def test_finished_jobs_expire_and_are_bounded() -> None:
    async def main() -> None:
        now = [0.0]

        async def work(control: JobControl) -> Json:
            return {}

        jobs = _store(work, capacity=10, ttl_s=30, keep_finished=2, clock=lambda: now[0])
        done = []
        for _ in range(3):
            done.append(await _settled(jobs, await jobs.submit(SPEC, b"", None, None)))
        assert await jobs.get(done[0].id, None) is None  # only the 2 newest finished jobs are kept
        assert await jobs.get(done[2].id, None) == done[2]
        now[0] = 31.0
        assert await jobs.get(done[2].id, None) is None  # expired

    asyncio.run(main())


def test_control_check_raises_once_cancelled() -> None:
    control = JobControl(threading.Event(), lambda: None)
    control.check()
    control.cancelled.set()
    with pytest.raises(JobCancelled):
        control.check()
