"""The Anthropic adapter: pure request/response mapping, and the exact request it sends
(https://docs.anthropic.com/en/api/messages). Failure kinds shared by every adapter
live in test_adapter_contract.py."""

from __future__ import annotations

import pytest

from axonflow_site.errors import InvalidConfig
from providers.adapters import anthropic as adapter
from providers.adapters import chat
from providers.adapters.base import CompletionRequest, MalformedResponse, Message, ProviderError, Usage
from tests.fixtures_upstream import assert_matches_spec, collect, make_config, sse_events

KEY = "sk-ant-test-0123456789abcdef"
MODEL = "claude-3-5-haiku-20241022"


def provider_for(upstream, label="an", **settings):
    config = make_config("anthropic", upstream.base_url(label, "anthropic"), KEY, model=MODEL, settings=settings)
    return adapter.AnthropicProvider(config)


# --- pure mapping ------------------------------------------------------------------------


def test_to_wire_sends_system_as_a_top_level_field_and_a_default_max_tokens():
    req = CompletionRequest(messages=[Message("user", "Hi")], system="Be terse.")
    body = adapter.to_wire(req, MODEL)
    assert body == {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hi"}],
        "system": "Be terse.",
    }
    assert_matches_spec("anthropic", "CreateMessageParams", body)


def test_to_wire_maps_stop_to_stop_sequences_and_clamps_temperature():
    req = CompletionRequest(messages=[Message("user", "Hi")], max_tokens=20, temperature=1.7, top_p=0.5, stop=["END"])
    body = adapter.to_wire(req, MODEL, stream=True)
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (20, 1.0, 0.5)
    assert body["stop_sequences"] == ["END"] and body["stream"] is True and "stop" not in body
    assert_matches_spec("anthropic", "CreateMessageParams", body)


def test_to_wire_merges_consecutive_turns_and_system_messages():
    req = CompletionRequest(
        messages=[
            Message("system", "Answer in French."),
            Message("user", "Hello"),
            Message("user", "Are you there?"),
            Message("assistant", "Oui."),
            Message("user", "Good"),
        ],
        system="Be terse.",
    )
    body = adapter.to_wire(req, MODEL)
    assert body["system"] == "Be terse.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "Are you there?"}]},
        {"role": "assistant", "content": "Oui."},
        {"role": "user", "content": "Good"},
    ]
    assert_matches_spec("anthropic", "CreateMessageParams", body)


def test_settings_default_max_tokens_is_configurable():
    settings = adapter.Settings.parse({"max_tokens": 4096, "beta": ["prompt-caching-2024-07-31"]})
    assert adapter.to_wire(CompletionRequest(messages=[Message("user", "x")]), MODEL, settings)["max_tokens"] == 4096


@pytest.mark.parametrize(
    "raw", [{"max_tokens": 0}, {"max_tokens": "1024"}, {"anthropic_version": "latest"}, {"beta": [""]}, {"beta": 3}]
)
def test_settings_reject_bad_values(raw):
    with pytest.raises(InvalidConfig):
        adapter.Settings.parse(raw)


def test_from_wire_joins_text_blocks_and_maps_the_stop_reason():
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 5},
    }
    response = adapter.from_wire(body)
    assert (response.content, response.finish_reason, response.id) == ("Hello there", "length", "msg_1")
    assert response.usage == Usage(15, 2)


@pytest.mark.parametrize("body", [[], {"type": "message"}, {"type": "completion", "content": []}])
def test_from_wire_rejects_bodies_that_are_not_messages(body):
    with pytest.raises(MalformedResponse):
        adapter.from_wire(body)


