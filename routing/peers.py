"""The other server processes of this deployment: one Redis pub/sub channel carrying
what each process keeps in memory and must agree on with the rest, so that several
instances behind a load balancer behave as one (SPEC §5):

- `invalidate`: drop a tenant's routing snapshot, or the token cache (routing/cache.py);
- `circuit`: a provider's traffic circuit opened or closed (routing/health/breaker.py).

Delivery. `publish` sends one message; Redis's PUBLISH answers how many processes are
subscribed at that moment. With `wait=True` from sync code (a configuration change
committed by an API view, the console, the admin or a command) it then waits until that
many have acknowledged *applying* it: each listener pushes its name onto the message's
reply key once the handler has run. So when `PATCH /api/v1/providers/{name}/` answers,
every live process has dropped its snapshot, and the next request anywhere reads the
new rows. A process that does not acknowledge within ACK_TIMEOUT_SECONDS (hung, or
gone without closing its socket) is logged and waited for no longer; its snapshot
expires within routing.cache.SNAPSHOT_TTL_SECONDS.

From async code the message is queued on a sender thread and the caller goes on: the
breaker opens circuits on the request path, which must not wait for Redis. The others
apply it when their event loop reads it, a few milliseconds later on one host
(docs/reliability.md, "Several instances", has the measurements). With `wait=False`
from sync code it is sent before `publish` returns, but not waited for.

Missed messages. When the subscription starts (what was cached before it may predate a
change), when it breaks, and when it is back (redis-py may also reconnect and subscribe
again by itself), the listener drops every snapshot and the token cache. A circuit opened meanwhile is then
learnt from the provider's stored status (the process where it opened persists it:
routing/health/probes.py). While Redis is away (axonflow_site/shared.py) nothing is
published, snapshots live a shorter time (routing/cache.py), and the listener tries to
subscribe again every RETRY_SECONDS; a subscription that succeeds tells shared.py that
Redis is back.

The channel is named after AXONFLOW_CHANNEL_PREFIX and the database: tenant and
provider ids mean something only within one database, so processes on another one (a
test run, a second deployment on the same Redis) never act on each other's messages.

Without REDIS_URL (the embedded default: one process) everything here is a no-op.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.utils.module_loading import import_string

from axonflow_site import shared

log = logging.getLogger("axonflow.peers")

ACK_TIMEOUT_SECONDS = 1.0
ACK_KEY_TTL_SECONDS = 30  # an acknowledgement arriving after the publisher gave up expires
PING_SECONDS = 5.0  # an idle subscription is pinged this often; three unanswered = broken
RETRY_SECONDS = 1.0
# kind -> what applies a message's payload here. Named by dotted path, as the lifespan
# hooks are, so this module imports none of the modules that publish through it.
HANDLERS = {
    "invalidate": "routing.cache.apply_invalidation",
    "circuit": "routing.health.breaker.apply_peer_change",
}

ORIGIN = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this process, in messages
_sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="axonflow-peers")
_ack_reader = None  # the sync client that waits for acknowledgements (a thread-safe pool)
_handlers: dict[str, Callable[[dict], None]] = {}
_warned_at = -1e9


def channel() -> str:
    """The pub/sub channel of the processes sharing this database."""
    return f"{settings.CHANNEL_PREFIX}:peers:{settings.DATABASES['default']['NAME']}"


def publish(kind: str, payload: dict, *, wait: bool = False) -> None:
    """Send `payload` to the `kind` handler of every other process. Never raises; a no-op
    without REDIS_URL, and while Redis is away (axonflow_site/shared.py).

    From sync code the message is sent before this returns, and with `wait=True` this
    returns once every process that received it has applied it, or after
    ACK_TIMEOUT_SECONDS. From async code it is queued on the sender thread (an event loop
    never waits for Redis) and `wait` is ignored."""
    if not shared.usable():  # no Redis, or Redis away: the local change is all there is
        return
    message = {"kind": kind, "origin": ORIGIN, "payload": payload}
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _send(message, wait)
        return
    _sender.submit(_send, message, False)


def flush(timeout: float = 10.0) -> None:
    """Wait until the messages queued on the sender thread are sent (tests)."""
    _sender.submit(lambda: None).result(timeout=timeout)


def _ack_client():
    """shared.py's bounds and no retries, but reads that outlast a BLPOP of
    ACK_TIMEOUT_SECONDS."""
    global _ack_reader
    if _ack_reader is None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        timeout = settings.AXONFLOW_REDIS_TIMEOUT_SECONDS
        _ack_reader = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=ACK_TIMEOUT_SECONDS + timeout,
            retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
    return _ack_reader


def _send(message: dict, wait: bool) -> None:
    ack_key = f"{channel()}:ack:{uuid.uuid4().hex}" if wait else None
    try:
        receivers = shared.sync_client().publish(channel(), json.dumps({**message, "ack": ack_key}))
        shared.succeeded()
        if ack_key and receivers:
            _await_acks(_ack_client(), ack_key, receivers, message["kind"])
    except Exception as exc:
        shared.failed(exc, f"telling the other processes ({message['kind']})")


def _await_acks(client, key: str, receivers: int, kind: str) -> None:
    deadline = time.monotonic() + ACK_TIMEOUT_SECONDS
    acked = 0
    while acked < receivers:
        remaining = deadline - time.monotonic()
        # BLPOP's timeout 0 means "forever": never pass less than a millisecond.
        if remaining < 0.001 or client.blpop([key], timeout=remaining) is None:
            _warn(
                f"{receivers - acked} of {receivers} processes did not apply a {kind} message within "
                f"{ACK_TIMEOUT_SECONDS:g} s; they catch up within the snapshot's TTL"
            )
            return
        acked += 1


def _warn(text: str) -> None:
    """Log at most every ten seconds: with a process hung, every change would say it."""
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= 10:
        _warned_at = now
        log.warning(text)


# --- listening -------------------------------------------------------------------------------


def _handler(kind: str) -> Callable[[dict], None]:
    handler = _handlers.get(kind)
    if handler is None:
        handler = _handlers[kind] = import_string(HANDLERS[kind])
    return handler


def apply(message: dict) -> None:
    """Run one message's handler here, unless this process sent it (and so has applied
    it already). Never raises: a bad message is logged."""
    try:
        if message.get("origin") != ORIGIN:
            _handler(message["kind"])(message["payload"])
    except Exception:
        log.exception("could not apply a message from another process")


def missed_messages(why: str | None) -> None:
    """Messages may have been missed (`why`; None: the first subscription, when whatever
    was cached before it may predate a change): drop every snapshot and the token cache
    (they reload from the database)."""
    if why is not None:
        log.warning("the other processes' messages may have been missed (%s): dropping every cached snapshot", why)
    _handler("invalidate")({"tenant_id": None, "tokens": True})


async def _receive(client, data: bytes) -> None:
    try:
        message = json.loads(data)
    except ValueError:
        log.warning("ignoring a malformed message on %s", channel())
        return
    apply(message)
    if message.get("ack"):
        async with client.pipeline(transaction=False) as pipe:
            pipe.rpush(message["ack"], ORIGIN)
            pipe.expire(message["ack"], ACK_KEY_TTL_SECONDS)
            await pipe.execute()


async def listen() -> None:
    """Apply every message of the other processes until cancelled (one task per server
    process, started from the ASGI lifespan). Whenever the subscription starts, and when
    it breaks, every cache is dropped (`missed_messages`); a broken one is tried again
    every RETRY_SECONDS."""
    import redis.asyncio as redis

    loop = asyncio.get_running_loop()
    lost = False  # the subscription broke and is not back yet
    while True:
        client = redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=settings.AXONFLOW_REDIS_TIMEOUT_SECONDS,
            socket_timeout=PING_SECONDS * 3, client_name=f"axonflow-peers-{os.getpid()}",
        )  # fmt: skip
        pubsub = client.pubsub()
        subscribed = False
        try:
            await pubsub.subscribe(channel())
            heard = loop.time()
            while True:
                message = await pubsub.get_message(timeout=PING_SECONDS)
                if message is None:
                    if loop.time() - heard > PING_SECONDS * 3:
                        raise ConnectionError("the subscription stopped answering pings")
                    await pubsub.ping()
                    continue
                heard = loop.time()
                if message["type"] == "subscribe":  # also when redis-py reconnected by itself
                    shared.succeeded()
                    missed_messages("subscribed again after a broken connection" if subscribed or lost else None)
                    subscribed, lost = True, False
                elif message["type"] == "message":
                    await _receive(client, message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            shared.failed(exc, "listening to the other processes")
            if not lost:
                missed_messages(f"{type(exc).__name__}: {exc}")
                lost = True
            await asyncio.sleep(RETRY_SECONDS)
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except Exception:
                pass
