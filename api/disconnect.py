"""Stop long work when the client that asked for it has gone away (H28).

Starlette does not cancel an endpoint when its client disconnects, and a LIME run in a worker
thread cannot be interrupted anyway; instead a watcher sets the work's cancel flag, which the
work checks between model batches, so the slot is free again within one batch (~0.1-0.5 s).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from starlette.requests import Request

from service.jobs import JobControl

POLL_S = 0.25


@asynccontextmanager
async def cancel_on_disconnect(request: Request) -> AsyncIterator[JobControl]:
    """Yield the control to hand to the work; it is cancelled when the client disconnects."""
    cancel = threading.Event()

    async def watch() -> None:
        while not cancel.is_set():
            if await request.is_disconnected():
                cancel.set()
                return
            await asyncio.sleep(POLL_S)

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield JobControl(cancel, lambda: None)
    finally:
        watcher.cancel()
        with suppress(asyncio.CancelledError):
            await watcher
