"""Budgets hold exactly across instances (issue 14, Must-shows 1, 3 and 5): two server
processes on one PostgreSQL and one Redis (tests/test_two_instances.py's stack).

Prices make costs exact: provider p0 charges nothing for input and $1 per 1K output
tokens, the fake upstream answers 1 prompt and 10 completion tokens, and every request
asks for `max_tokens` 10: each reserves and costs exactly $0.01 and 11 tokens.
"""

from __future__ import annotations

import asyncio
import signal
import time
from decimal import Decimal

import aiohttp
import httpx
import pytest

from tests.conftest import requires_postgres, requires_redis
from tests.test_two_instances import two_instances

pytestmark = [requires_postgres, requires_redis, pytest.mark.postgres, pytest.mark.redis]

BODY = {"model": "p0", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}
HOLD_SECONDS = 4


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    with two_instances(tmp_path_factory.mktemp("budgets"), AXONFLOW_BUDGET_HOLD_SECONDS=str(HOLD_SECONDS)) as stack:
        stack.a.patch("p0", cost_input_per_1k="0", cost_output_per_1k="1")
        yield stack


@pytest.fixture
def fresh(pair):
    """No budgets, the fake's counts at zero and its answers at 1 + 10 tokens."""
    put_budgets(pair, [])
    pair.fake("reset")
    pair.fake("p0", token_counts=[1, 10])
    return pair


def put_budgets(stack, budgets: list[dict]) -> None:
    r = stack.a.client.put("/api/v1/budgets/", json={"budgets": budgets})
    assert r.status_code == 200, r.text


def new_token(stack, name: str) -> tuple[int, str]:
    r = stack.a.client.post("/api/v1/tokens/", json={"name": name, "scope": "completions"})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["token"]


