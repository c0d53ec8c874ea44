"""The compatible surfaces (SPEC §3): OpenAI's POST /v1/chat/completions, POST
/v1/embeddings and GET /v1/models, and Anthropic's POST /v1/messages, as a raw ASGI
handler mounted ahead of Django (axonflow_site/mount.py). It does no
synchronous Django work on the request path: the token, the tenant's providers and
their health come from in-process caches (a miss goes through sync_to_async once),
and usage goes to the batch writer. Measured, Django's request cycle alone costs more
than this whole handler (docs/routing.md). The wire formats are routing/v1/wire.py and
chat.py (OpenAI chat), embeddings.py and messages.py (Anthropic); errors on
/v1/messages use Anthropic's envelope, everywhere else OpenAI's.
"""

from __future__ import annotations

import asyncio
import logging
import time

from django.conf import settings

from axonflow_site import context, metrics, tracing
from axonflow_site.errors import AxonFlowError, PayloadTooLarge
from routing import embeddings, pool, router, token_limits
from routing.cache import get_snapshot
from routing.ratelimit import check_tenant
from routing.route import Caller
from routing.router import RouteStream, StreamFailed
from routing.v1 import messages as anthropic_wire
from routing.v1 import wire
from routing.v1.embeddings import embeddings_body, parse_embeddings
from tenants.authentication import TokenIdentity, identify

log = logging.getLogger("axonflow.completions")


class NotFound(AxonFlowError):
    code = "not_found"
    http_status = 404


class MethodNotAllowed(AxonFlowError):
    code = "method_not_allowed"
    http_status = 405


class ClientGone(Exception):
    """The client disconnected while we were reading its request."""


def header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def authenticate(scope) -> TokenIdentity:
    """The caller's identity, once its tenant's API rate limit admits the request: our
    token as a Bearer, or (as Anthropic's clients send it) in `x-api-key`.
    Raises Unauthorized or RateLimited."""
    authorization = header(scope, b"authorization")
    if authorization is None:
        api_key = header(scope, b"x-api-key")
        authorization = f"Bearer {api_key}" if api_key else None
    identity = await identify(authorization, in_request=False)
    context.set_tenant(identity.tenant_slug)
    if identity.api_rate_limit:  # unlimited tenants skip even the call
        await check_tenant(identity)
    if identity.rpm_limit:
        await token_limits.admit(identity, context.request_id())
    return identity


async def read_body(scope, receive) -> bytes:
    limit = settings.AXONFLOW_MAX_BODY_BYTES
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"Request body is {length} bytes; the limit is {limit}.", {"limit_bytes": limit})
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.", {"limit_bytes": limit})
        parts.append(body)
        if not message.get("more_body"):
            return b"".join(parts)


async def send_json(send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] = ()) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send, error: AxonFlowError, request_id: str, anthropic: bool = False) -> None:
    extra = [(b"x-request-id", request_id.encode())]
    extra += [(k.lower().encode(), str(v).encode()) for k, v in error.headers.items()]
    if error.http_status == 401:
        extra.append((b"www-authenticate", b'Bearer realm="axonflow"'))
    body = anthropic_wire.error_body(error, request_id) if anthropic else wire.error_body(error)
    await send_json(send, error.http_status, body, extra)


# The metrics' endpoint label of each path, and the refusals counted as rejections.
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings", "/v1/messages": "messages"}
LIMITS = frozenset({"rate_limited", "budget_exceeded"})

WATCH_AFTER_SECONDS = 0.02  # a request that takes longer starts watching for its client leaving


