"""What serves which path: the HTTP application axonflow_site/asgi.py installs.

    /v1/*    routing.v1.app.openai_app (the lean OpenAI-compatible handler)
    /metrics routing.scrape.metrics_app (Prometheus, for a bearer token)
    /api/*   Django, through APIHandler: the REST API without the console's middleware
    else     Django with settings.MIDDLEWARE (console, admin, static files)

Every request gets its id first (axonflow_site/context.py: the client's X-Request-ID
when well formed, else a new one), which every response carries back.

Every HTTP request first passes the body limit (`mount`, `counting_receive`): a
declared Content-Length over AXONFLOW_MAX_BODY_BYTES is answered 413
`payload_too_large` before any authentication or reading, and a body without one
(chunked) is counted as it arrives and cut off at the limit, so no path (console and
admin included) buffers more than the limit or spools a body to disk
(FILE_UPLOAD_MAX_MEMORY_SIZE is at least the limit).

Plus two lifespan hooks (axonflow_site/lifespan.py): the last at startup takes the
objects alive then out of the cyclic garbage collector's reach; the first at shutdown
waits for the requests still being served (`in_flight`) to unwind.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, markcoroutinefunction
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpResponse

from axonflow_site import context, metrics
from axonflow_site.errors import AxonFlowError, PayloadTooLarge, ValidationFailed
from routing.scrape import metrics_app
from routing.v1 import wire
from routing.v1.app import openai_app

DJANGO_PAGES = {
    404: ("not_found", "No such API endpoint."),
    500: ("internal_error", "Internal error; see the server log."),
}
MAX_IDLE_THREADS = 1024  # sync-work threads kept for /api/ requests (one per concurrent request)
UNWIND_SECONDS = 5.0  # at shutdown, how long requests the server cancelled get to finish unwinding

log = logging.getLogger("axonflow.lifespan")

# HTTP requests being served now (websockets aside): what the shutdown waits for before
# the usage flush, and the axonflow_in_flight_requests gauge.
in_flight = 0
metrics.sample(metrics.IN_FLIGHT_REQUESTS, lambda: in_flight)

# The REST API authenticates by token and keeps no session: of settings.MIDDLEWARE it
# needs only SecurityMiddleware's headers. The console's stack (sessions, CSRF,
# messages, htmx, WhiteNoise, the tenant middleware) includes sync-only middleware,
# which makes Django run every request through a thread and back, and even an
# async-capable MiddlewareMixin runs its hooks through sync_to_async. Measured, those
# hops cost more than the completion itself (docs/benchmarks.md).


class APIMiddleware:
    """SecurityMiddleware's process_request/process_response (pure header logic, no
    I/O) called inline on the event loop rather than through sync_to_async; and the
    error envelope for what Django itself answers under /api/ (an unknown path, an
    exception outside DRF), whose default pages are HTML."""

    sync_capable, async_capable = False, True

    def __init__(self, get_response):
        from django.middleware.security import SecurityMiddleware

        self.get_response = get_response
        self.security = SecurityMiddleware(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request):
        response = self.security.process_request(request)
        if response is None:
            response = await self.get_response(request)
        if response.status_code in DJANGO_PAGES and response.get("Content-Type", "").startswith("text/html"):
            code, message = DJANGO_PAGES[response.status_code]
            body = json.dumps({"error": {"code": code, "message": message, "details": {}}})
            response = HttpResponse(body, status=response.status_code, content_type="application/json")
        return self.security.process_response(request, response)


class APIHandler(ASGIHandler):
    """Django's ASGI handler for /api/: APIMiddleware as its only middleware,
    and a reused thread for each request's sync work.

    Django gives every request a ThreadSensitiveContext, whose sync work (the
    request_started and request_finished receivers, response.close(), sync views, ORM
    calls) runs on a thread created for that request and joined by yet another new
    thread afterwards. Here each request borrows a single-thread executor from a pool
    and returns it: the same one-thread-per-request guarantee (a request's transaction
    stays on its thread), with the threads kept, as a WSGI server keeps its workers.
    Connections on them follow CONN_MAX_AGE through request_started/finished as usual.
    """

    def __init__(self) -> None:
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []

    def load_middleware(self, is_async: bool = True) -> None:
        self._view_middleware, self._template_response_middleware, self._exception_middleware = [], [], []
        handler = convert_exception_to_response(self._get_response_async)
        self._middleware_chain = convert_exception_to_response(APIMiddleware(handler))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._idle.pop() if self._idle else ThreadPoolExecutor(1, thread_name_prefix="api-sync")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            if len(self._idle) < MAX_IDLE_THREADS:
                self._idle.append(executor)
            else:
                executor.shutdown(wait=False)


async def freeze_startup_objects() -> None:
    """Move everything alive after startup (Django, the URLconf, models, adapters: a few
    hundred thousand objects) out of the cyclic collector's reach. Without this every
    full collection walked all of them: 20-60 ms pauses, several a second under load,
    which were the p99 (docs/benchmarks.md). Request garbage is still collected."""
    gc.collect()
    gc.freeze()


async def wait_for_requests() -> None:
    """Lifespan shutdown hook, the first: wait up to UNWIND_SECONDS for the requests
    still being served. uvicorn starts the lifespan shutdown right after cancelling the
    requests its grace period did not cover; a cancelled stream queues its usage record
    (a 499: the answer was cut short) as it unwinds, and that must happen before the
    pooled session closes and the usage flush runs. Requests that finished in time are gone already."""
    if not in_flight:
        return
    log.info("waiting for %d request(s) to finish before shutting down", in_flight)
    deadline = asyncio.get_running_loop().time() + UNWIND_SECONDS
    while in_flight and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    if in_flight:
        log.warning("%d request(s) still running after %s s; shutting down anyway", in_flight, UNWIND_SECONDS)


# --- the body limit ------------------------------------------------------------------


def declared_length(scope) -> int | None:
    """The request's Content-Length; None when it has none (chunked, or no body).
    Raises ValidationFailed for a value that is not a number."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            if not value.isdigit():
                raise ValidationFailed("The Content-Length header is not a number.")
            return int(value)
    return None


