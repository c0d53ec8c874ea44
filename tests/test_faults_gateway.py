"""Every upstream fault, end to end through the real HTTP surface (uvicorn, POST
/v1/chat/completions, streaming and not): what the client gets, how long it waits and
what usage records.

- Two providers, the faulty `a` tried first (priority 1) and a healthy `b`: the client
  gets a 200 from `b` (X-AxonFlow-Provider), and the usage record's attempts show `a`'s
  fault, then `b`'s success.
- `a` alone: the spec's envelope (SPEC §3): 502 upstream_error with details.attempts,
  or 429 rate_limited with Retry-After when the upstream answered 429. With no other
  candidate left, the retry policy re-sends once to `a` after a short backoff
  (routing/retry.py), except after a 401 (a revoked key does not heal) or a Retry-After
  longer than the policy waits for.
- Streaming: a fault before the first byte fails over (or errs) exactly as without
  streaming; one after it (cut, no end marker, stall, a bad line, an in-band error)
  ends the stream with the chunks sent, then exactly one error event, never a clean
  `[DONE]` after a truncated answer (SPEC §2 rule 7).
- Time: every request ends within the tenant's deadline (retry_settings
  deadline_seconds) plus 100 ms, measured by the client; the slow faults meet a
  provider timeout_seconds of 1 s. After its first chunk a stream is bounded by the
  provider's own total clock (timeout_seconds), which is shorter here.

The timed and dead-address faults are the HTTP client's, shared by every adapter, so
they run against the openai adapter; the body faults also run against anthropic,
whose stream framing (named events, message_stop) differs.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from routing import cache
from tenants.models import Tenant, TokenScope
from tenants.rls import tenant_context
from tests.conftest import make_token
from tests.fixtures_upstream import closed_port
from usage.models import UsageRecord
from usage.writer import writer as usage_writer

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"
PROMPT = "one two three four five six"
ANSWER = f"Echo: {PROMPT}"
DEADLINE = 1.5  # the tenant's retry_settings deadline_seconds
TIMEOUT = 1  # the faulty provider's timeout_seconds (validation's minimum)
SLACK = 0.1  # the Must-show: every request ends within its deadline plus 100 ms


@dataclass(frozen=True)
class Fault:
    """One fault of provider `a`: the Behaviour injecting it (every request), or a dead
    `address` dialled instead of the fake; the attempt `outcome` it leaves; whether a
    stream sees it only after its first chunk (`midstream`, the attempt then `says` so
    in its error); whether, alone, `a` is re-sent the request once (`resent`), and the
    client's `status` then."""

    id: str
    outcome: str
    behaviour: dict[str, Any] = field(default_factory=dict)
    address: str = ""  # "refused" | "unaccepting"
    midstream: bool = False
    says: str = ""  # a regex
    resent: bool = True
    status: int = 502
    timed: bool = False  # waits out a clock: the openai adapter proves it for every adapter

    def failing(self) -> dict[str, Any]:
        if "failure_kind" in self.behaviour:
            return {"failure_rate": 1.0, "cut_after": 4, **self.behaviour}
        return self.behaviour


FAULTS = [
    Fault("connect_refused", "connect_error", address="refused"),
    Fault("connect_timeout", "timeout", address="unaccepting", timed=True),
    Fault("slow_first_byte", "timeout", {"latency_ms": 3000}, timed=True),
    # One byte every 50 ms: no read ever waits long, only the total clock ends it (and
    # a stream's first event never completes, so streams fail over too).
    Fault("drip", "timeout", {"failure_kind": "drip", "drip_ms": 50}, timed=True),
    Fault("http_500", "http_500", {"failure_kind": "500"}),
    Fault("http_502", "http_502", {"failure_kind": "502"}),
    Fault("http_503", "http_503", {"failure_kind": "503"}),
    # Longer than the policy's max_wait_seconds: not re-sent, the client is told to wait.
    Fault("http_429_retry_after", "http_429", {"failure_kind": "429", "retry_after": "5"}, resent=False, status=429),
    Fault("http_401_revoked_key", "http_401", {"failure_kind": "401"}, resent=False),
    Fault("malformed_json", "malformed", {"failure_kind": "malformed"}, midstream=True, says="is not valid JSON"),
    # Every stream event lacks its fields, the first one too: fails before the first byte.
    Fault("missing_fields", "malformed", {"failure_kind": "missing_fields"}),
    Fault("cut", "connect_error", {"failure_kind": "cut"}, midstream=True, says="stream broken"),
    Fault(
        "no_end",
        "connect_error",
        {"failure_kind": "no_end"},
        midstream=True,
        says=r"ended before (\[DONE\]|message_stop)",
    ),
    Fault("stall", "timeout", {"failure_kind": "stall"}, midstream=True, timed=True, says="stalled"),
    # The upstream's own error event: OpenAI's error object, Anthropic's overloaded_error.
    Fault(
        "stream_error", "http_500", {"failure_kind": "stream_error"}, midstream=True, says="error: (The server|Overl)"
    ),
    Fault("reset", "connect_error", {"failure_kind": "reset"}),
]
CASES = [
    pytest.param(kind, fault, id=f"{kind}-{fault.id}")
    for kind in ("openai", "anthropic")
    for fault in FAULTS
    if kind == "openai" or not (fault.timed or fault.address)
]