async def storm(urls: list[str], token: str, count: int) -> list[tuple[int, str]]:
    """`count` requests at once, alternating between the instances: (status, error code)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": f"Bearer {token}"}) as session:

        async def one(i: int) -> tuple[int, str]:
            async with session.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=BODY) as r:
                body = await r.json()
                return r.status, (body.get("error") or {}).get("code", "")

        return await asyncio.gather(*(one(i) for i in range(count)))


def urls(stack) -> list[str]:
    return [str(stack.a.client.base_url).rstrip("/"), str(stack.b.client.base_url).rstrip("/")]


def budget_standing(stack, name: str) -> dict:
    listed = stack.b.client.get("/api/v1/budgets/").json()["budgets"]
    return next(b for b in listed if b["name"] == name)


def settled(stack, name: str, requests: int, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        standing = budget_standing(stack, name)
        if standing["requests"] >= requests or time.monotonic() > deadline:
            return standing
        time.sleep(0.1)


def usage_cost(stack) -> Decimal:
    return Decimal(str(stack.b.client.get("/api/v1/usage/").json()["totals"]["cost"]))


def test_500_concurrent_requests_on_two_instances_spend_exactly_the_budget(fresh):
    put_budgets(fresh, [{"name": "dollar", "limit_usd": "1.00"}])
    _, token = new_token(fresh, "storm-usd")
    results = asyncio.run(storm(urls(fresh), token, 500))
    assert sum(1 for status, _ in results if status == 200) == 100
    refused = [code for status, code in results if status != 200]
    assert len(refused) == 400 and set(refused) == {"budget_exceeded"}
    assert fresh.upstream_requests("p0") == 100  # none of the 400 reached the upstream
    standing = settled(fresh, "dollar", 100)
    assert (standing["spent_usd"], standing["requests"]) == ("1.00000000", 100)
    assert usage_cost(fresh) == Decimal("1.00")


def test_a_token_limit_on_one_api_token_holds_the_same_way(fresh):
    token_id, token = new_token(fresh, "storm-tokens")
    put_budgets(fresh, [{"name": "tokens", "token_id": token_id, "limit_tokens": 1100}])  # 100 × 11 tokens
    results = asyncio.run(storm(urls(fresh), token, 500))
    assert [status for status, _ in results].count(200) == 100
    assert {code for status, code in results if status != 200} == {"budget_exceeded"}
    assert fresh.upstream_requests("p0") == 100
    standing = settled(fresh, "tokens", 100)
    assert (standing["spent_tokens"], standing["requests"]) == (1100, 100)


def test_holds_of_a_killed_process_expire_and_the_budget_is_whole_again(tmp_path_factory):
    """Must-show 3, on a stack of its own (one instance is killed): ten slow requests
    hold the whole budget on b; b is killed with SIGKILL; a refuses until the holds
    expire, then serves; spend equals the usage records."""
    with two_instances(tmp_path_factory.mktemp("killed"), AXONFLOW_BUDGET_HOLD_SECONDS=str(HOLD_SECONDS)) as stack:
        stack.a.patch("p0", cost_input_per_1k="0", cost_output_per_1k="1")
        stack.fake("p0", token_counts=[1, 10], latency_ms=30_000)
        put_budgets(stack, [{"name": "small", "limit_usd": "0.10"}])
        _, token = new_token(stack, "killed")
        b_url = str(stack.b.client.base_url).rstrip("/")

        async def hold_then_kill() -> None:
            session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})
            tasks = [asyncio.ensure_future(session.post(f"{b_url}/v1/chat/completions", json=BODY)) for _ in range(10)]
            deadline = time.monotonic() + 10
            while stack.upstream_requests("p0") < 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stack.b.process.send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()

        asyncio.run(hold_then_kill())
        killed_at = time.monotonic()
        assert stack.b.process.wait(10) == -signal.SIGKILL
        stack.fake("p0", token_counts=[1, 10], latency_ms=0)
        a = httpx.Client(base_url=str(stack.a.client.base_url), headers={"Authorization": f"Bearer {token}"}, timeout=30)
        held = a.post("/v1/chat/completions", json=BODY)
        assert held.status_code == 429 and held.json()["error"]["code"] == "budget_exceeded"
        time.sleep(max(0.0, killed_at + HOLD_SECONDS + 0.5 - time.monotonic()))
        assert [a.post("/v1/chat/completions", json=BODY).status_code for _ in range(10)] == [200] * 10
        assert a.post("/v1/chat/completions", json=BODY).status_code == 429
        a.close()
        deadline = time.monotonic() + 15
        while True:
            listed = stack.a.client.get("/api/v1/budgets/").json()["budgets"][0]
            if listed["requests"] >= 10 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert listed["spent_usd"] == "0.10000000"
        totals = stack.a.client.get("/api/v1/usage/").json()["totals"]
        assert Decimal(str(totals["cost"])) == Decimal("0.10")


def test_the_ledger_rebuilds_redis_after_its_keys_are_lost(fresh):
    """Redis restarted (its budget keys gone): the book is rebuilt from the durable
    ledger, so what was spent stays spent."""
    import redis
    from django.conf import settings

    put_budgets(fresh, [{"name": "rebuilt", "limit_usd": "0.05"}])
    _, token = new_token(fresh, "rebuilt")
    with httpx.Client(base_url=urls(fresh)[0], headers={"Authorization": f"Bearer {token}"}, timeout=30) as a:
        assert [a.post("/v1/chat/completions", json=BODY).status_code for _ in range(3)] == [200] * 3
        settled(fresh, "rebuilt", 3)
        bus = redis.Redis.from_url(settings.REDIS_URL)
        for key in bus.scan_iter(f"{fresh.prefix}:budget:*"):
            bus.delete(key)
        bus.close()
        assert [a.post("/v1/chat/completions", json=BODY).status_code for _ in range(3)] == [200, 200, 429]


def test_a_tokens_30_requests_a_minute_admit_exactly_30_of_100_across_instances(fresh):
    """Must-show 5: the per-token window is shared through Redis."""
    r = fresh.a.client.post("/api/v1/tokens/", json={"name": "rpm", "scope": "completions", "rpm_limit": 30})
    assert r.status_code == 201, r.text
    results = asyncio.run(storm(urls(fresh), r.json()["token"], 100))
    assert [status for status, _ in results].count(200) == 30
    assert {code for status, code in results if status != 200} == {"rate_limited"}
    assert fresh.upstream_requests("p0") == 30
