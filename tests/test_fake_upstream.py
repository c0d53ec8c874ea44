"""The fake upstream itself: labels, behaviours, recording, control API, and that the
official SDKs accept what it serves (so adapter tests against it mean something)."""

from __future__ import annotations

from dataclasses import dataclass

import anthropic
import httpx
import openai
import pytest

from providers.fake_upstream.core import Behaviour, count_tokens, split_chunks

KEY = "sk-test-fake-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "hello there world"}]


@pytest.fixture
def oai(upstream):
    return openai.OpenAI(api_key=KEY, base_url=upstream.base_url("oa", "openai"), max_retries=0)


@pytest.fixture
def claude(upstream):
    return anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=upstream.base_url("an", "anthropic"), max_retries=0)


def test_split_chunks_joins_back_to_the_text():
    for text in ["", "one", "  two words ", "a\nb  c.", "trailing "]:
        assert "".join(split_chunks(text)) == text


def test_count_tokens_counts_words_and_punctuation():
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 1


def test_behaviour_rejects_unknown_fields_and_kinds():
    with pytest.raises(ValueError):
        Behaviour.from_dict({"latency": 5})
    with pytest.raises(ValueError):
        Behaviour.from_dict({"failure_kind": "explode"})
    with pytest.raises(ValueError):
        Behaviour.from_dict({"failure_rate": 1.5})
    with pytest.raises(ValueError, match="failure_kind"):
        Behaviour.from_dict({"failure_kind": "200"})  # a success is no failure
    with pytest.raises(ValueError, match="failure_scope"):
        Behaviour.from_dict({"failure_scope": "chats"})  # would silently never fail


def test_the_label_is_the_path_before_the_route_suffix(upstream, oai):
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    httpx.post(f"{upstream.url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES},
               headers={"Authorization": f"Bearer {KEY}"})
    assert upstream.last("oa").path == "/oa/v1/chat/completions"
    assert upstream.last("").path == "/v1/chat/completions"
    assert upstream.counts("oa") == {"chat": 1, "total": 1}


def test_the_official_openai_client_parses_a_completion(oai):
    reply = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == "Echo: hello there world"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_the_official_openai_client_parses_a_stream_with_usage(oai):
    chunks = list(oai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello there world"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_the_official_openai_client_lists_models(oai):
    assert "gpt-4o-mini" in [m.id for m in oai.models.list().data]


def test_the_official_openai_client_sees_a_429_with_retry_after(upstream, oai):
    upstream.configure("oa", failure_kind="429", fail_next=1, retry_after="7")
    with pytest.raises(openai.RateLimitError) as exc:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert exc.value.response.headers["retry-after"] == "7"
    assert exc.value.body["code"] == "rate_limit_exceeded"
    # fail_next is spent: the next call succeeds.
    assert oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices


def test_max_tokens_truncates_with_finish_reason_length(oai):
    reply = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=2)
    assert reply.choices[0].message.content == "Echo: hello"
    assert reply.choices[0].finish_reason == "length"


def test_the_official_anthropic_client_parses_a_message(claude):
    message = claude.messages.create(model="claude-sonnet-4-20250514", max_tokens=64, messages=MESSAGES)
    assert message.content[0].text == "Echo: hello there world"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0


