"""The Ollama adapter against the fake upstream on 127.0.0.1, and its pure wire functions."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from axonflow_site.errors import InvalidConfig
from providers.adapters import ollama
from providers.adapters.base import (
    CompletionRequest,
    MalformedResponse,
    Message,
    ProviderError,
    ProviderTimeout,
)
from providers.pricing import actual_cost
from tests.fixtures_upstream import (
    adapter_for,
    assert_matches_spec,
    assert_stream_matches_completion,
    collect,
    items,
    stream_until_error,
)

pytestmark = pytest.mark.usefixtures("http_session")

KEY = "ollama-proxy-key-5f1c2e9a7b"


def make(upstream, label: str = "ol", key: str = "", **fields) -> ollama.OllamaProvider:
    return adapter_for(upstream, "ollama", label, key, **{"model": "llama3.2", **fields})


def request(**fields) -> CompletionRequest:
    return CompletionRequest(messages=[Message("user", "Why is the sky blue?")], **fields)


# --- against the fake upstream --------------------------------------------------------


async def test_it_completes_a_prompt_with_the_documented_request(upstream):
    provider = make(upstream)
    response = await provider.complete(
        request(system="Be brief.", max_tokens=64, temperature=0.2, top_p=0.9, stop=["##"])
    )

    assert response.content == "Echo: Why is the sky blue?"
    assert response.model == "llama3.2"
    assert response.finish_reason == "stop"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    sent = upstream.last("ol")
    assert (sent.method, sent.path) == ("POST", "/ol/api/chat")
    assert sent.body == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
        "stream": False,
        "options": {"temperature": 0.2, "top_p": 0.9, "num_predict": 64, "stop": ["##"]},
    }
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert_matches_spec("ollama", "ChatRequest", sent.body)


async def test_a_stream_assembles_into_the_same_text(upstream):
    await assert_stream_matches_completion(make(upstream), request())

    sent = upstream.last("ol")
    assert sent.body["stream"] is True
    assert sent.headers["accept"] == "application/x-ndjson"


async def test_num_predict_cuts_the_answer_with_reason_length(upstream):
    response = await make(upstream).complete(request(max_tokens=2))

    assert response.content == "Echo: Why"
    assert response.finish_reason == "length"


async def test_it_sends_a_key_as_bearer_only_when_one_is_set(upstream):
    await make(upstream, key=KEY).complete(request())

    assert upstream.last("ol").headers["authorization"] == f"Bearer {KEY}"


async def test_settings_pass_keep_alive_num_ctx_and_extra_options(upstream):
    provider = make(upstream, settings={"keep_alive": "10m", "num_ctx": 8192, "options": {"top_k": 40}})
    await provider.complete(request())

    body = upstream.last("ol").body
    assert body["keep_alive"] == "10m"
    assert body["options"] == {"top_k": 40, "num_ctx": 8192}


async def test_local_models_cost_nothing_unless_the_operator_sets_a_price(upstream):
    free = make(upstream)
    usage = (await free.complete(request())).usage
    assert actual_cost(free.config, usage, "llama3.2") == Decimal("0")

    priced = make(upstream, cost_input_per_1k=Decimal("0.001"), cost_output_per_1k=Decimal("0.002"))
    expected = (Decimal("0.001") * usage.prompt_tokens + Decimal("0.002") * usage.completion_tokens) / 1000
    assert actual_cost(priced.config, usage, "llama3.2") == expected.quantize(Decimal("0.00000001"))


@pytest.mark.parametrize(
    ("kind", "retryable", "status"),
    [("500", True, 500), ("429", True, 429), ("502", True, 502), ("400", False, 400), ("404", False, 404)],
)
async def test_http_errors_map_to_retryable_or_final(upstream, kind, retryable, status):
    upstream.configure("ol", failure_kind=kind, fail_next=1, error_message="model 'llama3.2' not found")
    with pytest.raises(ProviderError) as caught:
        await make(upstream).complete(request())

    assert caught.value.status_code == status
    assert caught.value.retryable is retryable
    assert "model 'llama3.2' not found" in caught.value.message


async def test_a_429_carries_retry_after(upstream):
    upstream.configure("ol", failure_kind="429", fail_next=1, retry_after="3")
    with pytest.raises(ProviderError) as caught:
        await make(upstream).complete(request())

    assert caught.value.retry_after == 3.0


async def test_a_malformed_body_is_a_retryable_malformed_response(upstream):
    upstream.configure("ol", failure_kind="malformed", fail_next=1)
    with pytest.raises(MalformedResponse) as caught:
        await make(upstream).complete(request())

    assert caught.value.retryable


async def test_a_hung_upstream_times_out(upstream):
    upstream.configure("ol", failure_kind="timeout", fail_next=1)
    with pytest.raises(ProviderTimeout):
        await make(upstream, timeout_seconds=1).complete(request())


async def test_an_error_line_mid_stream_is_retryable_and_not_a_short_answer(upstream):
    upstream.configure("ol", failure_kind="stream_error", fail_next=1, cut_after=2)
    error, received = await stream_until_error(make(upstream).stream(request()))

    assert error.retryable
    assert "an error was encountered while running the model" in error.message
    assert all(c.finish_reason is None for c in received)


async def test_the_health_probe_lists_models(upstream):
    probe = await make(upstream).health_check()

    assert probe.ok and probe.status_code == 200
    assert upstream.last("ol").path == "/ol/api/tags"
    assert upstream.counts("ol")["probe"] == 1


async def test_the_health_probe_reports_an_error_status(upstream):
    upstream.configure("ol", failure_kind="500", fail_next=1)
    probe = await make(upstream).health_check()

    assert not probe.ok
    assert probe.status_code == 500
    assert probe.error


async def test_an_echoed_key_never_reaches_exceptions_or_logs(upstream, caplog):
    caplog.set_level(logging.DEBUG)
    upstream.configure("ol", failure_kind="echo_key", fail_next=2)
    provider = make(upstream, key=KEY)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(request())
    probe = await provider.health_check()

    assert KEY not in str(caught.value) and KEY not in caught.value.message
    assert "[REDACTED]" in caught.value.message
    assert KEY not in probe.error
    assert KEY not in caplog.text


# --- pure functions ------------------------------------------------------------------


def test_to_wire_sends_only_what_the_request_sets():
    body = ollama.to_wire(request(), "llama3.2")

    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    assert body == {"model": "llama3.2", "messages": messages, "stream": False}


def test_from_wire_reads_the_documented_response():
    body = {
        "model": "gemma3",
        "created_at": "2025-10-17T23:14:07.414671Z",
        "message": {"role": "assistant", "content": "Hello!", "thinking": "(hidden)"},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 11,
        "eval_count": 18,
    }
    response = ollama.from_wire(body)

    assert (response.content, response.model, response.finish_reason) == ("Hello!", "gemma3", "stop")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (11, 18)


@pytest.mark.parametrize("body", [[], "text", {"done": True}, {"message": "hi"}])
def test_from_wire_rejects_bodies_that_are_not_chat_responses(body):
    with pytest.raises(MalformedResponse):
        ollama.from_wire(body)


async def test_parse_stream_ends_with_usage_and_reason():
    events = items(
        {"message": {"content": "Hel"}, "done": False},
        {"message": {"content": "lo"}, "done": False},
        {"message": {"content": ""}, "done": True, "done_reason": "length", "prompt_eval_count": 3, "eval_count": 2},
    )
    chunks = await collect(ollama.parse_stream(events))

    assert [c.delta for c in chunks] == ["Hel", "lo", ""]
    assert chunks[-1].finish_reason == "length"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 2)


async def test_parse_stream_refuses_a_line_without_its_message():
    events = items({"model": "m", "done": False}, {"message": {"content": ""}, "done": True})
    error, _ = await stream_until_error(ollama.parse_stream(events), MalformedResponse)
    assert "message" in error.message


async def test_parse_stream_refuses_a_stream_without_done():
    await stream_until_error(
        ollama.parse_stream(items({"message": {"content": "Hel"}, "done": False})), MalformedResponse
    )


@pytest.mark.parametrize("raw", [{"keep_alive": True}, {"num_ctx": 0}, {"num_ctx": "big"}, {"options": ["top_k"]}])
def test_bad_settings_are_invalid_config(raw):
    with pytest.raises(InvalidConfig):
        ollama.Settings.parse(raw)
