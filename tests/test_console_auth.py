"""Per-tenant login, the tenant switcher and scoping of console pages."""

from __future__ import annotations

from django.test import Client

from tests.factories import MembershipFactory


def test_the_login_page_renders(db):
    r = Client().get("/login/")
    assert r.status_code == 200 and b"Sign in" in r.content


def test_anonymous_users_are_sent_to_login(db):
    r = Client().get("/")
    assert r.status_code == 302 and r["Location"].startswith("/login/")


def test_a_user_logs_in_and_lands_in_their_tenant(alice, acme, make_provider):
    make_provider(acme, name="acme-openai")
    client = Client()
    r = client.post("/login/", {"username": "alice", "password": "password123"}, follow=True)
    assert r.status_code == 200
    assert b"Providers of Acme" in r.content and b"acme-openai" in r.content


def test_wrong_password_is_refused(alice):
    r = Client().post("/login/", {"username": "alice", "password": "nope"})
    assert r.status_code == 200 and b"didn't match" in r.content


def test_pages_show_only_the_active_tenants_data(carol_client, acme, globex, make_provider):
    make_provider(acme, name="acme-secret")
    make_provider(globex, name="globex-openai")
    r = carol_client.get("/")
    assert b"globex-openai" in r.content and b"acme-secret" not in r.content


def test_a_user_switches_between_their_tenants(alice, alice_client, acme, globex, make_provider):
    MembershipFactory(user=alice, tenant=globex, role="viewer")
    make_provider(globex, name="globex-openai")
    assert b"Providers of Acme" in alice_client.get("/").content
    r = alice_client.post("/switch-tenant/", {"tenant": globex.pk, "next": "/"}, follow=True)
    assert b"Providers of Globex" in r.content and b"globex-openai" in r.content


def test_switching_to_a_tenant_one_does_not_belong_to_is_404(carol_client, acme):
    r = carol_client.post("/switch-tenant/", {"tenant": acme.pk})
    assert r.status_code == 404
    assert b"Providers of Globex" in carol_client.get("/").content


def test_a_user_without_tenants_sees_no_data(db):
    from tests.factories import UserFactory

    client = Client()
    client.force_login(UserFactory(username="loner"))
    assert client.get("/").status_code == 404
