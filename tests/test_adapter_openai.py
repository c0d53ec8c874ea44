"""The OpenAI adapter: pure request/response mapping, and the exact request it sends
(https://platform.openai.com/docs/api-reference/chat/create). Failure kinds shared by
every adapter live in test_adapter_contract.py."""

from __future__ import annotations

import pytest

from axonflow_site.errors import InvalidConfig
from providers.adapters import openai as adapter
from providers.adapters.base import CompletionRequest, MalformedResponse, Message, ProviderError, Usage
from tests.fixtures_upstream import assert_matches_spec, collect, make_config, sse_events, stream_until_error

KEY = "sk-test-openai-0123456789abcdef"
REQUEST = CompletionRequest(
    messages=[Message("user", "Hi"), Message("assistant", "Hello!"), Message("user", "Tell me a joke")],
    system="You are terse.",
    max_tokens=50,
    temperature=0.2,
    top_p=0.9,
    stop=["\n\n"],
)


def provider_for(upstream, label="oa", **settings):
    config = make_config("openai", upstream.base_url(label, "openai"), KEY, model="gpt-4o-mini", settings=settings)
    return adapter.OpenAIProvider(config)


# --- pure mapping ------------------------------------------------------------------------


def test_to_wire_puts_the_system_prompt_first_and_maps_every_option():
    body = adapter.to_wire(REQUEST, "gpt-4o-mini")
    assert body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell me a joke"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "max_completion_tokens": 50,
    }
    assert_matches_spec("openai", "CreateChatCompletionRequest", body)


