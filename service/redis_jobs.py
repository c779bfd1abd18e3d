"""Durable jobs on Redis, run by separate worker processes through arq.

arq carries the delivery: its queue (a sorted set), one in-progress lock per job that expires
``timeout + 10 s`` after a worker took it (so a killed worker's job is picked up again by
another worker), and a try counter. This module keeps the job's client-facing record in one
Redis hash per job (kind, principal, state, attempts, result or problem) and the upload in its
own key until the job finishes; the arq message carries only the job id.

State changes go through one Lua script (compare-and-set on ``state``), so a cancel racing a
worker's start, or two workers racing after a lock expired, cannot both win. A job is run at
most twice (``MAX_RUNS``): the third delivery of a job whose worker died twice marks it failed.
Cancelling sets a flag in the hash; the worker polls it and sets the work's cancel event, so a
running LIME stops within one model batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast

from arq.connections import ArqRedis

from service.errors import Overloaded, ServiceUnavailable
from service.jobs import (
    ACTIVE,
    Describe,
    JobCancelled,
    JobControl,
    JobKind,
    JobSpec,
    JobState,
    JobView,
    Json,
    Runner,
    run_with_retry,
)

log = logging.getLogger("cxr.jobs")

# How the client reads a job that could not finish (the problem body of the failed job).
WORKER_LOST = ServiceUnavailable(
    "job_interrupted", "The job's worker stopped before it finished, twice; submit it again.", 5
)
TIMED_OUT = ServiceUnavailable(
    "job_timeout", "The job took longer than the server allows (CXR_JOBS__TIMEOUT_S).", 5
)

TASK_NAME = "cxr_job"
MAX_RUNS = 2  # a killed worker's job is retried once
CANCEL_POLL_S = 0.25

# KEYS[1] job hash; ARGV[1] comma-separated states allowed now, ARGV[2] new state,
# ARGV[3] seconds to keep the hash (0: unchanged), then field/value pairs to set.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == state then allowed = true end end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "cxr"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def upload(self, job_id: str) -> str:
        return f"{self.prefix}:upload:{job_id}"

    def idempotency(self, principal: str | None, key: str) -> str:
        # Hashed: the client's key and principal name never appear in Redis key names.
        digest = hashlib.sha256(f"{principal}\x00{key}".encode()).hexdigest()
        return f"{self.prefix}:idem:{digest}"


def _view(job_id: str, h: dict[str, str]) -> JobView:
    return JobView(
        id=job_id,
        kind=cast(JobKind, h["kind"]),
        state=cast(JobState, h["state"]),
        created_unix=float(h["created"]),
        attempts=int(h.get("attempts", "0")),
        result=json.loads(h["result"]) if h.get("result") else None,
        error=json.loads(h["error"]) if h.get("error") else None,
    )


class JobRecords:
    """The job hashes: read, create, and move between states (shared by API and worker)."""

    def __init__(self, redis: ArqRedis, ttl_s: float, active_ttl_s: float, prefix: str) -> None:
        self.redis = redis
        self.keys = RedisKeys(prefix)
        self.ttl_s = int(ttl_s)
        # While queued or running a record lives long enough for a full retry cycle.
        self.active_ttl_s = int(active_ttl_s)
        self._transition = redis.register_script(_TRANSITION)

    async def read(self, job_id: str) -> dict[str, str] | None:
        # redis-py types its calls "Awaitable[T] | T" (one class for sync and async): ignore[misc]
        raw = await self.redis.hgetall(self.keys.job(job_id))  # type: ignore[misc]
        if not raw:
            return None
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def move(
        self,
        job_id: str,
        allowed: frozenset[str],
        state: JobState,
        keep_s: int = 0,
        fields: Mapping[str, str] | None = None,
    ) -> bool:
        args: list[str | int] = [",".join(sorted(allowed)), state, keep_s]
        for name, value in (fields or {}).items():
            args += [name, value]
        done = await self._transition(keys=[self.keys.job(job_id)], args=args)
        return bool(done)

    async def finish(
        self,
        job_id: str,
        state: JobState,
        fields: Mapping[str, str] | None = None,
        allowed: frozenset[str] = ACTIVE,
    ) -> bool:
        """Final state: keep the record ``ttl_s`` from now, drop the upload."""
        done = await self.move(job_id, allowed, state, self.ttl_s, fields)
        await self.redis.delete(self.keys.upload(job_id))
        return done


def job_records(redis: ArqRedis, ttl_s: float, timeout_s: float, prefix: str = "cxr") -> JobRecords:
    """Records kept ``ttl_s`` once finished; while active, long enough for every try to run
    (each try can take ``timeout_s`` plus the 10 s before its expired lock is retried)."""
    return JobRecords(redis, ttl_s, ttl_s + (MAX_RUNS + 1) * (timeout_s + 10), prefix)


class RedisJobStore:
    """The API side: submit, read and cancel jobs; workers run them (service/worker.py)."""

    def __init__(
        self,
        redis: ArqRedis,
        *,
        capacity: int,
        ttl_s: float,
        timeout_s: float,
        retry_after_s: int,
        queue_name: str,
        prefix: str = "cxr",
        on_transition: Callable[[JobKind, JobState], None] | None = None,
    ) -> None:
        self.redis = redis
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self.queue_name = queue_name
        self.records = job_records(redis, ttl_s, timeout_s, prefix)
        self._on_transition = on_transition or (lambda kind, state: None)

    async def _earlier(self, key: str, principal: str | None) -> JobView | None:
        job_id = await self.redis.get(key)
        return None if job_id is None else await self.get(job_id.decode(), principal)

    async def submit(
        self, spec: JobSpec, data: bytes, principal: str | None, idempotency_key: str | None
    ) -> JobView:
        keys = self.records.keys
        idem = keys.idempotency(principal, idempotency_key) if idempotency_key else None
        if idem is not None and (earlier := await self._earlier(idem, principal)) is not None:
            return earlier
        if await self.depth() >= self.capacity:
            raise Overloaded("jobs", self.retry_after_s)
        job_id = secrets.token_hex(16)
        keep = self.records.active_ttl_s
        won = idem is None or await self.redis.set(idem, job_id, nx=True, ex=keep)
        if not won and idem is not None and (earlier := await self._earlier(idem, principal)):
            return earlier  # another replica took this key a moment ago: answer with its job
        created = time.time()
        record = {
            "kind": spec.kind,
            "principal": principal or "",
            "params": json.dumps(dict(spec.params)),
            "created": repr(created),
            "state": "queued",
            "attempts": "0",
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.job(job_id), mapping=record)
            pipe.expire(keys.job(job_id), keep)
            pipe.set(keys.upload(job_id), data, ex=keep)
            await pipe.execute()
        await self.redis.enqueue_job(TASK_NAME, job_id, _job_id=job_id, _queue_name=self.queue_name)
        self._on_transition(spec.kind, "queued")
        return JobView(job_id, spec.kind, "queued", created, 0)

    async def get(self, job_id: str, principal: str | None) -> JobView | None:
        h = await self.records.read(job_id)
        if h is None or h.get("principal", "") != (principal or ""):
            return None
        return _view(job_id, h)

    async def cancel(self, job_id: str, principal: str | None) -> JobView | None:
        view = await self.get(job_id, principal)
        if view is None or view.state not in ACTIVE:
            return view
        # A running job's worker sees the flag within CANCEL_POLL_S, stops at its next batch
        # and records the final state itself; a queued one is cancelled here (the worker that
        # takes it later finds it finished and skips it).
        await self.redis.hset(self.records.keys.job(job_id), "cancel", "1")  # type: ignore[misc]
        if await self.records.finish(job_id, "cancelled", allowed=frozenset({"queued"})):
            self._on_transition(view.kind, "cancelled")
        return await self.get(job_id, principal)

    async def depth(self) -> int:
        return int(await self.redis.zcard(self.queue_name))

    async def close(self) -> None:
        await self.redis.aclose()


# ---- worker side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerContext:
    records: JobRecords
    runner: Runner
    describe: Describe
    timeout_s: float
    on_transition: Callable[[JobKind, JobState], None]


async def _watch_cancel(records: JobRecords, job_id: str, cancel: threading.Event) -> None:
    key = records.keys.job(job_id)
    while not cancel.is_set():
        if await records.redis.hget(key, "cancel") is not None:  # type: ignore[misc]
            cancel.set()
            return
        await asyncio.sleep(CANCEL_POLL_S)


async def _run_until_stopped(
    work: Awaitable[Json], cancel: threading.Event, timeout_s: float
) -> Json:
    """Await the work; on timeout or task cancellation (worker shutdown) set its cancel flag
    and wait for it to stop at its next batch, so no thread keeps computing for nobody."""
    task = asyncio.ensure_future(work)
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(task)
    except (TimeoutError, asyncio.CancelledError):
        cancel.set()
        with suppress(BaseException):
            await task
        raise


async def execute(ctx: dict[str, Any], job_id: str) -> None:
    """The arq task: run job ``job_id`` once more and record how it ended."""
    w: WorkerContext = ctx["cxr"]
    h = await w.records.read(job_id)
    if h is None or h["state"] not in ACTIVE:
        return  # expired, or cancelled while queued
    kind = cast(JobKind, h["kind"])
    if int(ctx["job_try"]) > MAX_RUNS:
        problem = w.describe(WORKER_LOST)
        if await w.records.finish(job_id, "failed", {"error": json.dumps(problem)}):
            w.on_transition(kind, "failed")
        return
    if not await w.records.move(
        job_id, ACTIVE, "running", fields={"attempts": str(ctx["job_try"])}
    ):
        return
    log.info("job %s started (try %s)", job_id, ctx["job_try"])
    w.on_transition(kind, "running")
    data = await w.records.redis.get(w.records.keys.upload(job_id)) or b""
    spec = JobSpec(kind, json.loads(h["params"]))
    cancel = threading.Event()
    watcher = asyncio.ensure_future(_watch_cancel(w.records, job_id, cancel))
    control = JobControl(cancel, lambda: None)
    try:
        result = await _run_until_stopped(
            run_with_retry(w.runner, spec, data, control), cancel, w.timeout_s
        )
    except JobCancelled:
        state, fields = "cancelled", None
    except TimeoutError:
        state, fields = "failed", {"error": json.dumps(w.describe(TIMED_OUT))}
    except Exception as exc:  # the client reads it as the job's problem
        state, fields = "failed", {"error": json.dumps(w.describe(exc))}
    else:
        state, fields = "succeeded", {"result": json.dumps(result)}
    finally:
        watcher.cancel()
    if await w.records.finish(job_id, cast(JobState, state), fields):
        w.on_transition(kind, cast(JobState, state))
    log.info("job %s %s", job_id, state)