def test_the_official_anthropic_client_parses_a_stream(claude):
    with claude.messages.stream(model="claude-sonnet-4-20250514", max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: hello there world"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == count_tokens(text)


def test_the_official_anthropic_client_lists_models(claude):
    assert claude.models.list().data[0].id.startswith("claude-")


def test_the_anthropic_client_sees_an_overloaded_error_mid_stream(upstream, claude):
    upstream.configure("an", failure_kind="stream_error", fail_next=1)
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        with claude.messages.stream(model="claude-sonnet-4-20250514", max_tokens=64, messages=MESSAGES) as s:
            "".join(s.text_stream)


def test_anthropic_requires_max_tokens(upstream):
    r = httpx.post(f"{upstream.url}/v1/messages", json={"model": "claude-3-5-haiku", "messages": MESSAGES},
                   headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"})
    assert r.status_code == 400
    assert r.json()["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}


def test_failure_rate_one_fails_every_request_and_is_counted(upstream, oai):
    upstream.configure("oa", failure_rate=1.0, failure_kind="500")
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert upstream.counts("oa")["failed"] == 3


def test_failure_scope_limits_failures_to_one_route_kind(upstream, oai):
    upstream.configure("oa", failure_rate=1.0, failure_kind="503", failure_scope="probe")
    assert oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices
    with pytest.raises(openai.InternalServerError):
        oai.models.list()
    assert upstream.counts("oa") == {"chat": 1, "probe": 1, "total": 2, "failed": 1}


def test_malformed_bodies_are_not_json(upstream, oai):
    upstream.configure("oa", failure_kind="malformed", fail_next=1)
    with pytest.raises(ValueError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_a_cut_stream_drops_the_connection_after_a_few_chunks(upstream, oai):
    upstream.configure("oa", failure_kind="cut", fail_next=1, cut_after=2)
    seen = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
            seen.append(chunk)
    assert len(seen) == 2


def test_timeout_hangs_until_the_client_gives_up(upstream, oai):
    upstream.configure("oa", failure_kind="timeout", fail_next=1)
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.3).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_echo_key_repeats_the_callers_key(upstream, oai):
    upstream.configure("oa", failure_kind="echo_key", fail_next=1)
    with pytest.raises(openai.AuthenticationError) as exc:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert KEY in exc.value.body["message"]  # the fake does leak it; adapters must scrub it


def test_the_control_api_configures_and_reports(upstream):
    r = httpx.post(f"{upstream.url}/_control/ctl", json={"failure_kind": "429", "fail_next": 1})
    assert r.status_code == 200 and r.json()["failure_kind"] == "429"
    headers = {"Authorization": f"Bearer {KEY}"}
    first = httpx.get(f"{upstream.base_url('ctl')}/models", headers=headers)
    second = httpx.get(f"{upstream.base_url('ctl')}/models", headers=headers)
    assert (first.status_code, second.status_code) == (429, 200)
    recorded = httpx.get(f"{upstream.url}/_control/ctl/requests").json()
    assert [r["path"] for r in recorded] == ["/ctl/v1/models", "/ctl/v1/models"]
    assert httpx.get(f"{upstream.url}/_control/stats").json()["ctl"] == {"probe": 2, "total": 2, "failed": 1}
    assert httpx.post(f"{upstream.url}/_control/reset").status_code == 200
    assert httpx.get(f"{upstream.url}/_control/stats").json() == {}


def test_the_control_api_rejects_bad_behaviour(upstream):
    r = httpx.post(f"{upstream.url}/_control/x", json={"failure_rate": 3})
    assert r.status_code == 400 and "failure_rate" in r.json()["error"]


def test_defaults_apply_to_labels_without_their_own_behaviour(upstream, oai):
    upstream.configure("*", reply="fixed")
    assert oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content == "fixed"


def test_unknown_paths_are_404(upstream):
    assert httpx.get(f"{upstream.url}/nope").status_code == 404


def test_the_command_rejects_an_unknown_failure_kind():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="failure_kind"):
        call_command("fake_upstream", "--port", "0", "--failure-kind", "explode")


# --- faults that need the wire format: missing_fields, no_end; and reset ---------------------


@dataclass(frozen=True)
class Wire:
    """A provider's chat route on the fake: `needed` is what missing_fields drops from its
    JSON (`streamed`, from its stream events) and `end` how its stream's end marker reads."""

    provider: str
    path: str  # after the label; {method} is Gemini's generateContent or streamGenerateContent
    body: dict
    headers: dict
    needed: str
    end: str
    streamed: str = ""

    def url(self, upstream, stream: bool) -> str:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{upstream.url}/{self.provider}{self.path.format(method=method)}"

    def json(self, stream: bool) -> dict:
        # Gemini streams by route; Ollama streams unless told not to.
        return self.body if self.provider == "gemini" else {**self.body, "stream": stream}


WIRES = [
    Wire("openai", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES},
         {"Authorization": f"Bearer {KEY}"}, "choices", "data: [DONE]"),
    Wire("anthropic", "/v1/messages", {"model": "claude-3-5-haiku", "max_tokens": 64, "messages": MESSAGES},
         {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}, "content", "event: message_stop", "delta"),
    Wire("ollama", "/api/chat", {"model": "llama3.2", "messages": MESSAGES}, {}, "message", '"done":true'),
    Wire("gemini", "/v1beta/models/gemini-2.5-flash:{method}",
         {"contents": [{"role": "user", "parts": [{"text": "hello there world"}]}]}, {"x-goog-api-key": KEY},
         "candidates", '"finishReason"'),
]  # fmt: skip


@pytest.mark.parametrize("wire", WIRES, ids=[w.provider for w in WIRES])
def test_missing_fields_answers_valid_json_without_what_a_client_needs(upstream, wire):
    upstream.configure(wire.provider, failure_kind="missing_fields", fail_next=1)
    r = httpx.post(wire.url(upstream, False), json=wire.json(False), headers=wire.headers)
    assert r.status_code == 200 and isinstance(r.json(), dict)
    assert wire.needed not in r.json() and r.json()  # the rest of the answer is there


@pytest.mark.parametrize("wire", WIRES, ids=[w.provider for w in WIRES])
def test_missing_fields_strips_every_stream_event(upstream, wire):
    upstream.configure(wire.provider, failure_kind="missing_fields", fail_next=1)
    with httpx.stream("POST", wire.url(upstream, True), json=wire.json(True), headers=wire.headers) as r:
        text = r.read().decode()
    assert r.status_code == 200 and text
    assert f'"{wire.streamed or wire.needed}"' not in text


@pytest.mark.parametrize("wire", WIRES, ids=[w.provider for w in WIRES])
def test_no_end_streams_the_answer_then_closes_cleanly_without_the_end_marker(upstream, wire):
    upstream.configure(wire.provider, failure_kind="no_end", fail_next=1)
    with httpx.stream("POST", wire.url(upstream, True), json=wire.json(True), headers=wire.headers) as r:
        text = r.read().decode()  # a clean end: no transport error
    assert r.status_code == 200
    assert "Echo:" in text and wire.end not in text
    with httpx.stream("POST", wire.url(upstream, True), json=wire.json(True), headers=wire.headers) as r:
        assert wire.end in r.read().decode()  # fail_next is spent: the marker is back


def test_no_end_cuts_a_json_body_off(upstream):
    upstream.configure("oa", failure_kind="no_end", fail_next=1)
    url = f"{upstream.base_url('oa')}/chat/completions"
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(url, json={"model": "gpt-4o-mini", "messages": MESSAGES}, headers={"Authorization": f"Bearer {KEY}"})


def test_reset_reads_the_request_then_drops_the_connection_without_an_answer(upstream):
    upstream.configure("oa", failure_kind="reset", fail_next=1)
    url = f"{upstream.base_url('oa')}/chat/completions"
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(url, json={"model": "gpt-4o-mini", "messages": MESSAGES}, headers={"Authorization": f"Bearer {KEY}"})
    assert upstream.counts("oa") == {"chat": 1, "total": 1, "failed": 1}


@pytest.mark.parametrize("kind", ["missing_fields", "no_end", "reset", "502"])
def test_the_control_api_accepts_every_failure_kind(upstream, kind):
    r = httpx.post(f"{upstream.url}/_control/ctl", json={"failure_kind": kind})
    assert r.status_code == 200 and r.json()["failure_kind"] == kind
