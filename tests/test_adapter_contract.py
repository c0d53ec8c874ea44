"""The same behaviour asked of every adapter, against the fake upstream (the NetBox
test-mixin idea): completion, stream, usage and cost, every failure kind mapped to
retryable or final, the four clocks, health probes, and no key leaking anywhere.

Adding an adapter is adding one `Case` to CASES.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from providers import pricing, registry
from providers.adapters.base import (
    CompletionRequest,
    MalformedResponse,
    Message,
    ProviderConnectError,
    ProviderError,
    ProviderTimeout,
)
from providers.fake_upstream.bedrock import TEST_CREDENTIALS
from tests.fixtures_upstream import assert_stream_matches_completion, closed_port, make_config, stream_until_error

pytestmark = pytest.mark.usefixtures("http_session")


@dataclass(frozen=True)
class Case:
    """One adapter under contract. `secret` is what must never leak (defaults to `key`);
    `env` is set for the test (e.g. AWS credentials); `fields` are extra ProviderConfig
    fields (prices for models the table does not know)."""

    id: str
    type: str
    model: str
    key: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    secret: str = ""

    def config(self, upstream, label: str | None = None, *, base_url: str | None = None, settings=None, **fields):
        label = self.id if label is None else label
        return make_config(
            self.type,
            base_url or upstream.base_url(label, self.type),
            self.key,
            name=self.id,
            model=self.model,
            settings={**self.settings, **(settings or {})},
            **{**self.fields, **fields},
        )

    @property
    def leak(self) -> str:
        return self.secret or self.key


BEDROCK_KEY_ID, BEDROCK_SECRET = next(iter(TEST_CREDENTIALS.items()))

CASES = [
    Case("openai", "openai", "gpt-4o-mini", key="sk-test-openai-0123456789abcdef"),
    Case("anthropic", "anthropic", "claude-3-5-haiku-20241022", key="sk-ant-test-0123456789abcdef"),
    Case(
        "custom",
        "custom",
        "meta-llama/Llama-3.1-8B-Instruct",
        key="custom-key-0123456789abcdef",
        settings={"headers": {"X-Team": "search"}},
        fields={"cost_input_per_1k": Decimal("0.0002"), "cost_output_per_1k": Decimal("0.0004")},
    ),
    # Ollama's table price is 0, so an operator price makes cost observable; the key
    # is for an authenticating proxy in front of Ollama.
    Case(
        "ollama",
        "ollama",
        "llama3.2",
        key="ollama-proxy-key-0123456789abcdef",
        fields={"cost_input_per_1k": Decimal("0.0001"), "cost_output_per_1k": Decimal("0.0002")},
    ),
    Case("gemini", "gemini", "gemini-2.5-flash", key="AIzaSy-test-gemini-0123456789abcdef"),
    # Explicit keys (settings + the encrypted secret); the credential chain is covered in
    # tests/test_adapter_bedrock.py. The fake verifies SigV4 signatures for this key pair.
    Case(
        "bedrock",
        "bedrock",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        key=BEDROCK_SECRET,
        settings={"aws_access_key_id": BEDROCK_KEY_ID},
        fields={"region": "us-east-1"},
    ),
]

REQUEST = CompletionRequest(
    messages=[Message("user", "Say hello to the contract tests")], system="Be brief.", max_tokens=64
)


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request, monkeypatch):
    for name, value in request.param.env.items():
        monkeypatch.setenv(name, value)
    return request.param


def build(case: Case, upstream, **kwargs):
    return registry.build(case.config(upstream, **kwargs))


async def collect(provider, request=REQUEST):
    return [chunk async for chunk in provider.stream(request)]


async def test_it_completes_with_usage_and_cost(case, upstream):
    provider = build(case, upstream)
    response = await provider.complete(REQUEST)
    assert response.content == "Echo: Say hello to the contract tests"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    cost = pricing.actual_cost(provider.config, response.usage, response.model or case.model)
    in_price, out_price = pricing.prices_for(provider.config, case.model)
    expected = (in_price * response.usage.prompt_tokens + out_price * response.usage.completion_tokens) / 1000
    assert cost > 0 and cost == expected.quantize(Decimal("0.00000001"))
    assert upstream.counts(case.id)["chat"] == 1


async def test_its_stream_assembles_into_the_completion_text(case, upstream):
    await assert_stream_matches_completion(build(case, upstream), REQUEST)


async def test_max_tokens_reached_is_reported_as_length(case, upstream):
    provider = build(case, upstream)
    request = CompletionRequest(messages=[Message("user", "one two three four five")], max_tokens=2)
    response = await provider.complete(request)
    assert response.finish_reason == "length"
    chunks = await collect(provider, request)
    assert chunks[-1].finish_reason == "length"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [("500", True), ("503", True), ("429", True), ("400", False), ("401", True), ("403", True), ("404", False)],
)
async def test_http_errors_are_retryable_or_final(case, upstream, status, retryable):
    upstream.configure(case.id, failure_kind=status, fail_next=2, retry_after="3")
    provider = build(case, upstream)
    with pytest.raises(ProviderError) as exc:
        await provider.complete(REQUEST)
    assert (exc.value.status_code, exc.value.retryable) == (int(status), retryable)
    assert exc.value.message  # the upstream's message travels with the error
    if status == "429":
        assert exc.value.retry_after == 3.0
    # A stream fails the same way, before its first chunk (so the router can fail over).
    with pytest.raises(ProviderError) as exc:
        await collect(provider)
    assert (exc.value.status_code, exc.value.retryable) == (int(status), retryable)


async def test_a_silent_upstream_trips_the_first_byte_clock(case, upstream):
    upstream.configure(case.id, failure_kind="timeout", fail_next=2)
    provider = build(case, upstream, settings={"first_byte_timeout": 0.3})
    with pytest.raises(ProviderTimeout) as exc:
        await provider.complete(REQUEST)
    assert exc.value.retryable
    with pytest.raises(ProviderTimeout):
        await collect(provider)


async def test_a_malformed_body_is_retryable(case, upstream):
    upstream.configure(case.id, failure_kind="malformed", fail_next=1)
    with pytest.raises(MalformedResponse) as exc:
        await build(case, upstream).complete(REQUEST)
    assert exc.value.retryable


@pytest.mark.parametrize("cut_after", [2, 3])
async def test_a_malformed_stream_line_is_retryable(case, upstream, cut_after):
    upstream.configure(case.id, failure_kind="malformed", fail_next=1, cut_after=cut_after)
    error, _ = await stream_until_error(build(case, upstream).stream(REQUEST), MalformedResponse)
    assert error.retryable


@pytest.mark.parametrize("cut_after", [2, 3])
async def test_a_cut_stream_is_an_error_not_a_short_answer(case, upstream, cut_after):
    upstream.configure(case.id, failure_kind="cut", fail_next=1, cut_after=cut_after)
    error, seen = await stream_until_error(build(case, upstream).stream(REQUEST))
    assert error.retryable
    assert not any(c.finish_reason for c in seen)


async def test_a_body_cut_mid_way_is_retryable(case, upstream):
    upstream.configure(case.id, failure_kind="cut", fail_next=1)
    with pytest.raises(ProviderError) as exc:
        await build(case, upstream).complete(REQUEST)
    assert exc.value.retryable


async def test_a_stalled_stream_trips_the_idle_clock(case, upstream):
    upstream.configure(case.id, failure_kind="stall", fail_next=1, cut_after=3)
    with pytest.raises(ProviderTimeout) as exc:
        await collect(build(case, upstream, settings={"idle_timeout": 0.3}))
    assert "idle" in exc.value.message


async def test_the_total_deadline_stops_an_upstream_that_drips_bytes(case, upstream):
    # One byte every 50 ms never trips a per-read timeout; only the total deadline ends it.
    upstream.configure(case.id, failure_kind="drip", drip_ms=50, fail_next=2)
    provider = build(case, upstream, timeout_seconds=1)
    with pytest.raises(ProviderTimeout):
        await provider.complete(REQUEST)
    with pytest.raises(ProviderTimeout) as exc:
        await collect(provider)
    assert "total deadline" in exc.value.message


async def test_connect_refused_is_retryable(case, upstream):
    dead = f"http://127.0.0.1:{closed_port()}"
    provider = build(case, upstream, base_url=upstream.base_url(case.id, case.type).replace(upstream.url, dead))
    with pytest.raises(ProviderConnectError) as exc:
        await provider.complete(REQUEST)
    assert exc.value.retryable and exc.value.outcome == "connect_error"
    probe = await provider.health_check()
    assert not probe.ok


async def test_the_key_never_leaks_when_the_upstream_echoes_it(case, upstream, caplog):
    if not case.leak:
        pytest.skip("this adapter sends no secret")
    caplog.set_level(logging.DEBUG)
    upstream.configure(case.id, failure_kind="echo_key", fail_next=2)
    provider = build(case, upstream)
    with pytest.raises(ProviderError) as exc:
        await provider.complete(REQUEST)
    probe = await provider.health_check()
    assert exc.value.retryable and exc.value.status_code == 401  # fails over (SPEC §2 rule 4)
    for text in (str(exc.value), exc.value.message, repr(exc.value), probe.error, caplog.text):
        assert case.leak not in text
    assert "[REDACTED]" in exc.value.message


async def test_the_health_probe_is_one_cheap_request(case, upstream):
    probe = await build(case, upstream).health_check()
    assert probe.ok and probe.status_code == 200 and probe.latency_ms >= 0
    assert upstream.counts(case.id) == {"probe": 1, "total": 1}


async def test_a_failing_health_probe_reports_the_error(case, upstream):
    upstream.configure(case.id, failure_kind="503", failure_rate=1.0, failure_scope="probe")
    probe = await build(case, upstream).health_check()
    assert not probe.ok and probe.status_code == 503 and probe.error


async def test_estimate_cost_uses_the_configured_prices(case, upstream):
    provider = build(case, upstream)
    estimate = provider.estimate_cost(REQUEST)
    assert (estimate.input_cost_per_1k, estimate.output_cost_per_1k) == pricing.prices_for(provider.config, case.model)
    assert estimate.total_estimate > 0 and estimate.currency == "USD"


def test_it_describes_itself(case, upstream):
    provider = registry.build(case.config(upstream))
    assert provider.type == case.type and provider.name == case.id
    assert provider.supports_streaming and provider.capabilities().streaming
