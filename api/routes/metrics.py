"""GET /metrics: Prometheus exposition of every process on this host (see service/metrics.py)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from redis.exceptions import RedisError

from api.problems import problem_responses
from service.jobs import JobStore
from service.metrics import Metrics

router = APIRouter(tags=["health"])
log = logging.getLogger("cxr.api")


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics (text exposition format)",
    description="Request counts and latency per route template, gate load, 503s by reason, job "
    "transitions and depth, model work time, LLM tokens/s. No request data in any label.",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(500)},
)
async def metrics(request: Request) -> Response:
    m: Metrics = request.state.metrics
    jobs: JobStore = request.state.jobs
    try:
        m.job_depth.set(await jobs.depth())
    except (RedisError, OSError):
        log.warning("job depth unavailable: the job store did not answer")
    return Response(m.render(), media_type=m.content_type)
