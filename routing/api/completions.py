"""`POST /api/v1/completions` (SPEC §3): an adrf async APIView over routing/router.py.

DRF bearer authentication (resolved on the event loop first, see `async_dispatch`), a
DRF serializer for the body, the shared exception handler for the envelope, documented
by drf-spectacular. JSON, or SSE with `stream: true`: `event: chunk` ({"delta"}) per
piece, then `event: done` with the same fields as the JSON answer minus `content`; a
failure after the first chunk ends the stream with `event: error` carrying the envelope.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from adrf.views import APIView
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema

from axonflow_site import context
from axonflow_site.errors import PayloadTooLarge, Unauthorized
from providers.adapters.base import CompletionRequest, Message
from routing import router, token_limits
from routing.api.base import JSONOnly, check_body_size, check_query
from routing.api.schema import APISchema
from routing.api.serializers import CompletionRequestSerializer, CompletionResponseSerializer, ErrorSerializer
from routing.cache import get_snapshot
from routing.ratelimit import check_tenant
from routing.route import Caller, RouteResult, usage_dict
from routing.router import RouteStream, StreamFailed
from routing.selection import RoutingOptions
from tenants.authentication import BearerTokenAuthentication, HasCompletionsToken, TokenIdentity, identify


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


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
        stream=data["stream"],
    )
    options = RoutingOptions(
        data.get("preferred_provider"), data.get("weights") or {}, data["disable_failover"], data.get("model") or None
    )
    return request, options


def answer(request_id: str, provider: str, model: str, finish_reason, usage, cost, route: dict) -> dict:
    return {
        "id": f"cmpl-{request_id}",
        "model": model,
        "provider": provider,
        "finish_reason": finish_reason,
        "usage": usage_dict(usage.prompt_tokens, usage.completion_tokens),
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


# One server-sent event of a streamed answer, as the schema describes each event.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["chunk", "done", "error"]},
        "data": {
            "type": "string",
            "description": "chunk: {delta}; done: the JSON answer's fields but content; error: the error envelope",
        },
    },
    "required": ["event", "data"],
}
ANSWERED = "JSON, or with `stream: true` server-sent events: `chunk` events, then `done` (or `error`)"
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
    throttle_classes = []  # the tenant's API rate limit is checked in async_dispatch, on the loop
    schema = APISchema()
    content_negotiation_class = JSONOnly

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
            await check_tenant(identity)
            if identity.rpm_limit:
                await token_limits.admit(identity, context.request_id())
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
            (200, "application/json"): OpenApiResponse(CompletionResponseSerializer, description=ANSWERED),
            (200, "text/event-stream"): OpenApiResponse(SSE_EVENT, description=ANSWERED),
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            404: OpenApiResponse(ErrorSerializer, description="`provider_not_found`: `model` names nothing"),
            413: ErrorSerializer,
            429: ErrorSerializer,
            502: ErrorSerializer,
            503: ErrorSerializer,
        },
        description="Route one completion to the tenant's providers by weight, priority, health and rate "
        "limit, failing over on retryable errors. `model` picks the pool (SPEC §2 rule 0): a provider, a "
        "model route, `auto` or a model a provider serves; each attempt is sent its own upstream model. "
        "`route.attempts` lists every provider tried.",
    )
    async def post(self, request):
        started = time.perf_counter()
        check_body_size(request)
        if request._request.META.get("QUERY_STRING"):
            check_query(request, frozenset())
        if len(request._request.body) > settings.AXONFLOW_MAX_BODY_BYTES:  # chunked, no Content-Length
            raise PayloadTooLarge("The request body is too large.", {"limit_bytes": settings.AXONFLOW_MAX_BODY_BYTES})
        serializer = CompletionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        identity: TokenIdentity = request.auth
        context.set_tenant(identity.tenant_slug)
        snapshot = await get_snapshot(identity.tenant_id)
        completion, options = to_route(serializer.validated_data)
        router.validate_names(snapshot, options)
        caller = Caller(
            identity.tenant_id, identity.token_id, context.request_id(), snapshot.store_prompts, identity.tenant_slug, started
        )
        if identity.tpm_limit:
            await token_limits.admit_tokens(identity, caller, completion)
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
