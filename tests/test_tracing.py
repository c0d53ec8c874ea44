"""OpenTelemetry traces (issue 13, Must-show 3), with an in-memory span exporter: one
request that fails over is one SERVER span, child of the client's traceparent, and two
CLIENT spans with the GenAI attributes; each upstream request carried its attempt's
traceparent; no span attribute or event holds the prompt or a key.
"""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from axonflow_site import tracing
from tenants.models import TokenScope
from tests.conftest import make_token

pytestmark = pytest.mark.django_db(transaction=True)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
PROMPT = "the secret plan is SWORDFISH-4471"
KEY_A, KEY_B = "sk-test-aaaa1111secret", "sk-test-bbbb2222secret"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()
    provider.shutdown()


@pytest.fixture
def failing_over(gateway, acme, make_provider, upstream):
    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key=KEY_A, priority=1)
    make_provider(acme, name="b", base_url=upstream.base_url("b"), api_key=KEY_B)
    upstream.configure("a", failure_kind="502", fail_next=1)
    token = make_token(acme, TokenScope.COMPLETIONS)
    with gateway.client(token) as client:
        yield client, token


def everything_recorded(span) -> str:
    parts = [span.name, json.dumps(dict(span.attributes), default=str)]
    parts += [json.dumps([e.name, dict(e.attributes)], default=str) for e in span.events]
    return "\n".join(parts)


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_over_request_is_one_server_span_and_two_client_spans(spans, failing_over, upstream, stream):
    client, token = failing_over
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        r.read()
    assert r.status_code == 200 and r.headers["x-axonflow-provider"] == "b"

    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind == SpanKind.SERVER]
    clients = sorted((s for s in finished if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time)
    assert len(finished) == 3 and len(clients) == 2

    # The client's traceparent is the parent; the attempts are children of the request.
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT_ID and server.parent.is_remote
    for span in clients:
        assert span.context.trace_id == server.context.trace_id
        assert span.parent.span_id == server.context.span_id

    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert server.attributes["axonflow.request_id"] == r.headers["x-request-id"]
    assert (server.attributes["axonflow.tenant"], server.attributes["axonflow.provider"]) == ("acme", "b")
    (decision,) = [e for e in server.events if e.name == "axonflow.routing.decision"]
    assert list(decision.attributes["axonflow.candidates"]) == ["a", "b"]
    assert list(decision.attributes["axonflow.attempts"]) == ["a: http_502", "b: success"]

    failed, served = clients
    for span, name in ((failed, "a"), (served, "b")):
        assert span.name == "chat gpt-4o-mini"
        assert span.attributes["gen_ai.system"] == span.attributes["gen_ai.provider.name"] == "openai"
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert span.attributes["axonflow.provider"] == name
        assert span.attributes["server.address"] == "127.0.0.1"
    assert failed.attributes["error.type"] == "http_502"
    assert failed.attributes["http.response.status_code"] == 502
    assert "error.type" not in served.attributes
    if not stream:  # a stream's span ends at its first chunk, before the counts exist
        assert served.attributes["gen_ai.usage.input_tokens"] > 0
        assert served.attributes["gen_ai.usage.output_tokens"] > 0
        assert served.attributes["gen_ai.response.model"]

    # Each upstream request carried its own attempt's context.
    for label, span in (("a", failed), ("b", served)):
        sent = upstream.last(label).headers["traceparent"]
        assert sent == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"

    recorded = "\n".join(everything_recorded(s) for s in finished)
    for secret in (PROMPT, "SWORDFISH", KEY_A, KEY_B, token):
        assert secret not in recorded


def test_without_a_traceparent_the_request_starts_a_trace(spans, failing_over):
    client, _ = failing_over
    r = client.post("/v1/chat/completions", json={"model": "b", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    (server,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.parent is None


def test_tracing_is_off_by_default(failing_over, upstream):
    assert tracing.tracer is None
    client, _ = failing_over
    r = client.post("/v1/chat/completions", json={"model": "b", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert "traceparent" not in upstream.last("b").headers


def test_it_is_on_only_when_the_otel_variables_ask(monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_SDK_DISABLED"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert not tracing.wanted()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing.wanted()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.wanted()
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not tracing.wanted()


async def test_start_tracing_sets_up_the_sdk_from_the_otel_variables(monkeypatch, capsys):
    """OTEL_TRACES_EXPORTER=console (in the SDK, no collector needed): the lifespan hook
    traces with service.name axonflow, and the shutdown hook exports what is queued."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert tracing.tracer is None
    await tracing.start_tracing()
    try:
        assert tracing.tracer is not None
        scope = {"method": "POST", "path": "/v1/chat/completions", "headers": []}
        with tracing.server(scope, "/v1/chat/completions", "req-1") as span:
            span.set(200)
    finally:
        await tracing.stop_tracing()
    assert tracing.tracer is None
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == "POST /v1/chat/completions"
    assert printed["resource"]["attributes"]["service.name"] == "axonflow"
    assert printed["attributes"]["axonflow.request_id"] == "req-1"
