"""Degradation: with the database briefly unreachable, completions for a tenant whose
configuration and token are cached go on (served stale once their TTLs pass), and their
usage records wait in the writer's queue until the database is back, then are written,
all of them, once each (routing/cache.py, tenants/authentication.py, usage/writer.py;
docs/reliability.md).

The outage is a real one on either backend: on PostgreSQL every session of the test
database is terminated and new connections go to a port nothing listens on (refused);
on SQLite (the shared in-memory test database) another connection holds a write lock on
every table, so every read and write of the others fails at once with "database table
is locked". (Not a lock on the schema: there ROLLBACK fails too, and an in-memory
database's connection cannot be closed, so it would stay stuck in its transaction.)"""

from __future__ import annotations

import contextlib
import sqlite3
import time

import pytest
from django.db import connection
from django.db.models import Sum

from routing import cache
from tenants import authentication
from tenants.models import ApiToken, TokenScope
from tests.conftest import make_token
from tests.fixtures_upstream import closed_port
from usage.models import MetricBucket, UsageRecord
from usage.writer import writer as usage_writer

CHAT = "/v1/chat/completions"
N = 20


@contextlib.contextmanager
def database_away():
    """Every connection of every thread fails until the block ends."""
    if connection.vendor == "postgresql":
        settings_dict = connection.settings_dict  # shared by every thread's connection
        port = settings_dict["PORT"]
        settings_dict["PORT"] = closed_port()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        connection.close()
        try:
            yield
        finally:
            settings_dict["PORT"] = port
        return
    assert connection.is_in_memory_db()
    tables = connection.introspection.table_names()
    locker = sqlite3.connect(connection.settings_dict["NAME"], uri=True, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    for table in tables:  # a write lock on every table (shared cache): the others can neither read nor write
        locker.execute(f"DELETE FROM {connection.ops.quote_name(table)} WHERE 0")
    try:
        yield
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def stored_records(tenant) -> int:
    """A transaction per look: an open one would hold SQLite's table lock against the writer."""
    from tenants.rls import tenant_context

    with tenant_context(tenant.pk):
        return UsageRecord.objects.count()


def wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def background_writer(settings):
    """The usage writer's own thread, flushing every 0.1 s, as in a server process."""
    settings.AXONFLOW_USAGE_FLUSH_SECONDS = 0.1
    usage_writer.start()
    yield usage_writer
    usage_writer.stop(timeout=10)


@pytest.mark.django_db(transaction=True)
def test_completions_and_their_usage_survive_a_database_blip(
    gateway, acme, globex, make_provider, upstream, background_writer, as_tenant, monkeypatch, caplog
):
    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111")
    make_provider(globex, name="g", base_url=upstream.base_url("g"), api_key="sk-test-gggg1111")
    raw = make_token(acme, TokenScope.COMPLETIONS, "app")
    token_id = ApiToken.objects.get(tenant=acme).pk
    stranger = make_token(globex, TokenScope.COMPLETIONS, "never-used")
    # Short TTLs, so both caches have expired when the outage starts: the stale path runs.
    monkeypatch.setattr(cache, "SNAPSHOT_TTL_SECONDS", 0.2)
    monkeypatch.setattr(authentication, "CACHE_TTL_SECONDS", 0.2)
    monkeypatch.setattr(cache, "_stale_warned_at", -1e9)  # said once a minute: not yet
    monkeypatch.setattr(authentication, "_stale_warned_at", -1e9)

    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    with gateway.client(raw) as client:
        assert client.post(CHAT, json=body).status_code == 200  # token and snapshot cached
        wait_until(lambda: stored_records(acme) == 1)
        time.sleep(0.3)  # both expired now

        with database_away():
            answers = [
                client.post(CHAT, json={**body, "max_tokens": 10 + i})
                if i % 4
                else client.post("/api/v1/completions", json={"prompt": "hello", "max_tokens": 10 + i})
                for i in range(N)
            ]
            with gateway.client(stranger) as unknown:  # nothing cached for this one
                started = time.monotonic()
                assert unknown.post(CHAT, json=body).status_code >= 500
                assert time.monotonic() - started < 5
            time.sleep(0.5)  # a few writer rounds fail meanwhile
            assert background_writer.held() == N
            assert background_writer.dropped == 0

    assert [r.status_code for r in answers] == [200] * N, [r.text[:200] for r in answers if r.status_code != 200]
    assert "accepting cached API tokens" in caplog.text
    assert "on its snapshot of" in caplog.text
    assert caplog.text.count("usage: the database cannot be reached") == 1  # once, not every round

    wait_until(lambda: background_writer.held() == 0)
    assert "usage: the database is reachable again" in caplog.text
    with as_tenant(acme):
        assert UsageRecord.objects.count() == N + 1
        stored = {r.request_id: r for r in UsageRecord.objects.exclude(request_id="")}
        for answer in answers:
            record = stored[answer.headers["x-request-id"]]
            usage = answer.json()["usage"]
            assert (record.tenant_id, record.token_id, record.provider_name) == (acme.pk, token_id, "a")
            assert (record.status, record.status_code, record.endpoint) == ("success", 200, "chat")
            assert record.prompt_tokens == usage["prompt_tokens"] > 0
            assert record.completion_tokens == usage["completion_tokens"] > 0
        buckets = MetricBucket.objects.filter(provider__name="a").aggregate(requests=Sum("request_count"))
        assert buckets["requests"] == N + 1
