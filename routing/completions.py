"""The two faces of the router (SPEC §3), both calling routing/router.py:

1. `CompletionsView`: POST /api/v1/completions, an adrf async APIView (DRF bearer
   authentication, a DRF serializer for the body, the shared exception handler for
   the envelope, documented by drf-spectacular). JSON, or SSE with `stream: true`.
2. `openai_app`: POST /v1/chat/completions and GET /v1/models, a raw ASGI handler
   mounted ahead of Django (`mount`, used by axonflow_site/asgi.py). It does no
   synchronous Django work on the request path: the token, the tenant's providers and
   their health come from in-process caches (a miss goes through sync_to_async once),
   and usage goes to the batch writer. Measured, Django's request cycle alone costs more
   than this whole handler (docs/routing.md). routing/mount.py puts it in front of Django.

SSE on /api/v1/completions: `event: chunk` ({"delta"}) per piece, then `event: done`
with the same fields as the JSON answer minus `content`; a failure after the first
chunk ends the stream with `event: error` carrying the envelope.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator

from adrf.views import APIView
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema

from axonflow_site.errors import AxonFlowError, PayloadTooLarge, ProviderNotFound, Unauthorized
from providers.adapters.base import CompletionRequest, Message
from routing import openai_wire, router
from routing.api.base import check_body_size
from routing.api.serializers import CompletionRequestSerializer, CompletionResponseSerializer, ErrorSerializer
from routing.cache import get_snapshot
from routing.router import Caller, RouteResult, RouteStream, StreamFailed
from routing.selection import RoutingOptions
from tenants.authentication import (
    BearerTokenAuthentication,
    HasCompletionsToken,
    TokenIdentity,
    cached_lookup,
    lookup_token,
    parse_bearer,
)

log = logging.getLogger("axonflow.completions")


_REQUEST_PREFIX = secrets.token_hex(6)
_request_numbers = itertools.count(1)


def new_request_id() -> str:
    """Unique per process start and request; cheaper than uuid4 (no syscall)."""
    return f"{_REQUEST_PREFIX}{next(_request_numbers):012x}"


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# --- face 1: /api/v1/completions -------------------------------------------------------------


def to_route(data: dict) -> tuple[CompletionRequest, RoutingOptions]:
    """The router's inputs from validated CompletionRequestSerializer data."""
    if "prompt" in data:
        system, messages = data.get("system"), [Message("user", data["prompt"])]
    else:
        systems = [m["content"] for m in data["messages"] if m["role"] == "system"]
        if data.get("system"):
            systems.insert(0, data["system"])
        system = "\n\n".join(systems) if systems else None
        messages = [Message(m["role"], m["content"]) for m in data["messages"] if m["role"] != "system"]
    request = CompletionRequest(
        messages=messages,
        system=system or None,
        max_tokens=data.get("max_tokens"),
        temperature=data.get("temperature"),
        top_p=data.get("top_p"),
        stop=data.get("stop") or None,
        model=data.get("model") or None,
        stream=data["stream"],
    )
    options = RoutingOptions(data.get("preferred_provider"), data.get("weights") or {}, data["disable_failover"])
    return request, options


def answer(request_id: str, provider: str, model: str, finish_reason, usage, cost, route: dict) -> dict:
    return {
        "id": f"cmpl-{request_id}",
        "model": model,
        "provider": provider,
        "finish_reason": finish_reason,
        "usage": openai_wire.usage_dict(usage.prompt_tokens, usage.completion_tokens),
        "cost": {"amount": str(cost), "currency": "USD"},
        "route": route,
    }


def result_body(result: RouteResult, request_id: str) -> dict:
    r = result.response
    body = answer(request_id, result.provider_name, r.model, r.finish_reason, r.usage, result.cost, result.route())
    return {"content": r.content, **body}


