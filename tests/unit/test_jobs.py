"""JobQueue: bounded, per-principal, cancellable, retries a busy gate, forgets old results."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.gate import Overloaded
from service.jobs import JobCancelled, JobControl, JobQueue


def test_job_runs_and_keeps_its_result() -> None:
    async def main() -> None:
        jobs = JobQueue(capacity=2, ttl_s=60, retry_after_s=3)

        async def work(control: JobControl) -> object:
            control.started()
            return 42

        job = jobs.submit("pacs", work)
        assert job.state == "queued"
        await asyncio.wait_for(job.task, 2)  # type: ignore[arg-type]
        assert (job.state, job.result) == ("succeeded", 42)
        assert jobs.get(job.id, "pacs") is job
        assert jobs.get(job.id, "ris") is None  # another key cannot see it
        assert jobs.get("0" * 32, "pacs") is None

    asyncio.run(main())


def test_capacity_refuses_with_retry_after() -> None:
    async def main() -> None:
        release = asyncio.Event()
        jobs = JobQueue(capacity=2, ttl_s=60, retry_after_s=7)

        async def work(control: JobControl) -> object:
            await release.wait()
            return None

        jobs.submit(None, work)
        jobs.submit(None, work)
        with pytest.raises(Overloaded) as refused:
            jobs.submit(None, work)
        assert refused.value.retry_after_s == 7
        release.set()
        await jobs.close()

    asyncio.run(main())


def test_busy_gate_is_retried_not_dropped() -> None:
    async def main() -> None:
        attempts = []
        jobs = JobQueue(capacity=1, ttl_s=60, retry_after_s=1)

        async def work(control: JobControl) -> object:
            attempts.append(1)
            if len(attempts) < 3:
                raise Overloaded("lime", 0)
            return "done"

        job = jobs.submit(None, work)
        await asyncio.wait_for(job.task, 5)  # type: ignore[arg-type]
        assert (job.state, job.result, len(attempts)) == ("succeeded", "done", 3)

    asyncio.run(main())


def test_cancel_stops_a_running_job_at_its_next_check() -> None:
    async def main() -> None:
        jobs = JobQueue(capacity=1, ttl_s=60, retry_after_s=1)
        in_batch = threading.Event()

        def blocking(control: JobControl) -> object:
            control.started()
            for _ in range(1000):  # "model batches"
                control.check()
                in_batch.set()
                threading.Event().wait(0.01)
            return "finished"

        async def work(control: JobControl) -> object:
            return await asyncio.to_thread(blocking, control)

        job = jobs.submit(None, work)
        await asyncio.to_thread(in_batch.wait, 2)
        assert job.state == "running"
        assert jobs.cancel(job.id, None) is job
        await asyncio.wait_for(job.task, 2)  # type: ignore[arg-type]
        assert job.state == "cancelled" and job.result is None

    asyncio.run(main())


def test_failures_are_kept_for_the_client() -> None:
    async def main() -> None:
        jobs = JobQueue(capacity=1, ttl_s=60, retry_after_s=1)

        async def work(control: JobControl) -> object:
            raise ValueError("bad")

        job = jobs.submit(None, work)
        await asyncio.wait_for(job.task, 2)  # type: ignore[arg-type]
        assert job.state == "failed" and isinstance(job.error, ValueError)

    asyncio.run(main())


def test_finished_jobs_expire_and_are_bounded() -> None:
    async def main() -> None:
        now = [0.0]
        jobs = JobQueue(
            capacity=10, ttl_s=30, retry_after_s=1, keep_finished=2, clock=lambda: now[0]
        )

        async def work(control: JobControl) -> object:
            return 1

        done = []
        for _ in range(3):
            job = jobs.submit(None, work)
            await asyncio.wait_for(job.task, 2)  # type: ignore[arg-type]
            done.append(job)
        assert jobs.get(done[0].id, None) is None  # only the 2 newest finished jobs are kept
        assert jobs.get(done[2].id, None) is done[2]
        now[0] = 31.0
        assert jobs.get(done[2].id, None) is None  # expired

    asyncio.run(main())


def test_control_check_raises_once_cancelled() -> None:
    control = JobControl(threading.Event(), lambda: None)
    control.check()
    control.cancelled.set()
    with pytest.raises(JobCancelled):
        control.check()