class Watch:
    """Cancels the task serving a request the moment its client disconnects: uvicorn
    says so only through `receive`, and only when asked. The cancellation reaches the
    upstream call, which closes its connection, and the router records the request as
    client_cancelled. Watching costs a task, so it starts only once the request has run
    WATCH_AFTER_SECONDS (a client gone before then is seen at once): a quick answer
    costs one timer. Enter once the body has been read (the watcher takes every later
    message): `with Watch(receive): …`."""

    __slots__ = ("receive", "task", "timer", "watcher", "gone")

    def __init__(self, receive) -> None:
        self.receive = receive
        self.task = asyncio.current_task()
        self.watcher: asyncio.Future | None = None
        self.gone = False
        self.timer = asyncio.get_running_loop().call_later(WATCH_AFTER_SECONDS, self._start)

    def _start(self) -> None:
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self.task.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        """Stop watching; swallow the cancellation this watch caused (and only that one:
        the server's own, at shutdown, goes on)."""
        self.timer.cancel()
        if self.watcher is not None:
            self.watcher.cancel()
        if kind is asyncio.CancelledError and self.gone:
            self.task.uncancel()
            return True
        return False


async def chat(scope, receive, send, request_id: str, received: float) -> None:
    identity = await authenticate(scope)
    data = wire.parse_body(await read_body(scope, receive))
    completion, options, model, include_usage = wire.parse_chat(data)
    tracing.request(model, "chat", identity.tenant_slug)
    snapshot = await get_snapshot(identity.tenant_id, in_request=False)
    router.validate_names(snapshot, options)
    caller = Caller(
        identity.tenant_id, identity.token_id, request_id, snapshot.store_prompts, identity.tenant_slug, received
    )
    if identity.tpm_limit:
        await token_limits.admit_tokens(identity, caller, completion)
    with Watch(receive):
        if completion.stream:
            stream = await router.open_stream(snapshot, completion, options, caller)
            await stream_chat(send, stream, request_id, include_usage)
            return
        result = await router.complete(snapshot, completion, options, caller)
        extra = [(b"x-axonflow-provider", result.provider_name.encode()), (b"x-request-id", request_id.encode())]
        await send_json(send, 200, wire.completion_body(result, request_id), extra)


async def embed(scope, receive, send, request_id: str, received: float) -> None:
    identity = await authenticate(scope)
    request, options, encoding = parse_embeddings(wire.parse_body(await read_body(scope, receive)))
    tracing.request(options.model, "embeddings", identity.tenant_slug)
    snapshot = await get_snapshot(identity.tenant_id, in_request=False)
    router.validate_names(snapshot, options)
    caller = Caller(
        identity.tenant_id, identity.token_id, request_id, snapshot.store_prompts, identity.tenant_slug, received
    )
    if identity.tpm_limit:
        await token_limits.admit_tokens(identity, caller, request)
    with Watch(receive):
        answer = await embeddings.embed(snapshot, request, options, caller)
        extra = [(b"x-axonflow-provider", answer.result.provider_name.encode()), (b"x-request-id", request_id.encode())]
        await send_json(send, 200, embeddings_body(answer, encoding), extra)


async def messages(scope, receive, send, request_id: str, received: float) -> None:
    """Anthropic's Messages API, routed to any provider type."""
    identity = await authenticate(scope)
    data = wire.parse_body(await read_body(scope, receive))
    completion, model, options = anthropic_wire.parse_messages_request(data)
    tracing.request(model, "messages", identity.tenant_slug)
    snapshot = await get_snapshot(identity.tenant_id, in_request=False)
    router.validate_names(snapshot, options)
    caller = Caller(
        identity.tenant_id, identity.token_id, request_id, snapshot.store_prompts, identity.tenant_slug, received
    )
    if identity.tpm_limit:
        await token_limits.admit_tokens(identity, caller, completion)
    with Watch(receive):
        if completion.stream:
            stream = await router.open_stream(snapshot, completion, options, caller, endpoint="messages")
            encoder = anthropic_wire.MessageStream(request_id, stream.answering_model)
            await send_stream(send, stream, request_id, encoder.events, encoder.finish, anthropic_wire.error_event)
            return
        result = await router.complete(snapshot, completion, options, caller, endpoint="messages")
        extra = [(b"x-axonflow-provider", result.provider_name.encode()), (b"x-request-id", request_id.encode())]
        await send_json(send, 200, anthropic_wire.message_body(result.response, request_id, model), extra)


