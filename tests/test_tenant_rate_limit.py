"""The tenant's API rate limit (Tenant.api_rate_limit, requests per minute, 0 = unlimited):
every API request of the tenant, /v1 and /api/v1 alike, takes one from a token bucket
shared through Redis; over it, 429 `rate_limited` with Retry-After, before routing.

Issue 10, must show 5: two application processes sharing Redis, a limit of 60 a
minute, 200 concurrent requests: exactly 60 admitted, 140 refused with Retry-After."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from axonflow_site.errors import RateLimited
from routing import ratelimit
from routing.ratelimit import LocalLimiter, RedisLimiter, check_tenant, check_tenant_sync
from tenants.authentication import TokenIdentity
from tenants.models import TokenScope
from tests.conftest import TEST_KEYS, make_token, requires_postgres, requires_redis

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"
HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}


def identity(tenant_id: int = 1, limit: int = 3) -> TokenIdentity:
    return TokenIdentity(7, tenant_id, "acme", "community", "completions", "app", "axf_x", limit)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- in process ----------------------------------------------------------------------------------


async def test_a_tenant_gets_its_budget_then_429_with_retry_after():
    clock = FakeClock()
    ratelimit.set_limiter(LocalLimiter(clock))
    for _ in range(3):
        await check_tenant(identity(limit=3))
    with pytest.raises(RateLimited) as refused:
        await check_tenant(identity(limit=3))
    error = refused.value
    assert (error.http_status, error.code) == (429, "rate_limited")
    assert error.headers == {"Retry-After": "20"}  # 3 a minute: the next one in 20 s
    assert error.details == {"limit_per_minute": 3, "retry_after_seconds": 20}
    clock.now += 20
    await check_tenant(identity(limit=3))


def test_the_sync_check_shares_the_budget_and_never_says_retry_after_zero():
    clock = FakeClock()
    ratelimit.set_limiter(LocalLimiter(clock))
    for _ in range(60):
        check_tenant_sync(identity(limit=60))
    clock.now += 0.999
    with pytest.raises(RateLimited) as refused:
        check_tenant_sync(identity(limit=60))
    assert refused.value.headers["Retry-After"] == "1"


async def test_unlimited_tenants_cost_no_limiter_call():
    class Refusing:
        async def acquire(self, key, rate):
            raise AssertionError("no limiter call for an unlimited tenant")

    ratelimit.set_limiter(Refusing())
    for _ in range(1000):
        await check_tenant(identity(limit=0))
    check_tenant_sync(identity(limit=0))


async def test_tenants_have_separate_budgets():
    ratelimit.set_limiter(LocalLimiter(FakeClock()))
    await check_tenant(identity(tenant_id=1, limit=1))
    await check_tenant(identity(tenant_id=2, limit=1))
    with pytest.raises(RateLimited):
        await check_tenant(identity(tenant_id=1, limit=1))


# --- every API face, over real HTTP --------------------------------------------------------------


@pytest.fixture
def limited(acme):
    acme.api_rate_limit = 2
    acme.save()
    return acme


def assert_limited(response, openai_shape: bool = False) -> None:
    assert response.status_code == 429, response.text[:300]
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and error["details"]["limit_per_minute"] == 2
    if openai_shape:
        assert error["type"] == "rate_limit_error"


@pytest.mark.django_db(transaction=True)
def test_v1_counts_every_request_and_refuses_before_routing(gateway, limited, two, upstream):
    with gateway.client(make_token(limited, TokenScope.COMPLETIONS)) as client:
        assert client.get("/v1/models").status_code == 200
        assert client.post(CHAT, json=HELLO).status_code == 200
        refused = client.post(CHAT, json=HELLO)
    assert_limited(refused, openai_shape=True)
    assert sum(c.get("chat", 0) for c in upstream.stats().values()) == 1  # the refused one never left


@pytest.mark.django_db(transaction=True)
def test_the_rest_api_shares_the_same_budget(gateway, limited, two, upstream):
    with gateway.client(make_token(limited)) as client:
        assert client.post("/api/v1/completions", json={"prompt": "hi"}).status_code == 200
        assert client.get("/api/v1/providers/").status_code == 200
        assert_limited(client.post("/api/v1/completions", json={"prompt": "hi"}))
        assert_limited(client.get("/api/v1/providers/"))
        assert_limited(client.post("/api/v1/providers/a/health-check/"))
        assert_limited(client.post(CHAT, json=HELLO), openai_shape=True)


@pytest.mark.django_db(transaction=True)
def test_refusals_of_one_tenant_leave_others_and_anonymous_callers_alone(gateway, limited, globex, two):
    with gateway.client(make_token(limited)) as acme_client, gateway.client(make_token(globex)) as globex_client:
        with gateway.client("axf_not-a-token") as stranger:
            for _ in range(5):
                assert stranger.get("/api/v1/providers/").status_code == 401  # counts for nobody
        for _ in range(2):
            assert acme_client.get("/api/v1/providers/").status_code == 200
        assert_limited(acme_client.get("/api/v1/providers/"))
        assert all(globex_client.get("/api/v1/providers/").status_code == 200 for _ in range(5))
        assert globex_client.get("/api/schema/").status_code == 200


@requires_redis
@pytest.mark.django_db(transaction=True)
def test_sync_views_reach_the_shared_limiter_from_their_thread(gateway, limited):
    ratelimit.set_limiter(RedisLimiter(settings.REDIS_URL, f"test:rl:{uuid.uuid4().hex}:"))
    with gateway.client(make_token(limited)) as client:
        assert [client.get("/api/v1/providers/").status_code for _ in range(3)] == [200, 200, 429]


# --- must show 5: two processes sharing Redis -------------------------------------------------------

PROCESSES = 2
ATTEMPTS = 3
REQUESTS = 200
LIMIT = 60


def database_url() -> str:
    s = connection.settings_dict
    auth = quote(s["USER"] or "") + (f":{quote(s['PASSWORD'])}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_server(port: int, prefix: str) -> subprocess.Popen:
    """`uvicorn axonflow_site.asgi:application` as production runs it, on the test
    database (committed data) and the shared Redis, under its own key prefix."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "AXONFLOW_CHANNEL_PREFIX": prefix,
        "AXONFLOW_ENCRYPTION_KEYS": TEST_KEYS[0],
        "AXONFLOW_ALLOW_PRIVATE_BASE_URLS": "true",  # the fake upstream is on 127.0.0.1
        "AXONFLOW_HEALTH_IN_PROCESS": "false",
        "DEBUG": "true",
        "SECRET_KEY": settings.SECRET_KEY,  # the same token digests as this process
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "uvicorn", "axonflow_site.asgi:application", "--host", "127.0.0.1",
               "--port", str(port), "--lifespan", "on", "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_serving(process: subprocess.Popen, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the server on port {port} did not start")


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on its own connection: (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    return parse_response(raw)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


async def burst(ports: list[int], request: bytes, count: int) -> tuple[list[tuple], float]:
    """`count` requests at once, alternating between the servers: every connection is
    open before the first request is written. Returns (port, status, headers, body) for
    each, and the seconds from the first write to the last refusal received (all the
    limiter's decisions fall within them)."""
    opening = (asyncio.open_connection("127.0.0.1", ports[i % len(ports)]) for i in range(count))
    connections = await asyncio.gather(*opening)
    started, last_refusal = time.monotonic(), 0.0

    async def answer(reader) -> bytes:
        nonlocal last_refusal
        raw = await reader.read()
        if raw.startswith(b"HTTP/1.1 429"):
            last_refusal = time.monotonic()
        return raw

    for _, writer in connections:
        writer.write(request)
    answers = await asyncio.gather(*(answer(reader) for reader, _ in connections))
    results = []
    for i, ((_, writer), raw) in enumerate(zip(connections, answers, strict=True)):
        writer.close()
        results.append((ports[i % len(ports)], *parse_response(raw)))
    return results, max(0.0, last_refusal - started)


def chat_request(token: str) -> bytes:
    body = json.dumps(HELLO).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def get_request(path: str, token: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()


def admin_request(token: str) -> bytes:
    return get_request("/api/v1/providers/", token)


@requires_postgres
@requires_redis
@pytest.mark.django_db(transaction=True)
def test_two_processes_sharing_redis_admit_exactly_the_tenants_limit(acme, globex, make_provider, upstream):
    """The bucket refills one request a second, so "exactly 60" holds for a burst whose
    decisions all fall within a second; on a machine too busy to deliver 200 requests that
    fast, the burst is repeated (with a fresh budget) up to ATTEMPTS times."""
    import redis

    acme.api_rate_limit = LIMIT
    acme.save()
    globex.api_rate_limit = 1_000_000  # warms the limiter's Redis connections, never refuses
    globex.save()
    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111")
    make_provider(globex, name="g", base_url=upstream.base_url("g"), api_key="sk-test-gggg1111")
    token, warm_token = make_token(acme, TokenScope.COMPLETIONS), make_token(globex, TokenScope.COMPLETIONS)
    prefix = f"test-{uuid.uuid4().hex}"
    bucket = f"{prefix}:rl:tenant:{acme.pk}"
    client = redis.Redis.from_url(settings.REDIS_URL)
    ports = [free_port() for _ in range(PROCESSES)]
    servers = [spawn_server(port, prefix) for port in ports]
    bursts: list[tuple[list[tuple], float, int]] = []
    try:
        for server, port in zip(servers, ports, strict=True):
            wait_until_serving(server, port)

        async def run() -> None:
            # Warm both processes: code paths, the upstream and Redis connection pools (a
            # burst of another tenant), and the token cache through an admin-only endpoint,
            # which refuses a completions token (403) before counting it. The burst then
            # races on the limit alone.
            warm, _ = await burst(ports, chat_request(warm_token), REQUESTS)
            assert {status for _, status, _, _ in warm} == {200}
            for port in ports:
                assert (await exchange(port, admin_request(token)))[0] == 403
            for _ in range(ATTEMPTS):
                client.delete(bucket)  # a full minute's budget
                before = upstream.counts("a").get("chat", 0)
                results, spread = await burst(ports, chat_request(token), REQUESTS)
                bursts.append((results, spread, upstream.counts("a").get("chat", 0) - before))
                if spread < 1.0:
                    return

        asyncio.run(run())
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        outputs = [server.communicate(timeout=30)[0] for server in servers]
        client.delete(*client.keys(f"{prefix}:*") or [bucket])
        client.close()

    for results, spread, _ in bursts:  # any burst: never more than the budget and its refill
        assert [status for _, status, _, _ in results].count(200) <= LIMIT + int(spread)
    results, spread, reached_upstream = bursts[-1]
    assert spread < 1.0, f"{ATTEMPTS} bursts of {REQUESTS} each took a second or more: {[b[1] for b in bursts]}"
    statuses = [status for _, status, _, _ in results]
    assert statuses.count(200) == LIMIT, (statuses, spread, outputs)
    assert statuses.count(429) == REQUESTS - LIMIT
    # One budget shared by both: with one each, up to twice the limit would have passed.
    assert [sum(1 for p, *_ in results if p == port) for port in ports] == [REQUESTS // PROCESSES] * PROCESSES
    for _, status, headers, body in results:
        if status == 429:
            assert int(headers["retry-after"]) >= 1
            error = json.loads(body)["error"]
            assert (error["code"], error["type"]) == ("rate_limited", "rate_limit_error")
    assert reached_upstream == LIMIT  # the refused never reached a provider