async def test_parse_stream_skips_pings_and_unknown_events():
    text_delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}
    stream = sse_events(
        ("message_start", {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 7}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", text_delta),
        ("something_new", {"type": "something_new"}),
        ("content_block_delta", {**text_delta, "delta": {"type": "text_delta", "text": "!"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "stop_sequence"},
                           "usage": {"output_tokens": 3}}),
        ("message_stop", {"type": "message_stop"}),
    )
    chunks = [c async for c in adapter.parse_stream(stream)]
    assert [c.delta for c in chunks] == ["Hi", "!", ""]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage == Usage(7, 3)


async def test_parse_stream_turns_an_error_event_into_a_retryable_error():
    with pytest.raises(ProviderError, match="overloaded_error") as exc:
        await collect(adapter.parse_stream(sse_events(
            ("message_start", '{"type":"message_start","message":{"model":"m"}}'),
            ("error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'),
        )))
    assert exc.value.retryable


@pytest.mark.parametrize("event", ["message_start", "content_block_start", "content_block_delta", "message_delta"])
async def test_parse_stream_refuses_an_event_without_its_object(event):
    with pytest.raises(MalformedResponse, match=event):
        await collect(adapter.parse_stream(sse_events((event, {"type": event, "index": 0}))))


async def test_parse_stream_refuses_a_stream_without_message_stop():
    with pytest.raises(MalformedResponse):
        await collect(adapter.parse_stream(sse_events(
            ("content_block_delta", '{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}}'),
        )))


# --- against the fake upstream ----------------------------------------------------------


@pytest.mark.usefixtures("http_session")
async def test_it_sends_the_documented_request(upstream):
    provider = provider_for(upstream, beta=["prompt-caching-2024-07-31"])
    req = CompletionRequest(messages=[Message("user", "Hello")], system="Be terse.", stop=["\n\nHuman:"])
    await provider.complete(req)
    sent = upstream.last("an")
    assert (sent.method, sent.path) == ("POST", "/an/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert "authorization" not in sent.headers
    assert sent.body == adapter.to_wire(req, MODEL)
    assert_matches_spec("anthropic", "CreateMessageParams", sent.body)


@pytest.mark.usefixtures("http_session")
async def test_it_streams_over_sse(upstream):
    chunks = [c async for c in provider_for(upstream).stream(CompletionRequest(messages=[Message("user", "Hi")]))]
    sent = upstream.last("an")
    assert sent.body["stream"] is True and sent.headers["accept"] == "text/event-stream"
    assert "".join(c.delta for c in chunks) == "Echo: Hi"
    assert chunks[-1].usage.completion_tokens > 0


@pytest.mark.usefixtures("http_session")
async def test_the_health_probe_lists_one_model(upstream):
    probe = await provider_for(upstream).health_check()
    sent = upstream.last("an")
    assert probe.ok
    assert (sent.method, sent.path, sent.query) == ("GET", "/an/v1/models", {"limit": "1"})
    assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"] == "2023-06-01"


@pytest.mark.usefixtures("http_session")
async def test_overloaded_529_is_retryable_and_named(upstream):
    upstream.configure("an", failure_kind="529", fail_next=1)
    with pytest.raises(ProviderError) as exc:
        await provider_for(upstream).complete(CompletionRequest(messages=[Message("user", "Hi")]))
    assert exc.value.retryable and exc.value.status_code == 529
    assert exc.value.message.startswith("overloaded_error:")


@pytest.mark.usefixtures("http_session")
async def test_an_error_event_mid_stream_is_retryable(upstream):
    upstream.configure("an", failure_kind="stream_error", fail_next=1, cut_after=4)
    seen = []
    with pytest.raises(ProviderError, match="overloaded_error") as exc:
        async for chunk in provider_for(upstream).stream(CompletionRequest(messages=[Message("user", "a b c d")])):
            seen.append(chunk)
    assert exc.value.retryable and seen and not any(c.finish_reason for c in seen)


def test_it_defaults_to_the_public_api():
    config = make_config("anthropic", "", KEY, model=MODEL)
    assert adapter.AnthropicProvider(config).base_url == "https://api.anthropic.com"


def test_it_declares_everything_it_translates_and_no_embeddings():
    capabilities = adapter.AnthropicProvider(make_config("anthropic", "", KEY, model=MODEL)).capabilities()
    assert capabilities.features == chat.ALL_FEATURES - {chat.EMBEDDINGS}
    req = CompletionRequest(
        messages=[Message("user", "x", parts=(chat.ImagePart("https://example.com/a.png"),))],
        stream=True,
        tools=(chat.Tool("f"),),
        parallel_tool_calls=False,
        response_format=chat.ResponseFormat("json_schema", {"type": "object"}),
    )
    assert not capabilities.missing(req.required_features())
