"""The OpenAI-compatible surface (/v1) under uvicorn, driven by the official `openai`
package and by raw HTTP for what a well-behaved client never sends."""

from __future__ import annotations

import json
import time

import openai
import pytest
from django.db.backends.utils import CursorWrapper

from routing.health import db_thread
from tenants.models import TokenScope
from tenants.rls import tenant_context
from tests.conftest import make_token
from usage.models import UsageRecord
from usage.writer import writer as usage_writer

pytestmark = pytest.mark.django_db(transaction=True)
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def token(acme) -> str:
    return make_token(acme, TokenScope.COMPLETIONS)


@pytest.fixture
def client(gateway, token) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=token, max_retries=0)


@pytest.fixture
def http(gateway, token):
    with gateway.client(token) as c:
        yield c


def rows_of(tenant) -> list[UsageRecord]:
    usage_writer.flush()
    with tenant_context(tenant.pk):
        return list(UsageRecord.objects.filter(tenant=tenant).order_by("created", "pk"))


# --- the official client ---------------------------------------------------------------------


def test_the_openai_client_creates_a_completion(client, two):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    completion = raw.parse()
    assert completion.choices[0].message.content == "Echo: hello"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens > 0
    assert raw.headers["x-axonflow-provider"] == "a"


def test_the_model_names_the_preferred_provider(client, two, upstream):
    raw = client.chat.completions.with_raw_response.create(model="b", messages=HELLO)
    assert raw.headers["x-axonflow-provider"] == "b"
    assert upstream.counts("a") == {}


def test_the_openai_client_streams(client, two, acme):
    stream = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    (row,) = rows_of(acme)
    assert row.stream and row.status == "success" and row.completion_tokens == chunks[-1].usage.completion_tokens


def test_a_stream_fails_over_before_the_first_byte(client, two, upstream):
    upstream.configure("a", failure_rate=1.0, failure_kind="502")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO, stream=True)
    assert raw.headers["x-axonflow-provider"] == "b"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "Echo: hello"