async def stream_chat(send, stream: RouteStream, request_id: str, include_usage: bool) -> None:
    """Send the stream as OpenAI's chunks, then the usage chunk if asked for and [DONE]."""
    created, model, first = int(time.time()), stream.answering_model, [True]

    def encode(chunk) -> bytes:
        event = wire.chunk_event(request_id, created, model, chunk, first[0])
        first[0] = False
        return event

    def finish() -> bytes:
        if include_usage and stream.usage is not None:
            usage = stream.usage
            return wire.usage_event(request_id, created, model, usage.prompt_tokens, usage.completion_tokens) + wire.DONE_EVENT
        return wire.DONE_EVENT

    await send_stream(send, stream, request_id, encode, finish, wire.error_event)


async def send_stream(send, stream: RouteStream, request_id: str, encode, finish, error_event) -> None:
    """Send a routed stream in one surface's framing (`encode` per chunk, `finish` at a
    clean end, `error_event` when the upstream breaks midway). A client that leaves
    cancels this (`Watch`): the router records it and closes the upstream."""
    headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"x-axonflow-provider", stream.provider_name.encode()),
        (b"x-request-id", request_id.encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    chunks = stream.chunks()
    try:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": encode(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": finish()})
    except StreamFailed as exc:
        await send({"type": "http.response.body", "body": error_event(exc.error)})
    finally:
        await chunks.aclose()


async def models(scope, send, request_id: str) -> None:
    identity = await authenticate(scope)
    snapshot = await get_snapshot(identity.tenant_id, in_request=False)
    await send_json(send, 200, wire.models_body(pool.names(snapshot)), [(b"x-request-id", request_id.encode())])


async def openai_app(scope, receive, send, request: context.RequestContext | None = None) -> None:
    """ASGI app for /v1/*: OpenAI-compatible errors everywhere, never a bare 500; the
    request's id (axonflow_site/context.py) and, when tracing, its SERVER span
    (`traced_app`, which calls back with the request begun)."""
    received = time.perf_counter()
    if request is None:
        if tracing.tracer is not None:
            return await traced_app(scope, receive, send)
        request = context.begin(scope)
    request_id = request.request_id
    path, method = scope["path"].rstrip("/") or "/", scope["method"]
    started = False

    async def tracking_send(message) -> None:
        nonlocal started
        started = True
        await send(message)

    try:
        if path == "/v1/chat/completions":
            if method != "POST":
                raise MethodNotAllowed(f"Use POST for {path}.")
            await chat(scope, receive, tracking_send, request_id, received)
        elif path == "/v1/embeddings":
            if method != "POST":
                raise MethodNotAllowed(f"Use POST for {path}.")
            await embed(scope, receive, tracking_send, request_id, received)
        elif path == "/v1/messages":
            if method != "POST":
                raise MethodNotAllowed(f"Use POST for {path}.")
            await messages(scope, receive, tracking_send, request_id, received)
        elif path == "/v1/models":
            if method != "GET":
                raise MethodNotAllowed(f"Use GET for {path}.")
            await models(scope, tracking_send, request_id)
        else:
            raise NotFound(f"No such endpoint: {method} {scope['path']}.")
    except ClientGone:
        return
    except AxonFlowError as exc:
        if exc.code in LIMITS:
            metrics.reject(request.tenant, ENDPOINTS.get(path, "other"), exc.code)
        if not started:
            await send_error(send, exc, request_id, anthropic=path == "/v1/messages")
    except Exception:
        log.exception("unexpected error serving %s %s", method, path)
        if not started:
            error = AxonFlowError("Internal error; see the server log.", {"request_id": request_id})
            await send_error(send, error, request_id, anthropic=path == "/v1/messages")


async def traced_app(scope, receive, send) -> None:
    """openai_app inside the request's SERVER span, with the status it answered."""
    request = context.begin(scope)
    path = scope["path"].rstrip("/") or "/"
    route = path if path in ENDPOINTS or path == "/v1/models" else "/v1/*"
    with tracing.server(scope, route, request.request_id) as span:
        status = []

        async def noting_send(message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await openai_app(scope, receive, noting_send, request)
        span.set(status[0] if status else None, **{"axonflow.tenant": request.tenant, "axonflow.provider": request.provider})
