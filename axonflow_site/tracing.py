"""OpenTelemetry traces: optional (`pip install 'axonflow[otel]'`), off by default.

On when the extra is installed and the standard variables ask for it
(OTEL_TRACES_EXPORTER, or an OTLP endpoint in OTEL_EXPORTER_OTLP_ENDPOINT /
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; OTEL_SDK_DISABLED=true turns it off). The SDK
reads the rest itself: OTEL_SERVICE_NAME (default here: axonflow),
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_PROPAGATORS, the OTLP endpoint,
headers and timeout (https://opentelemetry.io/docs/languages/sdk-configuration/).

The layout (docs/observability.md), by the GenAI semantic conventions
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/):

    SERVER  "POST /v1/chat/completions"   one per request, child of the client's
            traceparent; http.*, gen_ai.operation.name, gen_ai.request.model,
            axonflow.request_id, axonflow.tenant; the routing decision as the event
            "axonflow.routing.decision"
      CLIENT "chat gpt-4o-mini"           one per upstream attempt: gen_ai.system and
            gen_ai.provider.name, gen_ai.request.model, gen_ai.response.model,
            gen_ai.usage.input_tokens / output_tokens, server.address, error.type;
            its context goes upstream in a `traceparent` header

Prompts, completions and keys are never recorded: only the attributes named here.
With tracing off (`tracer is None`) every function returns at once.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("axonflow.tracing")

tracer = None  # an opentelemetry Tracer while tracing is on
_provider = None  # the SDK TracerProvider we made (shut down at exit)

# gen_ai.provider.name by adapter type (the registry's well-known values).
GENAI_SYSTEMS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "ollama": "ollama",
    "custom": "openai",  # the OpenAI wire format at another address
}
OPERATIONS = {"chat": "chat", "messages": "chat", "embeddings": "embeddings"}


def wanted() -> bool:
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def install(provider) -> None:
    """Trace with `provider` (an SDK TracerProvider): start_tracing, or a test's."""
    global tracer
    tracer = provider.get_tracer("axonflow")


def uninstall() -> None:
    global tracer
    tracer = None


def _exporter():
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stdout)  # the stream of now, not of the SDK's import
    if kind != "otlp":
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported here (otlp, console); using otlp", kind)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


async def start_tracing() -> None:
    """Lifespan startup hook: trace when asked to and the extra is installed."""
    global _provider
    if tracer is not None or not wanted():
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter = _exporter()
    except ImportError:
        log.warning("OTEL_* asks for traces but the otel extra is not installed (pip install 'axonflow[otel]')")
        return
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "axonflow"}
    _provider = TracerProvider(resource=Resource.create(attributes))
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    install(_provider)
    log.info("OpenTelemetry tracing on (%s)", type(exporter).__name__)


async def stop_tracing() -> None:
    """Lifespan shutdown hook: export what is queued."""
    global _provider
    if _provider is not None:
        uninstall()
        _provider.shutdown()
        _provider = None


# --- spans ------------------------------------------------------------------------------


class _Nothing:
    """The span stand-in while tracing is off."""

    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def set(self, **attributes) -> None:
        pass


NOTHING = _Nothing()


class ServerSpan:
    """One request's SERVER span, current while the block runs: `with server(scope,
    route) as span: …; span.set(status=200)`."""

    __slots__ = ("span", "token")

    def __init__(self, scope, route: str, request_id: str) -> None:
        from opentelemetry import context, propagate, trace

        carrier = {}
        for key, value in scope["headers"]:
            if key in (b"traceparent", b"tracestate"):
                carrier[key.decode()] = value.decode("latin-1")
        parent = propagate.extract(carrier)
        method = scope["method"]
        self.span = tracer.start_span(
            f"{method} {route}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "http.route": route,
                "axonflow.request_id": request_id,
            },
        )
        self.token = context.attach(trace.set_span_in_context(self.span, parent))

    def __enter__(self) -> ServerSpan:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        from opentelemetry import context
        from opentelemetry.trace import StatusCode

        if error is not None and not isinstance(error, GeneratorExit):
            self.span.set_attribute("error.type", type(error).__name__)
            self.span.set_status(StatusCode.ERROR)
        self.span.end()
        context.detach(self.token)
        return False

    def set(self, status: int | None = None, **attributes) -> None:
        from opentelemetry.trace import StatusCode

        if status is not None:
            self.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                self.span.set_status(StatusCode.ERROR)
        for name, value in attributes.items():
            if value is not None and value != "":
                self.span.set_attribute(name, value)