def test_a_stream_broken_midway_raises_in_the_client_instead_of_truncating(client, two, upstream, acme):
    upstream.configure("a", failure_rate=1.0, failure_kind="cut", cut_after=2)
    stream = client.chat.completions.create(
        model="a", messages=[{"role": "user", "content": "a b c d e f"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert received, "the first chunks arrived before the failure"
    assert "failed in the middle of the stream" in info.value.message
    assert upstream.counts("b") == {}
    assert [row.error_code for row in rows_of(acme)] == ["upstream_error"]


@pytest.mark.parametrize(
    ("setup", "kwargs", "exc", "status", "code"),
    [
        ("none", {"model": "auto"}, openai.InternalServerError, 503, "no_healthy_provider"),
        ("two", {"model": "nope"}, openai.NotFoundError, 404, "provider_not_found"),
        ("two", {"model": "auto", "temperature": 9}, openai.BadRequestError, 400, "validation_error"),
        (
            "failing",
            {"model": "a", "extra_body": {"disable_failover": True}},
            openai.InternalServerError,
            502,
            "upstream_error",
        ),
    ],
)
def test_our_error_envelope_reaches_the_client_as_an_api_status_error(
    request, client, upstream, setup, kwargs, exc, status, code
):
    if setup in ("two", "failing"):
        request.getfixturevalue("two")
    if setup == "failing":
        upstream.configure("a", failure_rate=1.0, failure_kind="500")
    with pytest.raises(exc) as info:
        client.chat.completions.create(messages=HELLO, **kwargs)
    error = info.value
    assert isinstance(error, openai.APIStatusError)
    assert error.status_code == status
    assert error.body["code"] == code
    assert error.body["type"] and "param" in error.body and "details" in error.body


def test_a_bad_key_is_an_authentication_error(gateway, two):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="axf_not-a-real-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="auto", messages=HELLO)
    assert info.value.body["type"] == "authentication_error"


def test_models_lists_auto_and_the_enabled_providers(client, two, acme, make_provider, globex, upstream):
    make_provider(acme, name="off", enabled=False)
    make_provider(globex, name="globex-only")
    # `auto`, then the upstream models the providers serve, then the providers themselves.
    assert [m.id for m in client.models.list()] == ["auto", "gpt-4o-mini", "a", "b"]


# --- raw HTTP ----------------------------------------------------------------------------------


def test_carol_cannot_use_or_see_acmes_providers(gateway, globex, two, upstream, acme):
    with gateway.client(make_token(globex)) as c:
        r = c.post(CHAT, json={"model": "a", "messages": HELLO})
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["auto"]
    assert upstream.stats() == {}
    assert rows_of(acme) == []


BAD_INPUT = [
    (b"{not json", 400, "validation_error", None),
    (b"[1, 2]", 400, "validation_error", None),
    (b"", 400, "validation_error", None),
    ({"messages": HELLO}, 400, "validation_error", "model"),
    ({"model": 7, "messages": HELLO}, 400, "validation_error", "model"),
    ({"model": "auto"}, 400, "validation_error", "messages"),
    ({"model": "auto", "messages": []}, 400, "validation_error", "messages"),
    ({"model": "auto", "messages": "hello"}, 400, "validation_error", "messages"),
    ({"model": "auto", "messages": [{"role": "tool", "content": "x"}]}, 400, "validation_error",
     "messages[0].tool_call_id"),
    ({"model": "auto", "messages": [{"role": "tool", "content": "x", "tool_call_id": "call_1"}]}, 400,
     "validation_error", "messages[0].tool_call_id"),
    ({"model": "auto", "messages": [{"role": "function", "content": "x"}]}, 400, "validation_error",
     "messages[0].role"),
    ({"model": "auto", "messages": [{"role": "user", "content": 5}]}, 400, "validation_error", "messages[0].content"),
    (
        {"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "validation_error",
        "messages[0].content[0].image_url",
    ),
    (
        {"model": "auto", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/x.png"}}]}]},
        400,
        "validation_error",
        "messages[0].content[0].image_url.url",
    ),
    (
        {"model": "auto", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]},
        400,
        "validation_error",
        "messages[0].content[0].image_url.url",
    ),
    ({"model": "auto", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, 400,
     "validation_error", "messages[0].content[0]"),
    ({"model": "auto", "messages": [{"role": "system", "content": "only"}]}, 400, "validation_error", "messages"),
    ({"model": "auto", "messages": HELLO, "n": 2}, 400, "validation_error", "n"),
    ({"model": "auto", "messages": HELLO, "temperature": "hot"}, 400, "validation_error", "temperature"),
    ({"model": "auto", "messages": HELLO, "top_p": 1.5}, 400, "validation_error", "top_p"),
    ({"model": "auto", "messages": HELLO, "max_tokens": "10"}, 400, "validation_error", "max_tokens"),
    ({"model": "auto", "messages": HELLO, "max_tokens": 0}, 400, "validation_error", "max_tokens"),
    ({"model": "auto", "messages": HELLO, "stop": 3}, 400, "validation_error", "stop"),
    ({"model": "auto", "messages": HELLO, "stream": "yes"}, 400, "validation_error", "stream"),
    ({"model": "auto", "messages": HELLO, "stream_options": {"x": 1}}, 400, "validation_error", "stream_options"),
    ({"model": "auto", "messages": HELLO, "tools": [{"type": "retrieval"}]}, 400, "validation_error", "tools[0]"),
    ({"model": "auto", "messages": HELLO, "tools": {"a": 1}}, 400, "validation_error", "tools"),
    ({"model": "auto", "messages": HELLO, "tools": [{"type": "function", "function": {"name": "a b"}}]}, 400,
     "validation_error", "tools[0].function.name"),
    ({"model": "auto", "messages": HELLO, "tool_choice": "required"}, 400, "validation_error", "tool_choice"),
    ({"model": "auto", "messages": HELLO, "tool_choice": "sometimes"}, 400, "validation_error", "tool_choice"),
    ({"model": "auto", "messages": HELLO, "parallel_tool_calls": "no"}, 400, "validation_error",
     "parallel_tool_calls"),
    ({"model": "auto", "messages": HELLO, "response_format": {"type": "yaml"}}, 400, "validation_error",
     "response_format"),
    ({"model": "auto", "messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {}}}, 400,
     "validation_error", "response_format.json_schema.name"),
    ({"model": "auto", "messages": HELLO, "logit_bias": {"x": 1}}, 400, "validation_error", "logit_bias"),
    ({"model": "auto", "messages": HELLO, "logit_bias": {"50256": 500}}, 400, "validation_error", "logit_bias"),
    ({"model": "auto", "messages": HELLO, "seed": 1.5}, 400, "validation_error", "seed"),
    ({"model": "auto", "messages": HELLO, "presence_penalty": 3}, 400, "validation_error", "presence_penalty"),
    ({"model": "auto", "messages": HELLO, "store": "yes"}, 400, "validation_error", "store"),
    ({"model": "auto", "messages": HELLO, "logprobs": True}, 400, "validation_error", "logprobs"),
    ({"model": "auto", "messages": HELLO, "weights": {"a": -1}}, 400, "validation_error", "weights"),
    ({"model": "auto", "messages": HELLO, "weights": {"a": 101}}, 400, "validation_error", "weights"),
    ({"model": "auto", "messages": HELLO, "weights": {"ghost": 10}}, 400, "validation_error", "weights"),
    ({"model": "auto", "messages": HELLO, "weights": [1]}, 400, "validation_error", "weights"),
    ({"model": "auto", "messages": HELLO, "disable_failover": "true"}, 400, "validation_error", "disable_failover"),
    ({"model": "ghost", "messages": HELLO}, 404, "provider_not_found", "model"),
]


@pytest.mark.parametrize(("body", "status", "code", "param"), BAD_INPUT)
def test_bad_input_gets_a_4xx_envelope_and_nothing_is_routed(http, two, upstream, acme, body, status, code, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = http.post(CHAT, content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] in ("invalid_request_error",) and error["message"]
    assert upstream.stats() == {}
    assert rows_of(acme) == []


def test_a_huge_body_is_refused_with_413(http, two, upstream, settings):
    big = json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": "x" * (settings.AXONFLOW_MAX_BODY_BYTES + 1)}]}
    )
    r = http.post(CHAT, content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"  # SPEC §3 (issue 10)
    assert upstream.stats() == {}


def test_a_huge_chunked_body_is_refused_too(http, two, upstream, settings):
    def body():
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(settings.AXONFLOW_MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    r = http.post(CHAT, content=body())
    assert r.status_code == 413
    assert upstream.stats() == {}


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", CHAT, 405), ("POST", "/v1/models", 405), ("GET", "/v1/nothing", 404)]
)
def test_unknown_routes_and_methods_get_the_envelope(http, method, path, status):
    r = http.request(method, path)
    assert r.status_code == status and r.json()["error"]["type"] == "invalid_request_error"


def test_a_client_that_leaves_mid_stream_is_recorded_and_the_upstream_released(gateway, token, two, upstream, acme):
    upstream.configure("a", chunk_delay_ms=200)
    with gateway.client(token) as c:
        body = {"model": "a", "messages": [{"role": "user", "content": "w " * 40}], "stream": True}
        with c.stream("POST", CHAT, json=body) as r:
            next(r.iter_lines())
    deadline = time.monotonic() + 10
    while not usage_writer.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [row.error_code for row in rows_of(acme)] == ["client_cancelled"]


# --- hot-path database use -----------------------------------------------------------------------


@pytest.fixture
def queries(monkeypatch):
    """Every SQL statement any thread runs (the gateway serves from its own threads, so
    the per-connection CaptureQueriesContext would miss them)."""
    seen: list[str] = []
    execute, executemany = CursorWrapper.execute, CursorWrapper.executemany
    monkeypatch.setattr(
        CursorWrapper, "execute", lambda self, sql, params=None: (seen.append(sql), execute(self, sql, params))[1]
    )
    monkeypatch.setattr(
        CursorWrapper, "executemany", lambda self, sql, p: (seen.append(sql), executemany(self, sql, p))[1]
    )
    return seen


def test_with_warm_caches_a_completion_runs_no_query(http, two, queries):
    assert http.post(CHAT, json={"model": "auto", "messages": HELLO}).status_code == 200
    db_thread.flush()  # the breaker loads the tenant's thresholds on its own thread, off the request path
    background = [q for q in queries if q.startswith('SELECT "tenants_tenant"') and q.endswith("LIMIT 1")]
    cold = [q for q in queries if q not in background]
    # The token; then, in one RLS transaction (BEGIN on SQLite, set_config on PostgreSQL),
    # the tenant, its providers, its model routes with their targets (one join) and its budgets.
    assert len(cold) == 6, [q[:60] for q in cold]
    queries.clear()
    for _ in range(5):
        assert http.post(CHAT, json={"model": "auto", "messages": HELLO}).status_code == 200
        assert http.post(CHAT, json={"model": "auto", "messages": HELLO, "stream": True}).status_code == 200
    assert queries == []
