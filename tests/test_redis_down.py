"""Degradation: with Redis unreachable, routing goes on with rate limits per process, and
the board and GET /api/v1/status/ say the shared layer is down; when Redis returns, the
state goes back to up by itself (axonflow_site/shared.py, docs/reliability.md).

Redis here is one of our own on a port of this test: nothing listening (connections
refused), a socket that accepts and never answers (every call runs into the timeout),
then a real redis-server started on that same port. So the test runs the same with and
without REDIS_URL in the environment."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest

from axonflow_site import shared
from routing import ratelimit
from tenants.models import TokenScope
from tests.conftest import make_token
from tests.fixtures_upstream import closed_port

CHAT = "/v1/chat/completions"
HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
TIMEOUT = 1.0  # AXONFLOW_REDIS_TIMEOUT_SECONDS for these tests
BANNER = "Shared layer (Redis) unreachable since"


class SilentRedis:
    """A server on `port` that accepts connections and never answers: a hung Redis."""

    def __init__(self, port: int) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.server.close()
        for conn in self.accepted:
            conn.close()


def start_redis_server(port: int) -> subprocess.Popen:
    """A real Redis on `port`, keeping nothing on disk; waits until it answers."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server on PATH (installed with the Redis server CI runs)")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=0.5)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.RedisError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        finally:
            client.close()


@pytest.fixture
def redis_port(settings, monkeypatch):
    """REDIS_URL (and the channel layer) pointing at a port of this test, nothing there
    yet; the rate limiter built from it. Call after the test's rows exist: saving them
    would try Redis."""
    from routing import peers

    port = closed_port()
    url = f"redis://127.0.0.1:{port}/0"

    def point() -> int:
        settings.REDIS_URL = url
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [{"address": url, "socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}]},
            }
        }
        settings.AXONFLOW_REDIS_TIMEOUT_SECONDS = TIMEOUT
        settings.AXONFLOW_REDIS_RETRY_SECONDS = 60  # no trial call during the test unless it says so
        if hasattr(peers, "_client"):
            monkeypatch.setattr(peers, "_client", None)  # its client follows our URL, for this test only
        ratelimit.set_limiter(None)  # built again, from this REDIS_URL
        return port

    return point


@dataclass
class Setup:
    completions_token: str  # acme's
    globex_token: str  # admin scope
    bucket_keys: set[str]  # the rate limiter's keys for acme and its provider `limited`


@pytest.fixture
def limited_setup(acme, globex, make_provider, upstream) -> Setup:
    """acme: an API rate limit of 8 a minute, provider `limited` (5 a minute, tried first)
    and `spare` (no limit)."""
    acme.api_rate_limit = 8
    acme.save()
    url = upstream.base_url("limited")
    limited = make_provider(acme, name="limited", base_url=url, api_key="sk-test-aaaa1111", priority=1, rate_limit=5)
    make_provider(acme, name="spare", base_url=upstream.base_url("spare"), api_key="sk-test-bbbb2222")
    return Setup(
        make_token(acme, TokenScope.COMPLETIONS, "app"), make_token(globex), {f"tenant:{acme.pk}", str(limited.pk)}
    )


def timed_post(client, path: str, body: dict):
    started = time.monotonic()
    response = client.post(path, json=body)
    return response, time.monotonic() - started


def assert_says_down(gateway, globex_token: str, alice_client) -> None:
    with gateway.client(globex_token) as client:
        state = client.get("/api/v1/status/").json()["shared_layer"]
    assert state["configured"] is True and state["up"] is False and state["down_since"]
    page = alice_client.get("/status/").content.decode()
    assert BANNER in page and "rate limits are per process" in page
    assert 'ws-connect="/ws/status/?window=5m"' in page  # the board stays live as before


# --- the breaker around Redis ---------------------------------------------------------------------