def too_large(limit: int, length: int | None = None) -> PayloadTooLarge:
    said = f"is {length} bytes" if length is not None else "exceeds the limit"
    return PayloadTooLarge(f"The request body {said}; the limit is {limit} bytes.", {"limit_bytes": limit})


def counting_receive(receive, limit: int):
    """`receive`, raising PayloadTooLarge as soon as the body received passes `limit`
    bytes (the server reads no more of it than it buffers ahead)."""
    received = 0

    async def limited():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(limit)
        return message

    return limited


async def send_refusal(send, error: AxonFlowError, v1: bool, request_id: str) -> None:
    """The envelope (with OpenAI's fields on /v1), closing the connection: the client
    may still be sending the body we will not read."""
    body = wire.error_body(error) if v1 else json.dumps(error.envelope()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (context.HEADER, request_id.encode()),
    ]
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def with_request_id(send, request_id: str):
    """`send`, adding X-Request-ID to the response unless the application set one."""
    value = request_id.encode()

    async def sending(message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(key.lower() == context.HEADER for key, _ in headers):
                headers.append((context.HEADER, value))
                message = {**message, "headers": headers}
        await send(message)

    return sending


def mount(django_app):
    """The HTTP application: /v1/* to `openai_app`, /api/* to Django's APIHandler,
    everything else (console, admin, static) to the full Django application; every
    request's body bounded by AXONFLOW_MAX_BODY_BYTES first, and counted in `in_flight`
    while it runs."""
    api_app = APIHandler()

    async def app(scope, receive, send) -> None:
        global in_flight
        in_flight += 1  # a counter, not a set of tasks: two integer operations per request
        try:
            path = scope["path"]
            v1 = path.startswith("/v1/") or path == "/v1"
            # /v1 begins its own (openai_app is served alone in tests); a refusal here begins it early.
            request_id = "" if v1 else context.begin(scope).request_id
            limit = settings.AXONFLOW_MAX_BODY_BYTES
            try:
                length = declared_length(scope)
            except ValidationFailed as exc:
                await send_refusal(send, exc, v1, request_id or context.begin(scope).request_id)
                return
            if length is not None and length > limit:
                await send_refusal(send, too_large(limit, length), v1, request_id or context.begin(scope).request_id)
                return
            counted = length is None  # with a Content-Length, the server delivers no more than it
            if counted:
                receive = counting_receive(receive, limit)
            try:
                if v1:
                    await openai_app(scope, receive, send)  # refuses an over-long body itself; sets the id
                elif path == "/metrics":
                    await metrics_app(scope, receive, with_request_id(send, request_id))
                elif path.startswith("/api/"):
                    await api_app(scope, receive, with_request_id(send, request_id))
                else:
                    await django_app(scope, receive, with_request_id(send, request_id))
            except PayloadTooLarge as exc:
                # Raised by counting_receive while Django reads the body, which it does
                # before it runs anything or answers.
                if not counted:
                    raise
                await send_refusal(send, exc, v1, request_id or context.begin(scope).request_id)
        finally:
            in_flight -= 1

    return app
