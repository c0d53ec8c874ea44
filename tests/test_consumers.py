"""The live board's socket (/ws/status/) through the real ASGI application: who may
connect, the snapshot, and status changes reaching the tenant's boards and no one
else's, over the in-memory layer and over channels-redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections

from axonflow_site.asgi import application
from routing.health import breaker, db_thread, probes, status
from tenants.rls import tenant_context
from tests.conftest import requires_redis

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-test-board-0123456789abcdef"
ORIGIN = (b"origin", b"http://testserver")


async def in_thread(fn, *args):
    def run():
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


def cookie_of(client) -> tuple[bytes, bytes]:
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def open_board(*headers) -> tuple[WebsocketCommunicator, bool]:
    await db_thread.aflush()  # publishes queued by the fixtures' saves go out before this board joins
    board = WebsocketCommunicator(application, "/ws/status/", headers=list(headers))
    connected, _ = await board.connect(timeout=5)
    return board, connected


@pytest.fixture(autouse=True)
def _fresh_breaker():
    breaker.reset()
    yield
    breaker.reset()


@pytest.fixture
def boards(acme, globex, upstream, make_provider, alice_client, carol_client):
    """acme has providers a and b (fake upstream labels), globex has g."""
    made = {
        name: make_provider(tenant, name=name, type="openai", base_url=upstream.base_url(name, "openai"), api_key=KEY)
        for tenant, name in ((acme, "a"), (acme, "b"), (globex, "g"))
    }
    return made, cookie_of(alice_client), cookie_of(carol_client)


async def snapshot(board: WebsocketCommunicator, count: int) -> list[str]:
    return [await board.receive_from(timeout=5) for _ in range(count)]


async def assert_change_reaches_only_its_tenant(boards, upstream):
    made, alice_cookie, carol_cookie = boards
    alice, ok_a = await open_board(ORIGIN, alice_cookie)
    carol, ok_c = await open_board(ORIGIN, carol_cookie)
    try:
        assert ok_a and ok_c
        cards = await snapshot(alice, 2)
        assert [f'id="provider-{made[n].pk}"' in card for n, card in zip("ab", cards, strict=True)] == [True, True]
        assert all("status-unknown" in card for card in cards)
        assert f'id="provider-{made["g"].pk}"' in (await snapshot(carol, 1))[0]

        upstream.configure("a", failure_rate=1.0)
        outcome = await probes.acheck(made["a"], status.DEFAULT_THRESHOLDS)
        assert outcome.changed

        card = await alice.receive_from(timeout=5)
        assert f'id="provider-{made["a"].pk}"' in card
        assert '<span class="status status-degraded"' in card
        assert await carol.receive_nothing(timeout=0.5)
    finally:
        await alice.disconnect()
        await carol.disconnect()


async def test_a_status_change_reaches_the_tenants_board_and_no_other(boards, upstream, http_session):
    await assert_change_reaches_only_its_tenant(boards, upstream)


@requires_redis
async def test_a_status_change_travels_through_redis_too(boards, upstream, settings, http_session):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"],
                "prefix": f"axonflow-test-{uuid.uuid4().hex[:8]}",
            },
        }
    }
    layer = get_channel_layer()
    assert type(layer).__name__ == "RedisChannelLayer"
    try:
        await assert_change_reaches_only_its_tenant(boards, upstream)
    finally:
        await layer.flush()
        await layer.close_pools()


async def test_a_circuit_opened_by_traffic_reaches_the_board(boards, acme):
    made, alice_cookie, _ = boards
    alice, connected = await open_board(ORIGIN, alice_cookie)
    try:
        assert connected
        await snapshot(alice, 2)
        breaker.remember_thresholds(acme.pk, status.DEFAULT_THRESHOLDS)
        for _ in range(10):  # as the router reports attempts, from async code
            breaker.record_attempt(acme.pk, made["b"].pk, False, 20.0, "HTTP 502")
        await db_thread.aflush()
        card = await alice.receive_from(timeout=5)
        assert f'id="provider-{made["b"].pk}"' in card
        assert '<span class="status status-unhealthy"' in card
        assert "from traffic" in card
    finally:
        await alice.disconnect()


async def test_a_user_whose_session_names_a_foreign_tenant_sees_only_their_own(boards, acme, carol_client):
    made, _, carol_cookie = boards

    def point_at_acme():
        session = carol_client.session
        session["active_tenant_id"] = acme.pk  # carol is no member of acme
        session.save()

    await in_thread(point_at_acme)
    carol, connected = await open_board(ORIGIN, carol_cookie)
    try:
        assert connected
        card = await carol.receive_from(timeout=5)
        assert f'id="provider-{made["g"].pk}"' in card
        assert await carol.receive_nothing(timeout=0.3)
    finally:
        await carol.disconnect()


async def test_an_anonymous_visitor_is_refused(boards):
    board, connected = await open_board(ORIGIN)
    assert not connected
    await board.disconnect()


async def test_a_user_without_a_tenant_is_refused(client, django_user_model):
    user = await in_thread(lambda: django_user_model.objects.create_user("loner", password="password123"))
    await in_thread(client.force_login, user)
    board, connected = await open_board(ORIGIN, cookie_of(client))
    assert not connected
    await board.disconnect()


async def test_another_sites_page_cannot_open_the_board(boards):
    _, alice_cookie, _ = boards
    board, connected = await open_board((b"origin", b"http://evil.example"), alice_cookie)
    assert not connected
    await board.disconnect()


# --- what else reaches the board: edits, operator states, traffic, membership --------------


async def test_a_board_opened_for_a_window_shows_that_window(boards):
    made, alice_cookie, _ = boards
    await db_thread.aflush()
    board = WebsocketCommunicator(application, "/ws/status/?window=1h", headers=[ORIGIN, alice_cookie])
    connected, _ = await board.connect(timeout=5)
    try:
        assert connected
        cards = await snapshot(board, 2)
        assert all("Requests (1h)" in card for card in cards)
    finally:
        await board.disconnect()


async def test_edits_new_and_deleted_providers_reach_the_board(boards, acme, make_provider):
    from providers.models import ProviderConfig

    made, alice_cookie, _ = boards
    alice, connected = await open_board(ORIGIN, alice_cookie)
    try:
        assert connected
        await snapshot(alice, 2)

        def drain_a():
            with tenant_context(acme.pk):
                config = ProviderConfig.objects.get(pk=made["a"].pk)
                config.operator_state, config.operator_reason, config.operator_by = "drained", "maintenance", "alice"
                config.save()

        await in_thread(drain_a)
        card = await alice.receive_from(timeout=5)
        assert f'id="provider-{made["a"].pk}"' in card and 'data-operator-state="drained"' in card
        assert "maintenance" in card and "alice" in card

        await db_thread.aflush()
        new = await in_thread(lambda: make_provider(acme, name="c"))
        board = await alice.receive_from(timeout=5)
        assert board.startswith('<section id="board" hx-swap-oob="innerHTML">')
        assert [f'id="provider-{made[n].pk}"' in board for n in "ab"] == [True, True] and f'id="provider-{new.pk}"' in board

        def delete_b():
            with tenant_context(acme.pk):
                ProviderConfig.objects.filter(pk=made["b"].pk).delete()

        await db_thread.aflush()  # the other windows' renders (SQLite's test DB locks whole tables)
        await in_thread(delete_b)
        assert await alice.receive_from(timeout=5) == f'<article id="provider-{made["b"].pk}" hx-swap-oob="delete"></article>'
    finally:
        await alice.disconnect()


async def test_recorded_traffic_updates_the_card(boards, acme):
    from usage.entry import Entry
    from usage.writer import writer

    made, alice_cookie, _ = boards
    alice, connected = await open_board(ORIGIN, alice_cookie)
    try:
        assert connected
        await snapshot(alice, 2)
        attempt = {"provider": "a", "outcome": "success", "status_code": 200, "latency_ms": 12.0, "error": ""}
        failed = {**attempt, "outcome": "http_500", "status_code": 500}
        for item in (attempt, attempt, failed):
            writer.add(Entry(acme.pk, None, made["a"].pk, "a", [item], [made["a"].pk], "success", 200))
        await in_thread(writer.flush)
        card = await alice.receive_from(timeout=5)
        assert f'id="provider-{made["a"].pk}"' in card
        assert '<dd class="requests">3</dd>' in card and '<dd class="traffic-error-rate">33%</dd>' in card
    finally:
        await alice.disconnect()


async def test_a_member_removed_from_the_tenant_stops_receiving_at_once(boards, acme, bob):
    from tenants.models import Membership

    made, _, _ = boards
    bob_client = await in_thread(_login, bob)
    board, connected = await open_board(ORIGIN, cookie_of(bob_client))
    try:
        assert connected
        await snapshot(board, 2)
        await db_thread.aflush()
        await in_thread(lambda: Membership.objects.filter(user=bob, tenant=acme).delete())
        closed = await board.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4403}
        upstream_change = await in_thread(lambda: _touch(made["a"], acme))
        assert upstream_change
        assert await board.receive_nothing(timeout=0.5)
    finally:
        await board.disconnect()


def _login(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def _touch(config, tenant) -> bool:
    from providers.models import ProviderConfig

    with tenant_context(tenant.pk):
        return bool(ProviderConfig.objects.get(pk=config.pk).save() or True)


@requires_redis
async def test_a_board_left_idle_longer_than_a_redis_read_timeout_still_gets_the_next_card(boards, acme):
    # channels-redis blocks 5 s per receive; a client read timeout of 5 s (redis-py 8's
    # default) used to end the consumer there (axonflow_site/settings.py).
    made, alice_cookie, _ = boards
    alice, connected = await open_board(ORIGIN, alice_cookie)
    try:
        assert connected
        await snapshot(alice, 2)
        await asyncio.sleep(6)
        await in_thread(lambda: _touch(made["a"], acme))
        card = await alice.receive_from(timeout=5)
        assert f'id="provider-{made["a"].pk}"' in card
    finally:
        await alice.disconnect()
