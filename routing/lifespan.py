"""ASGI lifespan: startup and shutdown hooks for the server process (usage flush,
the in-process health loop, closing the pooled upstream session)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("axonflow.lifespan")

Hook = Callable[[], Awaitable[None]]
STARTUP_HOOKS: list[Hook] = []
SHUTDOWN_HOOKS: list[Hook] = []


def on_startup(hook: Hook) -> Hook:
    STARTUP_HOOKS.append(hook)
    return hook


def on_shutdown(hook: Hook) -> Hook:
    SHUTDOWN_HOOKS.append(hook)
    return hook


async def run_hooks(hooks: list[Hook]) -> None:
    for hook in hooks:
        try:
            await hook()
        except Exception:  # one failing hook must not keep the others from running
            log.exception("lifespan hook %s failed", getattr(hook, "__name__", hook))


async def handle_lifespan(scope, receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await run_hooks(STARTUP_HOOKS)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await run_hooks(SHUTDOWN_HOOKS)
            await send({"type": "lifespan.shutdown.complete"})
            return


@on_shutdown
async def close_upstream_session() -> None:
    from providers.adapters.http import close_session

    await close_session()