def sse(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


async def api_events(stream: RouteStream, request_id: str) -> AsyncIterator[bytes]:
    chunks = stream.chunks()
    try:
        async for chunk in chunks:
            if chunk.delta:
                yield sse("chunk", {"delta": chunk.delta})
        done = answer(
            request_id,
            stream.provider_name,
            stream.model,
            stream.finish_reason,
            stream.usage,
            stream.cost,
            stream.route(),
        )
        yield sse("done", done)
    except StreamFailed as exc:
        yield sse("error", exc.error.envelope())
    finally:
        await chunks.aclose()


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
IDENTITY_ATTR = "axonflow_identity"


class ResolvedBearerAuthentication(BearerTokenAuthentication):
    """Bearer authentication for an identity `CompletionsView` already resolved on the
    event loop: no database here, so DRF's `initial` needs no thread."""

    def authenticate(self, request):
        identity = getattr(request._request, IDENTITY_ATTR, None)
        if identity is None:
            raise Unauthorized("Missing bearer token: send 'Authorization: Bearer <token>'.")
        return identity, identity


class CompletionsView(APIView):
    authentication_classes = [ResolvedBearerAuthentication]
    permission_classes = [HasCompletionsToken]

    async def async_dispatch(self, request, *args, **kwargs):
        """adrf's async_dispatch, except that DRF's `initial` (authentication, permission,
        content negotiation) runs inline instead of through sync_to_async: the token is
        resolved here first, so `initial` does no I/O, and the thread hop per request was
        the largest single cost of this endpoint (docs/benchmarks.md)."""
        self.args, self.kwargs = args, kwargs
        drf_request = self.initialize_request(request, *args, **kwargs)
        self.request, self.headers = drf_request, self.default_response_headers
        try:
            identity = await identify(request.META.get("HTTP_AUTHORIZATION"), in_request=True)
            setattr(request, IDENTITY_ATTR, identity)
            self.initial(drf_request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), None)
            if request.method.lower() not in self.http_method_names or handler is None:
                handler = self.http_method_not_allowed
            response = handler(drf_request, *args, **kwargs)
            if asyncio.iscoroutine(response):
                response = await response
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(drf_request, response, *args, **kwargs)
        return self.response

    @extend_schema(
        operation_id="completions_create",
        request=CompletionRequestSerializer,
        responses={
            200: OpenApiResponse(
                CompletionResponseSerializer, description="JSON, or text/event-stream with stream: true"
            ),
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            413: ErrorSerializer,
            429: ErrorSerializer,
            502: ErrorSerializer,
            503: ErrorSerializer,
        },
        description="Route one completion to the tenant's providers by weight, priority, health and rate "
        "limit, failing over on retryable errors. `route.attempts` lists every provider tried.",
    )
    async def post(self, request):
        check_body_size(request)
        if len(request._request.body) > settings.AXONFLOW_MAX_BODY_BYTES:  # chunked, no Content-Length
            raise PayloadTooLarge("The request body is too large.", {"limit_bytes": settings.AXONFLOW_MAX_BODY_BYTES})
        serializer = CompletionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        identity: TokenIdentity = request.auth
        snapshot = await get_snapshot(identity.tenant_id)
        completion, options = to_route(serializer.validated_data)
        router.validate_names(snapshot, options)
        caller = Caller(identity.tenant_id, identity.token_id, new_request_id(), snapshot.store_prompts)
        if completion.stream:
            stream = await router.open_stream(snapshot, completion, options, caller)
            headers = {**SSE_HEADERS, "X-AxonFlow-Provider": stream.provider_name, "X-Request-Id": caller.request_id}
            return StreamingHttpResponse(
                api_events(stream, caller.request_id), content_type="text/event-stream", headers=headers
            )
        result = await router.complete(snapshot, completion, options, caller)
        # A plain HttpResponse: DRF's Response would be rendered through another thread hop.
        headers = {"X-AxonFlow-Provider": result.provider_name, "X-Request-Id": caller.request_id}
        return HttpResponse(
            _dumps(result_body(result, caller.request_id)), content_type="application/json", headers=headers
        )


# --- face 2: the OpenAI-compatible /v1 -------------------------------------------------------


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


def _lookup_outside_request(raw: str) -> TokenIdentity | None:
    close_old_connections()  # asgiref's shared thread has no request cycle to do it
    try:
        return lookup_token(raw)
    finally:
        close_old_connections()


async def identify(authorization: str | None, *, in_request: bool) -> TokenIdentity:
    """The token's identity from the cache, or (on a miss) the database through
    sync_to_async. Raises Unauthorized. Never touches last_used: the usage writer stamps
    it off the request path."""
    raw = parse_bearer(authorization)
    if raw is None:
        raise Unauthorized("Missing bearer token: send 'Authorization: Bearer <token>'.")
    hit, identity = cached_lookup(raw)
    if not hit:
        identity = await sync_to_async(lookup_token if in_request else _lookup_outside_request)(raw)
    if identity is None:
        raise Unauthorized("Invalid or revoked API token.")
    return identity