@pytest.fixture
def http(gateway, acme):
    Tenant.objects.filter(pk=acme.pk).update(retry_settings={"deadline_seconds": DEADLINE})
    cache.invalidate_tenant(acme.pk)
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as client:
        assert client.get("/v1/models").status_code == 200  # token and snapshot cached: not timed below
        yield client


@pytest.fixture
def faulty(request, acme, make_provider, upstream):
    """Provider `a` of the case's type with the case's fault, tried before any other."""

    def make(kind: str, fault: Fault):
        base_url = upstream.base_url("a", kind)
        if fault.address == "refused":
            base_url = base_url.replace(upstream.url, f"http://127.0.0.1:{closed_port()}")
        elif fault.address == "unaccepting":
            port = request.getfixturevalue("unaccepting_port")
            base_url = base_url.replace(upstream.url, f"http://127.0.0.1:{port}")
        else:
            upstream.configure("a", **fault.failing())
        return make_provider(
            acme, name="a", type=kind, base_url=base_url, api_key="sk-test-aaaa1111", priority=1,
            timeout_seconds=TIMEOUT,
        )  # fmt: skip

    return make


@pytest.fixture
def healthy(acme, make_provider, upstream):
    return make_provider(acme, name="b", base_url=upstream.base_url("b"), api_key="sk-test-bbbb2222")


@dataclass
class Reply:
    status: int
    headers: Any
    elapsed: float
    body: dict | None = None  # a JSON answer
    events: list | None = None  # a stream's `data:` payloads, decoded ("[DONE]" as is)

    @property
    def text(self) -> str:
        return "".join(
            (e["choices"][0]["delta"].get("content") or "")
            for e in self.events
            if isinstance(e, dict) and e.get("choices")
        )

    @property
    def errors(self) -> list[dict]:
        return [e["error"] for e in self.events if isinstance(e, dict) and "error" in e]


def ask(http, stream: bool) -> Reply:
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    started = time.perf_counter()
    with http.stream("POST", CHAT, json=body) as r:
        if r.headers["content-type"].startswith("text/event-stream"):
            lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
            events = [line if line == "[DONE]" else json.loads(line) for line in lines]
            return Reply(r.status_code, r.headers, time.perf_counter() - started, events=events)
        r.read()
        return Reply(r.status_code, r.headers, time.perf_counter() - started, body=r.json())


def the_record(tenant) -> UsageRecord:
    usage_writer.flush()
    with tenant_context(tenant.pk):
        (record,) = UsageRecord.objects.filter(tenant=tenant)
    return record


def tried(attempts: list[dict]) -> list[tuple[str, str, bool]]:
    return [(a["provider"], a["outcome"], bool(a.get("retry"))) for a in attempts]


def assert_in_time(reply: Reply) -> None:
    assert reply.elapsed <= DEADLINE + SLACK, f"took {reply.elapsed:.3f} s"


def assert_broken_stream(reply: Reply, record: UsageRecord, says: str, *, whole_text: bool = False) -> None:
    """The chunks `a` sent, then exactly one error event: no finish, no [DONE]; the
    attempt's error `says` what broke. With `whole_text` every word came and only the
    end marker is missing: still an error."""
    assert reply.status == 200 and reply.headers["x-axonflow-provider"] == "a"
    assert reply.text and ANSWER.startswith(reply.text) and (reply.text == ANSWER) is whole_text
    (error,) = reply.errors
    assert error["code"] == "upstream_error" and "failed in the middle of the stream" in error["message"]
    assert "error" in reply.events[-1] and "[DONE]" not in reply.events
    assert not any(e["choices"][0]["finish_reason"] for e in reply.events if "choices" in e)
    assert tried(error["details"]["attempts"]) == [("a", "stream_error", False)]
    assert (record.status, record.error_code, record.stream) == ("error", "upstream_error", True)
    assert tried(record.attempts) == [("a", "stream_error", False)]
    assert re.search(says, record.attempts[0]["error"]), record.attempts[0]["error"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("kind", "fault"), CASES)
