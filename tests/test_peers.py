"""What travels between server processes (routing/peers.py): circuit changes, applied
with the same cooldown and reason in every process, and the acknowledged delivery that
lets a committed change be in force everywhere when the publisher returns.

tests/test_two_instances.py runs two real server processes against each other."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid

import pytest

from axonflow_site import shared
from routing import peers
from routing.health import breaker
from routing.health.status import DEFAULT_THRESHOLDS
from tests.conftest import requires_redis

COOLDOWN = DEFAULT_THRESHOLDS.circuit_cooldown_seconds


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _redis_up():
    """Redis counts as up at the start (axonflow_site/shared.py), whatever a test did."""
    shared.reset()
    yield
    shared.reset()


@pytest.fixture
def published(monkeypatch):
    """(kind, payload) for each message this process would publish, captured."""
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(peers, "publish", lambda kind, payload, wait=False: sent.append((kind, payload)))
    return sent


@pytest.fixture
def clock(monkeypatch, circuit_changes):
    """The breaker on a fake monotonic clock; circuit changes captured, not stored."""
    fake = Clock()
    monkeypatch.setattr(breaker, "clock", fake)
    breaker.remember_thresholds(1, DEFAULT_THRESHOLDS)
    return fake


def another_process() -> None:
    """Forget this process's circuits, as a process that has seen nothing would."""
    breaker.reset()
    breaker.remember_thresholds(1, DEFAULT_THRESHOLDS)


def fail(provider: int, times: int) -> None:
    for _ in range(times):
        breaker.record_attempt(1, provider, False, 12.0, "HTTP 500")


# --- circuits ------------------------------------------------------------------------------------


def test_a_circuit_opened_here_is_published_with_its_wall_clock_time(clock, published):
    fail(7, 10)
    assert breaker.is_circuit_open(7)
    [(kind, payload)] = published
    assert kind == breaker.PEER_KIND == "circuit"
    assert payload | {"at": None} == {"tenant_id": 1, "provider_id": 7, "opened": True, "at": None, "reason": ""}
    assert abs(payload["at"] - time.time()) < 1


def test_a_circuit_opened_in_another_process_is_open_here_for_the_rest_of_its_cooldown(
    clock, published, circuit_changes
):
    fail(7, 10)
    [(_, payload)] = published
    another_process()
    payload["at"] -= COOLDOWN - 5  # it opened there 25 s ago
    breaker.apply_peer_change(payload)
    assert breaker.is_circuit_open(7)
    clock.now += 4.9
    assert breaker.is_circuit_open(7)
    clock.now += 0.2
    assert not breaker.is_circuit_open(7)  # half-open: the next request here is the trial
    assert circuit_changes == [(7, True)]  # only the process where it opened stores and announces it
    assert len(published) == 1  # and applying it publishes nothing


def test_a_trial_after_a_peer_opened_the_circuit_closes_it_and_says_so(clock, published, circuit_changes):
    breaker.apply_peer_change({"tenant_id": 1, "provider_id": 7, "opened": True, "at": time.time(), "reason": ""})
    clock.now += COOLDOWN + 1
    breaker.record_attempt(1, 7, True, 12.0)
    assert breaker.circuit_reason(7) is None
    assert circuit_changes == [(7, False)]  # here the trial ran: here it is stored
    assert [(p["opened"], p["provider_id"]) for _, p in published] == [(False, 7)]


def test_credentials_rejected_travels_with_the_circuit(clock, published):
    breaker.reject_credentials(1, 7, 12.0, "HTTP 401: invalid key")
    [(_, payload)] = published
    assert payload["reason"] == breaker.CREDENTIALS_REJECTED
    another_process()
    breaker.apply_peer_change(payload)
    assert breaker.is_circuit_open(7)
    assert breaker.circuit_reason(7) == breaker.CREDENTIALS_REJECTED


def test_a_close_older_than_the_circuits_last_opening_is_ignored(clock, published):
    now = time.time()
    breaker.apply_peer_change({"tenant_id": 1, "provider_id": 7, "opened": True, "at": now, "reason": ""})
    breaker.apply_peer_change({"tenant_id": 1, "provider_id": 7, "opened": False, "at": now - 10, "reason": ""})
    assert breaker.is_circuit_open(7)
    clock.now += 1
    breaker.apply_peer_change({"tenant_id": 1, "provider_id": 7, "opened": False, "at": now + 1, "reason": ""})
    assert not breaker.is_circuit_open(7) and breaker.circuit_reason(7) is None


def test_an_opening_from_a_clock_ahead_of_ours_starts_now(clock):
    breaker.apply_peer_change({"tenant_id": 1, "provider_id": 7, "opened": True, "at": time.time() + 60, "reason": ""})
    clock.now += COOLDOWN - 0.1
    assert breaker.is_circuit_open(7)  # not a cooldown stretched by the other host's skew
    clock.now += 0.2
    assert not breaker.is_circuit_open(7)


def test_a_probe_closing_an_open_circuit_tells_the_others(clock, published):
    breaker.close_circuit(7)  # nothing open: nothing to say
    fail(7, 10)
    breaker.close_circuit(7)
    assert [p["opened"] for _, p in published] == [True, False]


def test_a_process_never_applies_its_own_message_again(clock):
    payload = {"tenant_id": 1, "provider_id": 7, "opened": True, "at": time.time(), "reason": ""}
    peers.apply({"kind": "circuit", "origin": peers.ORIGIN, "payload": payload})
    assert not breaker.is_circuit_open(7)
    peers.apply({"kind": "circuit", "origin": "elsewhere", "payload": payload})
    assert breaker.is_circuit_open(7)