async def authenticate(scope) -> TokenIdentity:
    return await identify(header(scope, b"authorization"), in_request=False)


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


async def send_error(send, error: AxonFlowError, request_id: str) -> None:
    extra = [(b"x-request-id", request_id.encode())]
    extra += [(k.lower().encode(), str(v).encode()) for k, v in error.headers.items()]
    if error.http_status == 401:
        extra.append((b"www-authenticate", b'Bearer realm="axonflow"'))
    await send_json(send, error.http_status, openai_wire.error_body(error), extra)


async def chat(scope, receive, send, request_id: str) -> None:
    identity = await authenticate(scope)
    data = openai_wire.parse_body(await read_body(scope, receive))
    completion, options, model, include_usage = openai_wire.parse_chat(data)
    snapshot = await get_snapshot(identity.tenant_id, in_request=False)
    if options.preferred_provider and options.preferred_provider not in snapshot.by_name:
        raise ProviderNotFound(
            f"The model '{model}' is neither a provider of this tenant nor 'auto'.", {"param": "model", "name": model}
        )
    router.validate_names(snapshot, options)
    caller = Caller(identity.tenant_id, identity.token_id, request_id, snapshot.store_prompts)
    if completion.stream:
        stream = await router.open_stream(snapshot, completion, options, caller)
        await stream_chat(scope, receive, send, stream, request_id, include_usage)
        return
    result = await router.complete(snapshot, completion, options, caller)
    extra = [(b"x-axonflow-provider", result.provider_name.encode()), (b"x-request-id", request_id.encode())]
    await send_json(send, 200, openai_wire.completion_body(result, request_id), extra)


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def stream_chat(scope, receive, send, stream: RouteStream, request_id: str, include_usage: bool) -> None:
    """Send the stream; stop (and close the upstream) if the client goes away."""
    headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"x-axonflow-provider", stream.provider_name.encode()),
        (b"x-request-id", request_id.encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    watcher = asyncio.ensure_future(_disconnected(receive))
    chunks = stream.chunks()
    created, model, first = int(time.time()), stream.model or stream.config.model, True
    try:
        async for chunk in chunks:
            if watcher.done():
                break
            event = openai_wire.chunk_event(request_id, created, model, chunk, first)
            await send({"type": "http.response.body", "body": event, "more_body": True})
            first = False
        else:
            tail = b""
            if include_usage and stream.usage is not None:
                tail = openai_wire.usage_event(
                    request_id, created, model, stream.usage.prompt_tokens, stream.usage.completion_tokens
                )
            await send({"type": "http.response.body", "body": tail + openai_wire.DONE_EVENT})
    except StreamFailed as exc:
        await send({"type": "http.response.body", "body": openai_wire.error_event(exc.error)})
    finally:
        watcher.cancel()
        await chunks.aclose()


async def models(scope, send, request_id: str) -> None:
    identity = await authenticate(scope)
    snapshot = await get_snapshot(identity.tenant_id, in_request=False)
    names = [(c.name, c.type) for c in snapshot.enabled]
    await send_json(send, 200, openai_wire.models_body(names), [(b"x-request-id", request_id.encode())])


async def openai_app(scope, receive, send) -> None:
    """ASGI app for /v1/*: OpenAI-compatible errors everywhere, never a bare 500."""
    request_id = new_request_id()
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
            await chat(scope, receive, tracking_send, request_id)
        elif path == "/v1/models":
            if method != "GET":
                raise MethodNotAllowed(f"Use GET for {path}.")
            await models(scope, tracking_send, request_id)
        else:
            raise NotFound(f"No such endpoint: {method} {scope['path']}.")
    except ClientGone:
        return
    except AxonFlowError as exc:
        if not started:
            await send_error(send, exc, request_id)
    except Exception:
        log.exception("unexpected error serving %s %s", method, path)
        if not started:
            await send_error(
                send, AxonFlowError("Internal error; see the server log.", {"request_id": request_id}), request_id
            )
