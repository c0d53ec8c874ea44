"""The health code's database thread: one dedicated thread (and connection) for the
ORM work of async health code (probe results, circuit changes, threshold loads), so
it never runs on the event loop nor on the threads that serve sync views.

`submit` queues fire-and-forget jobs (failures are logged); `run_in_writer` awaits
one. Jobs run one at a time, in order. `flush`/`aflush` wait for what is queued
(tests, shutdown); `aflush` also waits for the loop work the jobs handed back
(`track`).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger("axonflow.health")

_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="axonflow-health-writer")
_pending: set[Future] = set()


def _run(fn, *args):
    """Run a job on the writer thread with a healthy connection, released afterwards as
    Django does around a request (CONN_MAX_AGE applies)."""
    from django.db import close_old_connections

    close_old_connections()
    try:
        return fn(*args)
    finally:
        close_old_connections()


def _log_failure(future: Future) -> None:
    _pending.discard(future)
    if not future.cancelled() and future.exception() is not None:
        log.error("health writer job failed", exc_info=future.exception())


def submit(fn, *args) -> Future:
    """Queue a fire-and-forget database job on the health writer thread (failures are
    logged). Jobs run one at a time, in order."""
    future = _writer.submit(_run, fn, *args)
    _pending.add(future)
    future.add_done_callback(_log_failure)
    return future


async def run_in_writer(fn, *args):
    """Await a database job on the health writer thread; its exception propagates.

    Async health code (the worker loop, publishing) does its ORM work here: one
    dedicated thread and connection, never the event loop and never the thread that
    serves sync views."""
    return await asyncio.wrap_future(_writer.submit(_run, fn, *args))


def flush(timeout: float = 10.0) -> None:
    """Wait until jobs queued on the writer thread are done (tests, shutdown)."""
    _writer.submit(lambda: None).result(timeout=timeout)


async def aflush(timeout: float = 10.0) -> None:
    """Wait until queued writes, and the loop work they hand back (which may hand back
    more: a circuit change's announcement, then the board's push), are done."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await asyncio.wait_for(asyncio.wrap_future(_writer.submit(lambda: None)), timeout)
    while pending := [f for f in list(_pending) if not f.done()]:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.wait([asyncio.wrap_future(f) for f in pending], timeout=remaining)


def track(future: Future) -> None:
    """Count a hand-off (a coroutine run on some loop for a job) as pending work that
    `aflush` waits for; its failure is logged."""
    _pending.add(future)
    future.add_done_callback(_log_failure)