def test_to_wire_asks_for_usage_when_streaming():
    body = adapter.to_wire(CompletionRequest(messages=[Message("user", "x")]), "gpt-4o", stream=True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "max_completion_tokens" not in body and "temperature" not in body
    assert_matches_spec("openai", "CreateChatCompletionRequest", body)


def test_to_wire_can_send_the_legacy_max_tokens_field():
    settings = adapter.Settings.parse({"max_tokens_field": "max_tokens", "stream_usage": False})
    body = adapter.to_wire(REQUEST, "gpt-4o", settings, stream=True)
    assert body["max_tokens"] == 50 and "max_completion_tokens" not in body and "stream_options" not in body


@pytest.mark.parametrize(
    "raw",
    [
        {"max_tokens_field": "tokens"},
        {"stream_usage": "yes"},
        {"organization": 5},
        {"project": "a\nb"},
        {"embedding_model": ["text-embedding-3-small"]},
        {"embedding_model": "a\nb"},
    ],
)
def test_settings_reject_bad_values(raw):
    with pytest.raises(InvalidConfig):
        adapter.Settings.parse(raw)


def test_from_wire_reads_content_finish_reason_and_usage():
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
    response = adapter.from_wire(body)
    assert (response.content, response.model, response.finish_reason, response.id) == (
        "Hi.", "gpt-4o-mini-2024-07-18", "stop", "chatcmpl-1"
    )
    assert response.usage == Usage(9, 2)


def test_from_wire_returns_a_refusal_as_the_content():
    body = {"choices": [{"message": {"content": None, "refusal": "I can't help with that."}, "finish_reason": "stop"}]}
    assert adapter.from_wire(body).content == "I can't help with that."


@pytest.mark.parametrize(
    "body", [[], {"choices": []}, {"choices": [{"message": "x"}]}, {"choices": [{"message": {"content": 5}}]}]
)
def test_from_wire_rejects_bodies_that_are_not_completions(body):
    with pytest.raises(MalformedResponse):
        adapter.from_wire(body)


def test_from_wire_raises_an_in_band_error():
    with pytest.raises(ProviderError, match="model overloaded") as exc:
        adapter.from_wire({"error": {"message": "model overloaded"}})
    assert exc.value.retryable


async def test_parse_stream_yields_deltas_then_one_final_chunk_with_usage():
    chunks = [
        c
        async for c in adapter.parse_stream(sse_events(
            '{"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
            '{"model":"m","choices":[{"index":0,"delta":{"content":"Hel"}}]}',
            '{"model":"m","choices":[{"index":0,"delta":{"content":"lo"}}]}',
            '{"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}',
            '{"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}',
            "[DONE]",
        ))
    ]
    assert [c.delta for c in chunks] == ["Hel", "lo", ""]
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage == Usage(3, 2)


async def test_parse_stream_refuses_a_stream_that_just_stops():
    with pytest.raises(MalformedResponse):
        await collect(adapter.parse_stream(sse_events('{"choices":[{"delta":{"content":"Hel"}}]}')))


async def test_parse_stream_refuses_a_finished_stream_without_done():
    # Cut after the finish chunk: the usage chunk may be what was lost.
    stream = sse_events('{"choices":[{"delta":{"content":"Hi"}}]}', '{"choices":[{"delta":{},"finish_reason":"stop"}]}')
    error, received = await stream_until_error(adapter.parse_stream(stream), MalformedResponse)
    assert "[DONE]" in error.message and [c.delta for c in received] == ["Hi"]


async def test_parse_stream_refuses_a_chunk_without_choices():
    with pytest.raises(MalformedResponse, match="choices"):
        await collect(adapter.parse_stream(sse_events('{"id":"c","model":"m"}', "[DONE]")))


async def test_parse_stream_raises_a_mid_stream_error():
    with pytest.raises(ProviderError, match="server_error|boom") as exc:
        await collect(adapter.parse_stream(sse_events('{"error":{"message":"boom","type":"server_error"}}')))
    assert exc.value.retryable


# --- against the fake upstream ----------------------------------------------------------


@pytest.mark.usefixtures("http_session")
async def test_it_sends_the_documented_request(upstream):
    provider = provider_for(upstream, organization="org-acme", project="proj_1")
    await provider.complete(REQUEST)
    sent = upstream.last("oa")
    assert (sent.method, sent.path) == ("POST", "/oa/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["openai-organization"] == "org-acme"
    assert sent.headers["openai-project"] == "proj_1"
    assert sent.headers["content-type"] == "application/json"
    assert sent.body == adapter.to_wire(REQUEST, "gpt-4o-mini")
    assert_matches_spec("openai", "CreateChatCompletionRequest", sent.body)


@pytest.mark.usefixtures("http_session")
async def test_it_streams_with_include_usage(upstream):
    provider = provider_for(upstream)
    chunks = [c async for c in provider.stream(REQUEST)]
    sent = upstream.last("oa")
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.headers["accept"] == "text/event-stream"
    assert chunks[-1].usage.completion_tokens > 0


@pytest.mark.usefixtures("http_session")
async def test_the_request_model_overrides_the_configured_one(upstream):
    provider = provider_for(upstream)
    response = await provider.complete(CompletionRequest(messages=[Message("user", "x")], model="gpt-4o"))
    assert upstream.last("oa").body["model"] == "gpt-4o" and response.model == "gpt-4o"


@pytest.mark.usefixtures("http_session")
async def test_the_health_probe_lists_models(upstream):
    probe = await provider_for(upstream).health_check()
    sent = upstream.last("oa")
    assert probe.ok
    assert (sent.method, sent.path, sent.headers["authorization"]) == ("GET", "/oa/v1/models", f"Bearer {KEY}")


@pytest.mark.usefixtures("http_session")
async def test_a_429_carries_retry_after_and_the_upstream_message(upstream):
    upstream.configure("oa", failure_kind="429", fail_next=1, retry_after="12",
                       error_message="Rate limit reached for gpt-4o-mini on requests per min (RPM).")
    with pytest.raises(ProviderError) as exc:
        await provider_for(upstream).complete(REQUEST)
    assert exc.value.retryable and exc.value.retry_after == 12.0
    assert "Rate limit reached for gpt-4o-mini" in exc.value.message


def test_it_defaults_to_the_public_api():
    config = make_config("openai", "", KEY, model="gpt-4o-mini")
    assert adapter.OpenAIProvider(config).base_url == "https://api.openai.com/v1"
