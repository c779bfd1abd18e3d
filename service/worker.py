"""``python -m service.worker [--concurrency N]``: run durable jobs (CXR_JOBS__BACKEND=redis).

A worker is its own process with its own models: the ONNX sessions and the LLM are created here,
after the process started (never inherited across a fork, where ORT's thread pools would not
survive), and then serve up to ``CXR_JOBS__WORKER_CONCURRENCY`` jobs at once from the arq queue
the API replicas fill. Like ``service/app.py`` this is a composition root: it wires the API's
job kinds (which render each kind's response) to the services.

Start workers at a lower CPU priority than the API (``nice -n 10``, as scripts/cluster.sh does)
so saturated workers do not slow interactive requests on a shared host.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from arq import Worker
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import func

from api.job_kinds import JOB_KINDS
from service.lifespan import build_state
from service.metrics import Metrics
from service.redis_jobs import MAX_RUNS, TASK_NAME, WorkerContext, execute, job_records
from service.registry import load_registry
from service.report_usecase import load_backend
from service.settings import Settings

log = logging.getLogger("cxr.worker")


def build_worker(settings: Settings, redis: ArqRedis, ctx: dict[str, Any]) -> Worker:
    j = settings.jobs
    return Worker(
        redis_pool=redis,
        # arq's own try limit sits one above ours: execute() records the job as failed on the
        # delivery after MAX_RUNS instead of arq dropping it silently.
        functions=[func(execute, name=TASK_NAME, max_tries=MAX_RUNS + 1, timeout=j.timeout_s + 5)],
        queue_name=j.queue_name,
        max_jobs=j.worker_concurrency,
        ctx=ctx,
        keep_result=60,
        poll_delay=0.2,
        handle_signals=True,
        # The job's lock expires timeout + 10 s after it started: then another worker retries it.
        job_timeout=j.timeout_s + 5,
    )


async def serve(settings: Settings) -> None:
    metrics = Metrics()
    registry = await asyncio.to_thread(load_registry, settings)
    llm = await asyncio.to_thread(load_backend, settings.report)
    state = build_state(settings, registry, llm, kinds=JOB_KINDS, metrics=metrics)
    j = settings.jobs
    redis = await create_pool(RedisSettings.from_dsn(j.redis_url))
    context = WorkerContext(
        job_records(redis, settings.explain.job_ttl_s, j.timeout_s),
        JOB_KINDS.runner(state["interop"]),
        JOB_KINDS.describe,
        j.timeout_s,
        metrics.job,
    )
    worker = build_worker(settings, redis, {"cxr": context})
    if j.metrics_port is not None:
        metrics.serve(j.metrics_port, "0.0.0.0")
    log.info("worker ready: concurrency %d", j.worker_concurrency)
    state["report"].start_warm_up()
    try:
        await worker.async_run()
    finally:
        await worker.close()
        state["report"].close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.worker", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=None, help="jobs run at once")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.concurrency is not None:
        settings.jobs.worker_concurrency = args.concurrency
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