def test_a_bad_message_is_logged_not_raised(caplog):
    peers.apply({"kind": "circuit", "origin": "elsewhere", "payload": {"provider_id": "x"}})
    peers.apply({"kind": "no-such-kind", "origin": "elsewhere", "payload": {}})
    assert caplog.text.count("could not apply a message") == 2


def test_without_redis_nothing_is_published(settings, monkeypatch):
    settings.REDIS_URL = ""
    monkeypatch.setattr(peers, "_send", lambda *a: pytest.fail("sent without Redis"))
    peers.publish("invalidate", {"tenant_id": None, "tokens": False}, wait=True)


async def test_from_an_event_loop_the_message_is_sent_by_the_sender_thread(settings, monkeypatch):
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    sent = []
    monkeypatch.setattr(peers, "_send", lambda message, wait: sent.append((threading.current_thread().name, wait)))
    peers.publish("circuit", {"provider_id": 7}, wait=True)  # the breaker, on the request path
    peers.flush()
    [(thread, wait)] = sent
    assert thread.startswith("axonflow-peers") and wait is False  # the loop never waits for Redis


def test_the_channel_is_per_database(settings):
    settings.CHANNEL_PREFIX = "axonflow"
    assert peers.channel() == f"axonflow:peers:{settings.DATABASES['default']['NAME']}"


# --- delivery (Redis) ----------------------------------------------------------------------------


@pytest.fixture
def own_channel(settings):
    settings.CHANNEL_PREFIX = f"test-{uuid.uuid4().hex}"  # several runs may share one Redis
    return peers.channel()


class OtherProcess:
    """peers.listen() on its own thread and event loop, as another server process runs it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> OtherProcess:
        import redis

        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        client = redis.Redis.from_url(peers.settings.REDIS_URL)
        try:
            deadline = time.monotonic() + 5
            while not client.pubsub_numsub(peers.channel())[0][1]:  # subscribed
                assert time.monotonic() < deadline, "the listener did not subscribe"
                time.sleep(0.01)
        finally:
            client.close()
        return self

    async def _start(self) -> asyncio.Task:
        return asyncio.ensure_future(peers.listen())

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        time.sleep(0.1)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@requires_redis
def test_a_change_sent_from_sync_code_is_applied_everywhere_before_the_call_returns(own_channel, monkeypatch):
    applied = []

    def slow_apply(payload):  # the other process takes its time
        time.sleep(0.2)
        applied.append(payload)

    monkeypatch.setitem(peers._handlers, "slow", slow_apply)
    with OtherProcess():
        started = time.monotonic()
        peers._send({"kind": "slow", "origin": "elsewhere", "payload": {"n": 1}}, True)
        assert applied == [{"n": 1}]
        assert 0.2 <= time.monotonic() - started < peers.ACK_TIMEOUT_SECONDS


@requires_redis
def test_a_process_that_does_not_acknowledge_is_waited_for_at_most_the_timeout(own_channel, monkeypatch, caplog):
    import redis

    monkeypatch.setattr(peers, "ACK_TIMEOUT_SECONDS", 0.3)
    client = redis.Redis.from_url(peers.settings.REDIS_URL)
    silent = client.pubsub()
    silent.subscribe(own_channel)  # subscribed, never answers: a hung process
    monkeypatch.setattr(peers, "_warned_at", -1e9)
    try:
        started = time.monotonic()
        peers._send({"kind": "invalidate", "origin": "elsewhere", "payload": {}}, True)
        assert 0.3 <= time.monotonic() - started < 1.0
        assert "1 of 1 processes did not apply a invalidate message" in caplog.text
    finally:
        silent.close()
        client.close()


@requires_redis
def test_a_circuit_message_reaches_the_other_process_table(own_channel, clock):
    import redis

    payload = {"tenant_id": 1, "provider_id": 7, "opened": True, "at": time.time(), "reason": "credentials rejected"}
    with OtherProcess():
        client = redis.Redis.from_url(peers.settings.REDIS_URL)
        try:
            client.publish(own_channel, json.dumps({"kind": "circuit", "origin": "elsewhere", "payload": payload}))
        finally:
            client.close()
        deadline = time.monotonic() + 2
        while not breaker.is_circuit_open(7):
            assert time.monotonic() < deadline
            time.sleep(0.005)
    assert breaker.circuit_reason(7) == "credentials rejected"


@requires_redis
def test_a_broken_subscription_drops_every_cache_and_comes_back(own_channel, monkeypatch, caplog):
    import redis

    drops, circuits = [], []
    monkeypatch.setitem(peers._handlers, "invalidate", drops.append)
    monkeypatch.setitem(peers._handlers, "circuit", circuits.append)
    monkeypatch.setattr(peers, "RETRY_SECONDS", 0.05)
    client = redis.Redis.from_url(peers.settings.REDIS_URL)

    def wait_for(condition):
        deadline = time.monotonic() + 5
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.01)

    try:
        with OtherProcess():
            wait_for(lambda: len(drops) == 1)  # subscribing: whatever was cached before may be stale
            [listener] = [c for c in client.client_list(_type="pubsub") if c["name"] == f"axonflow-peers-{os.getpid()}"]
            client.client_kill_filter(_id=listener["id"])  # the connection breaks
            message = {"kind": "circuit", "origin": "elsewhere", "payload": {"provider_id": 7}}
            wait_for(lambda: client.publish(own_channel, json.dumps(message)) and circuits)  # subscribed again
    finally:
        client.close()
    assert len(drops) >= 2  # ...and gone, or back: messages may have been missed
    assert "subscribed again after a broken connection" in caplog.text
