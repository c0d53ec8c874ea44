"""ASGI lifespan: the server process's startup and shutdown hooks, in order.

The hooks are named here by dotted path rather than registered by the modules that
define them, so their order is written down in one place and this module imports
nothing of ours (a layer may hold a hook without importing this file, and this file
never pulls the layers above into the ones below).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from django.utils.module_loading import import_string

log = logging.getLogger("axonflow.lifespan")

Hook = Callable[[], Awaitable[None]]

STARTUP: tuple[str, ...] = (
    "routing.cache.start_invalidation_listener",
    "routing.health.worker.start_in_process_worker",  # AXONFLOW_HEALTH_IN_PROCESS only
    "usage.writer.start_usage_writer",
    "axonflow_site.metrics.start_metrics",
    "axonflow_site.tracing.start_tracing",  # OTEL_* set and the otel extra installed only
    "axonflow_site.mount.freeze_startup_objects",  # last: everything alive now is kept
)
# The server has stopped accepting and given the requests in flight its grace period
# (uvicorn's timeout_graceful_shutdown, AXONFLOW_SHUTDOWN_GRACE_SECONDS) before this runs.
SHUTDOWN: tuple[str, ...] = (
    # First: requests the server cancelled at the end of its grace period queue their
    # usage (a 499 record) as they unwind; let them, before anything below.
    "axonflow_site.mount.wait_for_requests",
    "usage.holds.drain",  # the budget settlements those requests queued (Redis)
    # Probes in flight must finish before the pooled upstream session closes, or a
    # shutdown would record them as failures.
    "routing.health.worker.stop_in_process_worker",
    "providers.adapters.http.close_session",
    "routing.cache.stop_invalidation_listener",
    # Last, once nothing can queue more: the health writer's queued jobs (probe results,
    # circuit changes), then every usage record and metric still in memory.
    "routing.health.db_thread.aflush",
    "usage.writer.flush_usage",
    "axonflow_site.metrics.stop_metrics",
    "axonflow_site.tracing.stop_tracing",  # exports the spans still queued
)


async def run_hooks(paths: tuple[str, ...]) -> None:
    for path in paths:
        try:
            hook: Hook = import_string(path)
            await hook()
        except Exception:  # one failing hook must not keep the others from running
            log.exception("lifespan hook %s failed", path)


async def handle_lifespan(scope, receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await run_hooks(STARTUP)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await run_hooks(SHUTDOWN)
            await send({"type": "lifespan.shutdown.complete"})
            return