def test_it_answers_from_the_healthy_provider_when_the_first_fails(
    http, faulty, healthy, upstream, acme, kind, fault, stream
):
    faulty(kind, fault)
    reply = ask(http, stream)
    assert_in_time(reply)
    record = the_record(acme)
    if stream and fault.midstream:  # the first chunk was out: no failover, the stream ends with an error
        assert_broken_stream(reply, record, fault.says, whole_text=fault.id == "no_end")
        assert upstream.counts("b") == {}
        return
    assert reply.status == 200 and reply.headers["x-axonflow-provider"] == "b"
    if stream:
        assert reply.text == ANSWER and reply.events[-1] == "[DONE]" and not reply.errors
    else:
        assert reply.body["choices"][0]["message"]["content"] == ANSWER
    assert (record.status, record.provider_name, record.stream) == ("success", "b", stream)
    assert tried(record.attempts) == [("a", fault.outcome, False), ("b", "success", False)]
    assert upstream.counts("b")["chat"] == 1


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("kind", "fault"), CASES)
def test_it_answers_the_spec_error_with_the_attempts_when_the_only_provider_fails(
    http, faulty, upstream, acme, kind, fault, stream
):
    faulty(kind, fault)
    reply = ask(http, stream)
    assert_in_time(reply)
    record = the_record(acme)
    if stream and fault.midstream:
        assert_broken_stream(reply, record, fault.says, whole_text=fault.id == "no_end")
        return
    expected = [("a", fault.outcome, False)] + ([("a", fault.outcome, True)] if fault.resent else [])
    assert reply.status == fault.status and reply.body is not None, reply.events
    error = reply.body["error"]
    assert tried(error["details"]["attempts"]) == expected
    if fault.status == 429:
        assert (error["code"], error["type"]) == ("rate_limited", "rate_limit_error")
        assert reply.headers["retry-after"] == "5" and error["details"]["retry_after"] == 5
    else:
        assert (error["code"], error["type"]) == ("upstream_error", "api_error")
    assert (record.status, record.status_code, record.error_code) == ("error", fault.status, error["code"])
    assert (record.provider_name, record.stream) == ("a", stream)
    assert tried(record.attempts) == expected
    if fault.timed:  # the re-send was cut short by the request's deadline, not the provider's clock
        assert error["details"]["attempts"][-1]["latency_ms"] < TIMEOUT * 1000


@pytest.mark.parametrize(
    ("fault_id", "status", "code"),
    [("http_401_revoked_key", 503, "no_healthy_provider"), ("http_429_retry_after", 429, "rate_limited")],
)
def test_the_next_request_is_not_sent_to_a_provider_that_revoked_its_key_or_asked_for_quiet(
    http, faulty, upstream, acme, fault_id, status, code
):
    fault = next(f for f in FAULTS if f.id == fault_id)
    faulty("openai", fault)
    assert ask(http, stream=False).status == fault.status
    reply = ask(http, stream=False)
    assert reply.status == status and reply.body["error"]["code"] == code
    assert reply.body["error"]["details"]["attempts"] == []
    if status == 429:  # the rest of the upstream's Retry-After
        assert reply.headers["retry-after"] == "5"
    assert upstream.counts("a")["chat"] == 1


TRICKLES = [
    # Each chunk 300 ms after the last: the first is out at once, the rest outlive the clock.
    pytest.param("openai", {"chunk_delay_ms": 300}, id="openai-slow_chunks"),
    pytest.param("anthropic", {"chunk_delay_ms": 300}, id="anthropic-slow_chunks"),
    # One byte per millisecond: the first event arrives well within the clock, the
    # whole answer (a few KiB) could not.
    pytest.param("openai", {"failure_rate": 1.0, "failure_kind": "drip", "drip_ms": 1}, id="openai-drip"),
    pytest.param("anthropic", {"failure_rate": 1.0, "failure_kind": "drip", "drip_ms": 1}, id="anthropic-drip"),
]


@pytest.mark.parametrize(("kind", "behaviour"), TRICKLES)
def test_a_stream_trickling_past_the_providers_clock_ends_in_time_with_one_error_event(
    http, acme, make_provider, upstream, kind, behaviour
):
    upstream.configure("a", **behaviour)
    make_provider(
        acme, name="a", type=kind, base_url=upstream.base_url("a", kind), api_key="sk-test-aaaa1111",
        timeout_seconds=TIMEOUT,
    )  # fmt: skip
    reply = ask(http, stream=True)
    assert TIMEOUT <= reply.elapsed <= TIMEOUT + SLACK, f"took {reply.elapsed:.3f} s"
    assert_broken_stream(reply, the_record(acme), r"stalled \(total deadline\)")


@pytest.mark.parametrize("failure_kind", ["cut", "no_end", "stream_error"])
def test_a_stream_broken_midway_on_the_anthropic_surface_ends_with_one_error_event(
    http, faulty, healthy, upstream, acme, failure_kind
):
    faulty("anthropic", Fault(failure_kind, "stream_error", {"failure_kind": failure_kind}))
    body = {"model": "auto", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    started = time.perf_counter()
    with http.stream("POST", "/v1/messages", json=body) as r:
        names = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert time.perf_counter() - started <= DEADLINE + SLACK
    assert r.status_code == 200 and r.headers["x-axonflow-provider"] == "a"
    assert names[0] == "message_start" and "content_block_delta" in names
    assert names[-1] == "error" and names.count("error") == 1 and "message_stop" not in names
    assert upstream.counts("b") == {}
    record = the_record(acme)
    assert (record.endpoint, record.error_code) == ("messages", "upstream_error")
    assert tried(record.attempts) == [("a", "stream_error", False)]