def test_while_down_one_call_per_retry_interval_is_let_through(settings, caplog):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    settings.AXONFLOW_REDIS_RETRY_SECONDS = 0.2
    assert shared.usable() and shared.shared_layer_up()
    shared.failed(ConnectionError("refused"), "a test")
    shared.failed(ConnectionError("refused"), "a test")
    assert not shared.usable() and not shared.shared_layer_up()
    assert shared.state()["down_since"] is not None
    time.sleep(0.25)
    assert [shared.usable() for _ in range(4)] == [True, False, False, False]  # one trial
    shared.succeeded()
    assert shared.usable() and shared.state() == {"configured": True, "up": True, "down_since": None}
    assert caplog.text.count("shared layer (Redis) unreachable") == 1
    assert caplog.text.count("shared layer (Redis) reachable again") == 1


def test_without_redis_nothing_is_shared_and_nothing_is_down(settings):
    settings.REDIS_URL = ""
    assert not shared.usable()
    assert shared.check() == {"configured": False, "up": False, "down_since": None}


# --- through the gateway ---------------------------------------------------------------------------


@pytest.mark.parametrize("away", ["refused", "silent"])
@pytest.mark.django_db(transaction=True)
def test_completions_go_on_with_limits_per_process_while_redis_is_away(
    away, gateway, limited_setup, redis_port, alice_client, upstream, caplog
):
    completions_token, globex_token = limited_setup.completions_token, limited_setup.globex_token
    port = redis_port()
    silent = SilentRedis(port) if away == "silent" else None
    try:
        with gateway.client(completions_token) as client:
            answers = [timed_post(client, CHAT, HELLO) for _ in range(9)]
    finally:
        if silent is not None:
            silent.close()
    statuses = [r.status_code for r, _ in answers]
    assert statuses == [200] * 8 + [429], [r.text[:200] for r, _ in answers]
    # The provider's 5 a minute holds in this process: the 6th fails over to `spare`.
    providers = [r.headers["x-axonflow-provider"] for r, _ in answers[:8]]
    assert providers == ["limited"] * 5 + ["spare"] * 3
    # The tenant's 8 a minute holds too: the 9th is refused before routing.
    assert answers[8][0].json()["error"]["code"] == "rate_limited"
    assert sum(c.get("chat", 0) for c in upstream.stats().values()) == 8
    # The first request found Redis away (at most one timeout); the rest never waited for it.
    first, rest = answers[0][1], [seconds for _, seconds in answers[1:]]
    assert first < TIMEOUT + 2.0
    if away == "silent":
        assert first >= TIMEOUT * 0.9  # it did wait for the silent Redis, once
    assert sum(rest) < TIMEOUT, rest
    assert caplog.text.count("shared layer (Redis) unreachable") == 1  # said once, not per request
    assert_says_down(gateway, globex_token, alice_client)


@pytest.mark.django_db(transaction=True)
def test_the_shared_layer_comes_back_by_itself(gateway, limited_setup, redis_port, alice_client, settings):
    import redis

    completions_token, globex_token = limited_setup.completions_token, limited_setup.globex_token
    port = redis_port()
    settings.AXONFLOW_REDIS_RETRY_SECONDS = 0.2
    with gateway.client(completions_token) as client:
        assert client.post(CHAT, json=HELLO).status_code == 200
        assert not shared.shared_layer_up()
        assert_says_down(gateway, globex_token, alice_client)

        process = start_redis_server(port)  # Redis is back, at the same address
        try:
            time.sleep(0.3)  # the next trial is due
            with gateway.client(globex_token) as admin:
                state = admin.get("/api/v1/status/").json()["shared_layer"]
            assert state == {"configured": True, "up": True, "down_since": None}
            assert BANNER not in alice_client.get("/status/").content.decode()
            # Limits are shared again: the next request's buckets live in Redis.
            assert client.post(CHAT, json=HELLO).status_code == 200
            prefix = f"{settings.CHANNEL_PREFIX}:rl:"
            keys = {key.decode().removeprefix(prefix) for key in redis.Redis(port=port).keys(f"{prefix}*")}
            assert keys == limited_setup.bucket_keys
        finally:
            process.terminate()
            process.wait(10)
