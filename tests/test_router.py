"""The router's failover loop, against scripted providers (no network) and against the
fake upstream through the real OpenAI adapter."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator

import pytest

from axonflow_site.errors import NoHealthyProvider, RateLimited, UpstreamFailed
from providers.adapters.base import (
    Chunk,
    CompletionRequest,
    CompletionResponse,
    Message,
    ProviderConnectError,
    ProviderError,
    ProviderTimeout,
    Usage,
    classify,
)
from providers.models import ProviderConfig
from providers.registry import register_factory
from routing import router
from routing.cache import TenantSnapshot
from routing.health import breaker
from routing.ratelimit import LocalLimiter
from routing.selection import RoutingOptions
from usage.writer import writer as usage_writer

SCRIPTS: dict[str, list] = {}
CALLS: list[str] = []


class ScriptedProvider:
    """Answers from SCRIPTS[name]: each item is a reply text, an exception to raise, or
    for streams a list of deltas/exceptions. The last item repeats."""

    type = "custom"
    supports_streaming = True

    def __init__(self, config: ProviderConfig):
        self.config = config
        self.name = config.name

    def _next(self):
        CALLS.append(self.name)
        script = SCRIPTS[self.name]
        return script.pop(0) if len(script) > 1 else script[0]

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        step = self._next()
        if isinstance(step, Exception):
            raise step
        return CompletionResponse(step, f"{self.name}-model", "stop", Usage(3, 5), id="x")

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        step = self._next()
        for piece in step if isinstance(step, list) else [step]:
            if isinstance(piece, Exception):
                raise piece
            yield Chunk(delta=piece, model=f"{self.name}-model")
        yield Chunk(finish_reason="stop", usage=Usage(3, 5))


@pytest.fixture(autouse=True)
def scripted(monkeypatch):
    # Passive health is routing/health/breaker.py's business (tests/test_health*.py); here it is
    # a recorder, so circuits opened by one case cannot leak into the next.
    monkeypatch.setattr(breaker, "record_attempt", lambda *args, **kw: None)
    monkeypatch.setattr(breaker, "is_circuit_open", lambda provider_id: False)
    register_factory("scripted", ScriptedProvider)
    SCRIPTS.clear()
    CALLS.clear()
    yield
    SCRIPTS.clear()


def snapshot_of(*specs: dict, store_prompts=False) -> TenantSnapshot:
    configs = []
    for i, spec in enumerate(specs, start=1):
        spec = dict(spec)
        SCRIPTS[spec["name"]] = spec.pop("script", ["hello"])
        config = ProviderConfig(pk=i, tenant_id=1, type="custom", model="m", settings={"factory": "scripted"}, **spec)
        configs.append(config)
    return TenantSnapshot(1, "acme", "enterprise", store_prompts, tuple(configs), time.monotonic() + 60)


REQUEST = CompletionRequest(messages=[Message("user", "hi")])
CALLER = router.Caller(tenant_id=1, token_id=None)


def err500(name="p") -> ProviderError:
    return classify(name, 500, "boom")


async def route(snapshot, options=RoutingOptions(), **kw):
    return await router.complete(snapshot, REQUEST, options, CALLER, rng=random.Random(0), **kw)


async def test_it_returns_the_response_and_the_route():
    result = await route(snapshot_of({"name": "a", "script": ["hello there"]}))
    assert result.response.content == "hello there"
    assert result.provider_name == "a"
    assert result.route()["attempts"] == [
        {
            "provider": "a",
            "model": "m",
            "outcome": "success",
            "status_code": 200,
            "latency_ms": pytest.approx(0, abs=50),
            "error": "",
        }
    ]


@pytest.mark.parametrize(
    "failure",
    [
        err500(),
        classify("p", 429, "slow down", {"retry-after": "2"}),
        ProviderTimeout("p", "t"),
        ProviderConnectError("p", "c"),
    ],
    ids=["500", "429", "timeout", "connect"],
)
async def test_it_fails_over_on_retryable_errors(failure):
    snap = snapshot_of({"name": "bad", "priority": 1, "script": [failure]}, {"name": "good", "script": ["ok"]})
    result = await route(snap)
    assert result.provider_name == "good"
    assert [a.outcome for a in result.attempts] == [failure.outcome, "success"]
    assert CALLS == ["bad", "good"]


async def test_a_non_retryable_error_returns_at_once():
    snap = snapshot_of({"name": "bad", "priority": 1, "script": [classify("bad", 400, "bad param")]}, {"name": "good"})
    with pytest.raises(UpstreamFailed) as info:
        await route(snap)
    assert CALLS == ["bad"]
    assert info.value.details["attempts"][0]["status_code"] == 400


async def test_all_failing_gives_upstream_error_with_every_attempt():
    snap = snapshot_of({"name": "a", "script": [err500()]}, {"name": "b", "script": [err500()]})
    with pytest.raises(UpstreamFailed) as info:
        await route(snap)
    assert info.value.http_status == 502
    attempts = info.value.details["attempts"]
    # Each provider once, then (no other candidate left) each re-sent once after a backoff.
    assert sorted(a["provider"] for a in attempts[:2]) == ["a", "b"]
    assert [a["provider"] for a in attempts[2:]] == [a["provider"] for a in attempts[:2]]
    assert [a.get("retry", False) for a in attempts] == [False, False, True, True]
    assert all(50 <= a["waited_ms"] <= 100 for a in attempts[2:])


async def test_disable_failover_makes_the_first_failure_final():
    snap = snapshot_of({"name": "a", "script": [err500()]}, {"name": "b"})
    with pytest.raises(UpstreamFailed) as info:
        await route(snap, RoutingOptions(preferred_provider="a", disable_failover=True))
    assert [a["provider"] for a in info.value.details["attempts"]] == ["a"]
    assert CALLS == ["a"]


async def test_each_provider_is_tried_at_most_once():
    snap = snapshot_of(*[{"name": f"p{i}", "script": [err500()]} for i in range(4)])
    with pytest.raises(UpstreamFailed):
        await route(snap)
    assert sorted(CALLS) == ["p0", "p1", "p2", "p3"]


async def test_no_candidate_gives_no_healthy_provider():
    snap = snapshot_of({"name": "a", "health_status": "unhealthy"}, {"name": "b", "enabled": False})
    with pytest.raises(NoHealthyProvider) as info:
        await route(snap)
    assert info.value.http_status == 503
    assert CALLS == []


async def test_an_open_circuit_keeps_a_provider_out(monkeypatch):
    monkeypatch.setattr(breaker, "is_circuit_open", lambda provider_id: provider_id == 1)
    snap = snapshot_of({"name": "tripped", "priority": 5}, {"name": "other"})
    result = await route(snap)
    assert CALLS == ["other"] and result.provider_name == "other"


async def test_a_provider_over_its_rate_limit_is_skipped():
    snap = snapshot_of({"name": "limited", "priority": 1, "rate_limit": 1}, {"name": "other"})
    limiter = LocalLimiter()
    first = await route(snap, limiter=limiter)
    second = await route(snap, limiter=limiter)
    assert (first.provider_name, second.provider_name) == ("limited", "other")
    assert [a.outcome for a in second.attempts] == ["rate_limited", "success"]


async def test_every_candidate_limited_gives_429_with_retry_after():
    snap = snapshot_of({"name": "a", "rate_limit": 1}, {"name": "b", "rate_limit": 2})
    limiter = LocalLimiter()
    for _ in range(3):
        await route(snap, limiter=limiter)
    with pytest.raises(RateLimited) as info:
        await route(snap, limiter=limiter)
    assert info.value.http_status == 429
    assert int(info.value.headers["Retry-After"]) >= 1
    assert len(CALLS) == 3


async def test_every_attempt_is_reported_to_health(monkeypatch):
    seen = []
    monkeypatch.setattr(breaker, "record_attempt", lambda t, p, ok, ms, error="": seen.append((p, ok)))
    snap = snapshot_of({"name": "a", "priority": 1, "script": [err500()]}, {"name": "b"})
    await route(snap)
    assert seen == [(1, False), (2, True)]


async def test_a_bad_request_does_not_count_against_the_providers_health(monkeypatch):
    seen = []
    monkeypatch.setattr(breaker, "record_attempt", lambda t, p, ok, ms, error="": seen.append(ok))
    with pytest.raises(UpstreamFailed):
        await route(snapshot_of({"name": "a", "script": [classify("a", 400, "bad")]}))
    assert seen == [True]


async def test_a_provider_that_cannot_be_built_is_failed_over():
    snap = snapshot_of({"name": "broken", "priority": 1}, {"name": "ok"})
    snap.configs[0].settings = {"factory": "no-such-factory"}
    result = await route(snap)
    assert [a.outcome for a in result.attempts] == ["invalid_config", "success"]


async def test_success_and_failure_both_reach_the_usage_queue():
    await route(snapshot_of({"name": "a"}))
    with pytest.raises(UpstreamFailed):
        await route(snapshot_of({"name": "a", "script": [err500()]}))
    entries = list(usage_writer.pending)
    assert [(e.status, e.provider_name) for e in entries] == [("success", "a"), ("error", "a")]
    assert entries[0].prompt_tokens == 3 and entries[0].completion_tokens == 5
    assert entries[0].prompt is None


async def test_prompts_are_kept_only_when_the_tenant_opts_in():
    caller = router.Caller(tenant_id=1, store_prompts=True)
    await router.complete(snapshot_of({"name": "a"}), REQUEST, RoutingOptions(), caller)
    assert usage_writer.pending[-1].prompt == "user: hi"


# --- streams ----------------------------------------------------------------------------


async def collect(stream: router.RouteStream) -> list[str]:
    return [c.delta async for c in stream.chunks()]


async def test_a_stream_fails_over_before_the_first_chunk():
    snap = snapshot_of({"name": "bad", "priority": 1, "script": [[err500()]]}, {"name": "good", "script": [["a", "b"]]})
    stream = await router.open_stream(snap, REQUEST, RoutingOptions(), CALLER)
    assert stream.provider_name == "good"
    assert await collect(stream) == ["a", "b", ""]
    assert [a.outcome for a in stream.attempts] == ["http_500", "success"]
    assert usage_writer.pending[-1].status == "success"


async def test_a_stream_broken_after_the_first_chunk_ends_with_an_error_not_a_failover():
    snap = snapshot_of({"name": "flaky", "priority": 1, "script": [["a", err500()]]}, {"name": "other"})
    stream = await router.open_stream(snap, REQUEST, RoutingOptions(), CALLER)
    seen = []
    with pytest.raises(router.StreamFailed) as info:
        async for chunk in stream.chunks():
            seen.append(chunk.delta)
    assert seen == ["a"]
    assert CALLS == ["flaky"]
    assert info.value.error.code == "upstream_error"
    assert usage_writer.pending[-1].status == "error"


async def test_a_stream_with_nothing_eligible_raises_before_any_byte():
    with pytest.raises(NoHealthyProvider):
        await router.open_stream(snapshot_of({"name": "a", "enabled": False}), REQUEST, RoutingOptions(), CALLER)
