"""Every fault the fake upstream can inject, against every adapter: each one comes out of
complete(), stream() and embed() as the ProviderError the router needs (its class,
retryable flag, status and Retry-After), within the deadline, with no key in it.

The bug this guards against above all: a streamed answer that ends silently truncated.
A stream without its end marker must raise after the chunks it delivered, never end
as if the answer were whole. The adapters under test are tests/test_adapter_contract.py's CASES.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from providers import registry
from providers.adapters.base import (
    CompletionRequest,
    EmbeddingRequest,
    MalformedResponse,
    Message,
    ProviderConnectError,
    ProviderError,
    ProviderTimeout,
)
from tests.fixtures_upstream import closed_port
from tests.test_adapter_contract import CASES, Case

pytestmark = pytest.mark.usefixtures("http_session")

# The total deadline (timeout_seconds). Validation takes whole seconds from 1 up; the
# adapters' clocks take any float, and half a second keeps this file fast.
TIMEOUT = 0.5
SLACK = 1.0  # what a loaded test machine may add to a deadline
REQUEST = CompletionRequest(messages=[Message("user", "Tell the fault tests a few words")], max_tokens=64)
EMBEDDING = EmbeddingRequest(["one text to embed"])
HTTP_BODY = (None, 200)  # a body fault's status: none, or the 200 it came with


@dataclass(frozen=True)
class Fault:
    """One fault: the Behaviour that injects it (every request of the label fails), or the
    dead `address` dialled instead of the fake ("refused", "unaccepting"); what complete()
    and embed() raise (`error`) and what a stream raises (`streamed`, the same by default).
    `retryable` None leaves the flag to base.classify; `timed` faults wait out the deadline."""

    id: str
    behaviour: dict[str, Any] = field(default_factory=dict)
    error: type[ProviderError] = ProviderError
    streamed: type[ProviderError] | None = None
    statuses: tuple[int | None, ...] = (None,)
    retryable: bool | None = True
    retry_after: float | None = None
    address: str = ""
    timed: bool = False

    def failing(self) -> dict[str, Any]:
        return {"failure_rate": 1.0, **self.behaviour} if "failure_kind" in self.behaviour else self.behaviour


FAULTS = [
    Fault("connect_refused", error=ProviderConnectError, address="refused"),
    Fault("connect_timeout", error=ProviderTimeout, address="unaccepting", timed=True),
    Fault("reset", {"failure_kind": "reset"}, ProviderConnectError),
    Fault("slow_first_byte", {"latency_ms": 5000}, ProviderTimeout, timed=True),
    # One byte every 50 ms never trips a per-read timeout; only the total deadline ends it.
    Fault("drip", {"failure_kind": "drip", "drip_ms": 50}, ProviderTimeout, timed=True),
    Fault("stall", {"failure_kind": "stall", "cut_after": 1}, ProviderTimeout, timed=True),
    Fault("http_500", {"failure_kind": "500"}, statuses=(500,)),
    Fault("http_502", {"failure_kind": "502"}, statuses=(502,)),
    Fault("http_503", {"failure_kind": "503"}, statuses=(503,)),
    Fault("http_429", {"failure_kind": "429", "retry_after": "2.5"}, statuses=(429,), retry_after=2.5),
    Fault("http_401_revoked_key", {"failure_kind": "401"}, statuses=(401,), retryable=None),
    Fault("malformed_json", {"failure_kind": "malformed"}, MalformedResponse, statuses=HTTP_BODY),
    Fault("missing_fields", {"failure_kind": "missing_fields"}, MalformedResponse, statuses=HTTP_BODY),
    Fault("cut", {"failure_kind": "cut"}, ProviderConnectError),
    Fault("no_end", {"failure_kind": "no_end"}, ProviderConnectError, streamed=MalformedResponse),
]
# What a missing_fields error names, by adapter type and call (never a key, never a KeyError).
MISSING = {
    "openai": {"complete": "choices", "stream": "choices", "embed": "data"},
    "custom": {"complete": "choices", "stream": "choices", "embed": "data"},
    "anthropic": {"complete": "content", "stream": "message"},
    "ollama": {"complete": "message", "stream": "message", "embed": "embeddings"},
    "gemini": {"complete": "candidates", "stream": "candidates", "embed": "embeddings"},
    "bedrock": {"complete": "output", "stream": "delta", "embed": "embedding"},
}
# Anthropic has no embeddings API; the timed faults are the HTTP client's, proven by chat.
EMBED_CASES = [c for c in CASES if c.type != "anthropic"]
EMBED_FAULTS = [f for f in FAULTS if not f.timed]


def build(case: Case, fault: Fault, upstream, request) -> Any:
    for name, value in case.env.items():
        request.getfixturevalue("monkeypatch").setenv(name, value)
    base_url = upstream.base_url(case.id, case.type)
    if fault.address == "refused":
        base_url = base_url.replace(upstream.url, f"http://127.0.0.1:{closed_port()}")
    elif fault.address == "unaccepting":
        port = request.getfixturevalue("unaccepting_port")
        base_url = base_url.replace(upstream.url, f"http://127.0.0.1:{port}")
    else:
        upstream.configure(case.id, **fault.failing())
    return registry.build(case.config(upstream, base_url=base_url, timeout_seconds=TIMEOUT))


def assert_fault(error: BaseException, expected: type[ProviderError], fault: Fault, case: Case, elapsed: float, logs):
    assert isinstance(error, expected), f"{type(error).__name__}: {error}"
    assert error.status_code in fault.statuses
    if fault.retryable is not None:
        assert error.retryable is fault.retryable
    assert error.retry_after == fault.retry_after
    assert elapsed < TIMEOUT + SLACK
    if fault.timed:
        assert elapsed >= TIMEOUT * 0.9  # the deadline ended it, not something sooner
    for text in (str(error), error.message, repr(error), logs):
        assert case.leak not in text


def ids(values) -> list[str]:
    return [value.id for value in values]


@pytest.mark.parametrize("fault", FAULTS, ids=ids(FAULTS))
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
async def test_it_turns_every_fault_of_a_completion_into_its_provider_error(case, fault, upstream, request, caplog):
    caplog.set_level(logging.DEBUG)
    provider = build(case, fault, upstream, request)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await provider.complete(REQUEST)
    assert_fault(caught.value, fault.error, fault, case, time.monotonic() - started, caplog.text)
    if fault.id == "missing_fields":
        assert MISSING[case.type]["complete"] in caught.value.message


@pytest.mark.parametrize("fault", FAULTS, ids=ids(FAULTS))
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
async def test_it_ends_every_faulty_stream_with_an_error_never_a_short_answer(case, fault, upstream, request, caplog):
    caplog.set_level(logging.DEBUG)
    provider = build(case, fault, upstream, request)
    received = []
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        async for chunk in provider.stream(REQUEST):
            received.append(chunk)
    assert_fault(caught.value, fault.streamed or fault.error, fault, case, time.monotonic() - started, caplog.text)
    assert not any(chunk.finish_reason for chunk in received)
    if fault.id == "no_end":
        # The content came, then the error: raised from the iterator, after the chunks.
        assert "".join(chunk.delta for chunk in received)
    if fault.id == "missing_fields":
        assert MISSING[case.type]["stream"] in caught.value.message


@pytest.mark.parametrize("fault", EMBED_FAULTS, ids=ids(EMBED_FAULTS))
@pytest.mark.parametrize("case", EMBED_CASES, ids=ids(EMBED_CASES))
async def test_it_turns_every_fault_of_an_embedding_into_its_provider_error(case, fault, upstream, request, caplog):
    caplog.set_level(logging.DEBUG)
    provider = build(case, fault, upstream, request)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await provider.embed(EMBEDDING)
    assert_fault(caught.value, fault.error, fault, case, time.monotonic() - started, caplog.text)
    if fault.id == "missing_fields":
        assert MISSING[case.type]["embed"] in caught.value.message
