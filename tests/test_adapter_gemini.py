"""The Gemini adapter against the fake upstream on 127.0.0.1, and its pure wire functions."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from axonflow_site.errors import InvalidConfig
from providers.adapters import gemini, gemini_request
from providers.adapters.base import CompletionRequest, MalformedResponse, Message, ProviderError
from providers.fake_upstream.gemini import BLOCK_MARKER
from providers.pricing import actual_cost
from tests.fixtures_upstream import (
    adapter_for,
    assert_matches_spec,
    assert_stream_matches_completion,
    collect,
    sse_events,
    stream_until_error,
)

pytestmark = pytest.mark.usefixtures("http_session")

KEY = "AIzaSyFAKE-gemini-key-000000000000000"
MODEL = "gemini-2.5-flash"


def make(upstream, label: str = "gm", key: str = KEY, **fields) -> gemini.GeminiProvider:
    return adapter_for(upstream, "gemini", label, key, **{"model": MODEL, **fields})


def request(text: str = "Why is the sky blue?", **fields) -> CompletionRequest:
    return CompletionRequest(messages=[Message("user", text)], **fields)


# --- against the fake upstream --------------------------------------------------------


async def test_it_completes_a_prompt_with_the_documented_request(upstream):
    req = CompletionRequest(
        messages=[Message("user", "Hi"), Message("assistant", "Hello!"), Message("user", "Why is the sky blue?")],
        system="Be brief.",
        max_tokens=64,
        temperature=0.2,
        top_p=0.9,
        stop=["##"],
    )
    response = await make(upstream).complete(req)

    assert response.content == "Echo: Why is the sky blue?"
    assert response.model == MODEL
    assert response.finish_reason == "stop"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    sent = upstream.last("gm")
    assert (sent.method, sent.path, sent.query) == ("POST", f"/gm/v1beta/models/{MODEL}:generateContent", {})
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "Why is the sky blue?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.2, "topP": 0.9, "stopSequences": ["##"]},
    }
    assert_matches_spec("gemini", "GenerateContentRequest__Req", sent.body)


async def test_a_stream_assembles_into_the_same_text(upstream):
    await assert_stream_matches_completion(make(upstream), request())

    sent = upstream.last("gm")
    assert sent.path == f"/gm/v1beta/models/{MODEL}:streamGenerateContent"
    assert sent.query == {"alt": "sse"}
    assert sent.headers["accept"] == "text/event-stream"


async def test_the_key_travels_in_the_header_never_in_the_url(upstream):
    await make(upstream).complete(request())
    await collect(make(upstream).stream(request()))
    await make(upstream).health_check()

    for sent in upstream.requests("gm"):
        assert sent.headers["x-goog-api-key"] == KEY
        assert "key" not in sent.query and KEY not in sent.path


async def test_max_output_tokens_cuts_the_answer_with_reason_length(upstream):
    response = await make(upstream).complete(request(max_tokens=2))

    assert response.content == "Echo: Why"
    assert response.finish_reason == "length"


async def test_usage_is_priced_from_the_table(upstream):
    provider = make(upstream)
    usage = (await provider.complete(request())).usage
    price_in, price_out = Decimal("0.0003"), Decimal("0.0025")  # gemini-2.5-flash in providers/pricing.py

    expected = (price_in * usage.prompt_tokens + price_out * usage.completion_tokens) / 1000
    assert actual_cost(provider.config, usage, MODEL) == expected.quantize(Decimal("0.00000001"))
    assert expected > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_blocked_prompt_is_a_final_error_with_a_clear_message(upstream, stream):
    provider = make(upstream)
    blocked = request(f"{BLOCK_MARKER} something dangerous")
    with pytest.raises(ProviderError) as caught:
        await (collect(provider.stream(blocked)) if stream else provider.complete(blocked))

    assert caught.value.retryable is False
    assert "blocked the prompt (SAFETY)" in caught.value.message


@pytest.mark.parametrize(
    ("kind", "retryable", "status_name"),
    [
        ("429", True, "RESOURCE_EXHAUSTED"),
        ("500", True, "INTERNAL"),
        ("503", True, "UNAVAILABLE"),
        ("400", False, "INVALID_ARGUMENT"),
        ("403", True, "PERMISSION_DENIED"),  # the key is refused: fail over (SPEC §2 rule 4)
        ("404", False, "NOT_FOUND"),
    ],
)
async def test_google_errors_map_to_retryable_or_final(upstream, kind, retryable, status_name):
    upstream.configure("gm", failure_kind=kind, fail_next=1)
    with pytest.raises(ProviderError) as caught:
        await make(upstream).complete(request())

    assert caught.value.status_code == int(kind)
    assert caught.value.retryable is retryable
    assert caught.value.message.startswith(f"{status_name}: ")


async def test_a_429_carries_retry_after(upstream):
    upstream.configure("gm", failure_kind="429", fail_next=1, retry_after="4")
    with pytest.raises(ProviderError) as caught:
        await make(upstream).complete(request())

    assert caught.value.retry_after == 4.0


async def test_safety_settings_pass_through(upstream):
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    await make(upstream, settings={"safety_settings": safety}).complete(request())

    assert upstream.last("gm").body["safetySettings"] == safety
    assert_matches_spec("gemini", "GenerateContentRequest__Req", upstream.last("gm").body)


async def test_the_fake_rejects_unknown_fields_as_gemini_does(upstream):
    # What makes the request assertions above meaningful: a stray field fails loudly.
    import aiohttp

    url = upstream.base_url("gm", "gemini") + f"/v1beta/models/{MODEL}:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}], "temperature": 1}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers={"x-goog-api-key": KEY}) as response:
            error = (await response.json())["error"]

    assert response.status == 400
    assert error["status"] == "INVALID_ARGUMENT" and 'Unknown name "temperature"' in error["message"]


async def test_an_error_event_mid_stream_is_retryable(upstream):
    upstream.configure("gm", failure_kind="stream_error", fail_next=1, cut_after=2)
    error, received = await stream_until_error(make(upstream).stream(request()))

    assert error.retryable
    assert "INTERNAL" in error.message
    assert received and all(c.finish_reason is None for c in received)


async def test_a_malformed_body_is_a_retryable_malformed_response(upstream):
    upstream.configure("gm", failure_kind="malformed", fail_next=1)
    with pytest.raises(MalformedResponse):
        await make(upstream).complete(request())


async def test_the_health_probe_lists_models_with_the_key(upstream):
    probe = await make(upstream).health_check()

    assert probe.ok and probe.status_code == 200
    sent = upstream.last("gm")
    assert (sent.method, sent.path) == ("GET", "/gm/v1beta/models")
    assert sent.headers["x-goog-api-key"] == KEY
    assert upstream.counts("gm")["probe"] == 1


async def test_the_health_probe_fails_without_a_key(upstream):
    probe = await make(upstream, key="").health_check()

    assert not probe.ok
    assert probe.status_code == 403
    assert "PERMISSION_DENIED" in probe.error


async def test_an_echoed_key_never_reaches_exceptions_or_logs(upstream, caplog):
    caplog.set_level(logging.DEBUG)
    upstream.configure("gm", failure_kind="echo_key", fail_next=2)
    provider = make(upstream)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(request())
    probe = await provider.health_check()

    assert caught.value.retryable is True  # a refused key fails over (SPEC §2 rule 4)
    assert KEY not in str(caught.value) and "[REDACTED]" in caught.value.message
    assert KEY not in probe.error
    assert KEY not in caplog.text


# --- pure functions ------------------------------------------------------------------


def test_to_wire_maps_roles_and_merges_system_and_repeated_turns():
    req = CompletionRequest(
        messages=[
            Message("system", "Answer in French."),
            Message("user", "Hi"),
            Message("user", "Are you there?"),
            Message("assistant", "Oui."),
        ],
        system="Be brief.",
    )
    body = gemini_request.to_wire(req)

    assert body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}, {"text": "Are you there?"}]},
            {"role": "model", "parts": [{"text": "Oui."}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
    }


def test_from_wire_reads_text_finish_reason_and_usage_without_thoughts():
    body = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "thinking…", "thought": True}, {"text": "Blue."}]},
                "finishReason": "MAX_TOKENS",
            }
        ],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 2, "thoughtsTokenCount": 5},
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "abc",
    }
    response = gemini.from_wire(body)

    assert (response.content, response.finish_reason, response.model, response.id) == (
        "Blue.",
        "length",
        "gemini-2.5-flash-001",
        "abc",
    )
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (7, 7)


@pytest.mark.parametrize("raw", ["SAFETY", "RECITATION", "PROHIBITED_CONTENT"])
def test_safety_stops_are_content_filter(raw):
    assert gemini.finish_reason(raw) == "content_filter"


@pytest.mark.parametrize("body", [[], {"candidates": []}, {"usageMetadata": {}}])
def test_from_wire_rejects_bodies_without_candidates(body):
    with pytest.raises(MalformedResponse):
        gemini.from_wire(body)


def test_retry_info_sets_retry_after_when_no_header_does():
    body = {
        "error": {
            "code": 429,
            "message": "Quota exceeded",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
        }
    }
    error = gemini.error_from("gm", 429, body)

    assert error.retryable and error.retry_after == 37.0
    assert error.message == "RESOURCE_EXHAUSTED: Quota exceeded"


async def test_parse_stream_refuses_a_stream_without_finish_reason():
    part = '{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"}}]}'
    await stream_until_error(gemini.parse_stream(sse_events(part)), MalformedResponse)


@pytest.mark.parametrize(
    "raw",
    [
        {"api_version": "latest"},
        {"safety_settings": "none"},
        {"safety_settings": ["x"]},
        {"embedding_model": ""},
        {"embedding_model": "models/gemini embedding"},
        {"embedding_model": 4},
    ],
)
def test_bad_settings_are_invalid_config(raw):
    with pytest.raises(InvalidConfig):
        gemini.Settings.parse(raw)


def test_the_embedding_model_is_a_setting():
    assert gemini.Settings.parse({}).embedding_model == "gemini-embedding-001"
    assert gemini.Settings.parse({"embedding_model": "gemini-embedding-exp"}).embedding_model == "gemini-embedding-exp"


def test_lite_models_are_not_priced_as_their_bigger_sibling():
    from providers.pricing import table_price

    assert table_price("gemini-2.5-flash-lite-preview") == (Decimal("0.0001"), Decimal("0.0004"))
    assert table_price("gemini-2.5-flash") == (Decimal("0.0003"), Decimal("0.0025"))