def server(scope, route: str, request_id: str):
    return NOTHING if tracer is None else ServerSpan(scope, route, request_id)


def request(model: str, endpoint: str, tenant: str) -> None:
    """What the request asked for, on its SERVER span (once it is parsed)."""
    if tracer is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    span.set_attribute("gen_ai.operation.name", OPERATIONS.get(endpoint, endpoint))
    if model:
        span.set_attribute("gen_ai.request.model", model)
    if tenant:
        span.set_attribute("axonflow.tenant", tenant)


class AttemptSpan:
    """One upstream attempt's CLIENT span, current while the call runs (so the adapter's
    request carries its traceparent)."""

    __slots__ = ("span", "token")

    def __init__(self, provider_type: str, provider: str, base_url: str, model: str, endpoint: str, retry: bool):
        from opentelemetry import context, trace

        operation = OPERATIONS.get(endpoint, endpoint)
        system = GENAI_SYSTEMS.get(provider_type, provider_type)
        address = urlsplit(base_url) if base_url else None
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.system": system,
            "gen_ai.provider.name": system,
            "gen_ai.request.model": model,
            "axonflow.provider": provider,
            "axonflow.retry": retry,
        }
        if address is not None and address.hostname:
            attributes["server.address"] = address.hostname
            if address.port:
                attributes["server.port"] = address.port
        self.span = tracer.start_span(f"{operation} {model}".strip(), kind=trace.SpanKind.CLIENT, attributes=attributes)
        self.token = context.attach(trace.set_span_in_context(self.span))

    def __enter__(self) -> AttemptSpan:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        from opentelemetry import context
        from opentelemetry.trace import StatusCode

        if error is not None:
            self.span.set_attribute("error.type", getattr(error, "outcome", None) or type(error).__name__)
            status = getattr(error, "status_code", None)
            if status:
                self.span.set_attribute("http.response.status_code", status)
            self.span.set_status(StatusCode.ERROR)
        self.span.end()
        context.detach(self.token)
        return False

    def set(self, **attributes) -> None:
        for name, value in attributes.items():
            if value is not None and value != "":
                self.span.set_attribute(name, value)


async def traced(attempt, config, model: str, endpoint: str, retry: bool) -> Any:
    """Await `attempt` (one upstream call, not yet started) inside its CLIENT span: the
    adapter's request carries the span's traceparent. Callers check `tracer` first."""
    with AttemptSpan(config.type, config.name, config.base_url, model, endpoint, retry) as span:
        answer = await attempt
        answered(span, answer)
        return answer


def answered(span, response: Any) -> None:
    """The answer's model and token counts on an attempt's span (a stream's first chunk
    has neither yet)."""
    usage = getattr(response, "usage", None)
    span.set(**{
        "gen_ai.response.model": getattr(response, "model", None),
        "gen_ai.usage.input_tokens": getattr(usage, "prompt_tokens", None),
        "gen_ai.usage.output_tokens": getattr(usage, "completion_tokens", None),
    })  # fmt: skip


def event(name: str, attributes: dict[str, Any]) -> None:
    """An event on the current span (the routing decision on the SERVER span)."""
    if tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().add_event(name, {k: v for k, v in attributes.items() if v is not None})


def with_traceparent(headers):
    """`headers` plus the current span's traceparent (the adapters' requests upstream)."""
    if tracer is None:
        return headers
    from opentelemetry import propagate

    carrier = dict(headers)
    propagate.inject(carrier)
    return carrier
