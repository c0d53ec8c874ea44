"""The members page: list, add an existing or new user (a new user's password shown
once), change a role, remove; the last admin can neither demote nor remove themself;
admins only, tenant-scoped, every change audited once without a password."""

from __future__ import annotations

import json
import logging
import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tenants.models import ActorKind, AuditEntry, Membership, Role
from tenants.rls import tenant_context
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
User = get_user_model()

URL = "/members/"
HTMX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def role_url(m: Membership) -> str:
    return reverse("console:member_role", kwargs={"member_id": m.pk})


def remove_url(m: Membership) -> str:
    return reverse("console:member_remove", kwargs={"member_id": m.pk})


def member(tenant, username) -> Membership:
    return Membership.objects.select_related("user").get(tenant=tenant, user__username=username)


def entries(tenant) -> list[AuditEntry]:
    with tenant_context(tenant.pk):
        return list(AuditEntry.objects.filter(tenant=tenant).order_by("pk"))


def snapshot(*tenants) -> list:
    users = list(User.objects.order_by("pk").values_list("username", "password"))
    return [users] + [
        (list(Membership.objects.filter(tenant=t).order_by("pk").values()), len(entries(t))) for t in tenants
    ]


def one_time_password(html: str) -> str:
    return re.search(r'<code id="new-password"[^>]*>([^<]+)</code>', html).group(1)


@pytest.fixture
def erin(db):
    return UserFactory(username="erin")


def test_the_urls_are_where_the_nav_expects():
    assert reverse("console:members") == URL
    assert reverse("console:member_role", kwargs={"member_id": 3}) == "/members/3/role/"
    assert reverse("console:member_remove", kwargs={"member_id": 3}) == "/members/3/remove/"


def test_alice_sees_the_members_with_role_and_since(alice_client, acme, bob, dave, carol):
    html = alice_client.get(URL).content.decode()
    for name in ("alice", "bob", "dave"):
        assert f"<td>{name}" in html
    assert "carol" not in html and "(you)" in html
    counts = [html.count(f"selected>{label}<") for label in ("Admin", "Operator", "Viewer")]
    assert counts == [1, 1, 2]  # alice, dave, bob and the add form's default
    assert "last admin: make someone else an admin first" in html  # alice's row: no remove, no demote
    assert 'aria-current="page"' in html and re.search(r"<time datetime=\"\d{4}-\d\d-\d\d", html)


def test_the_list_takes_as_many_queries_for_many_members_as_for_one(alice_client, acme):
    alice_client.get(URL)  # the session's first request may store it
    with CaptureQueriesContext(connection) as one:
        assert alice_client.get(URL).status_code == 200
    for i in range(20):
        Membership.objects.create(tenant=acme, user=UserFactory(username=f"user-{i}"), role=Role.VIEWER)
    with CaptureQueriesContext(connection) as many:
        assert alice_client.get(URL).content.decode().count("<td>user-") == 20
    assert len(many) == len(one) <= 20


def test_alice_adds_an_existing_user(alice_client, acme, erin):
    before = len(entries(acme))
    r = alice_client.post(URL, {"username": "erin", "role": "operator"})
    assert r.status_code == 302 and r["Location"] == URL
    assert member(acme, "erin").role == Role.OPERATOR
    (entry,) = entries(acme)[before:]
    assert (entry.action, entry.object_type, entry.actor_kind, entry.actor, entry.after) == (
        "create", "membership", ActorKind.USER, "alice", {"user": "erin", "role": "operator"}
    )  # fmt: skip
    assert "erin added as operator" in alice_client.get(URL).content.decode()


def test_a_new_user_gets_a_password_shown_once(alice_client, acme):
    before = len(entries(acme))
    r = alice_client.post(URL, {"username": "frank", "role": "viewer"})
    html = r.content.decode()
    password = one_time_password(html)
    assert r.status_code == 200 and "no-store" in r["Cache-Control"] and "won't see it again" in html
    assert 'data-copy="new-password"' in html
    assert Client().login(username="frank", password=password)
    assert member(acme, "frank").role == Role.VIEWER
    (entry,) = entries(acme)[before:]
    assert entry.actor == "alice" and password not in json.dumps([entry.before, entry.after, entry.object_name])
    assert password not in alice_client.get(URL).content.decode()  # never again


def test_the_password_is_never_logged(alice_client, acme, caplog):
    caplog.set_level(logging.DEBUG)
    password = one_time_password(alice_client.post(URL, {"username": "frank", "role": "viewer"}).content.decode())
    assert password not in caplog.text


def test_adding_with_htmx_returns_the_form_and_the_new_table(alice_client, acme):
    r = alice_client.post(URL, {"username": "frank", "role": "operator"}, headers=HTMX)
    html = r.content.decode()
    assert r.status_code == 200 and "<html" not in html and 'id="member-invite"' in html
    assert 'id="members" hx-swap-oob="true"' in html and "<td>frank" in html
    assert Client().login(username="frank", password=one_time_password(html))


def test_the_new_member_finds_the_tenant(alice_client, acme, erin):
    alice_client.post(URL, {"username": "erin", "role": "viewer"})
    erins = Client()
    erins.force_login(erin)
    assert erins.get("/").status_code == 200 and erins.get(URL).status_code == 403


def test_adding_a_member_twice_is_refused_and_changes_nothing(alice_client, acme, bob):
    before = snapshot(acme)
    for headers in ({}, HTMX):
        r = alice_client.post(URL, {"username": "bob", "role": "admin"}, headers=headers)
        assert r.status_code == 200 and "already a member" in r.content.decode()
    assert snapshot(acme) == before


BAD = [
    ("", "viewer", "username"),
    ("   ", "viewer", "username"),
    ("two words", "viewer", "username"),
    ("slash/name", "viewer", "username"),
    ("<b>", "viewer", "username"),
    ("u" * 151, "viewer", "username"),
    ("nul\x00", "viewer", "username"),
    ("erin", "", "role"),
    ("erin", "owner", "role"),
    ("erin", "Admin", "role"),
    ("erin", "superuser", "role"),
]


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
@pytest.mark.parametrize("username, role, field", BAD, ids=[f"{u!r}:{r!r}"[:30] for u, r, _ in BAD])
def test_bad_input_is_shown_next_to_its_field_and_changes_nothing(alice_client, acme, username, role, field, htmx):
    before = snapshot(acme)
    r = alice_client.post(URL, {"username": username, "role": role}, headers=HTMX if htmx else {})
    html = r.content.decode()
    assert r.status_code == 200 and ("<html" in html) is not htmx
    assert f'id="member-{field}-error"' in html and html.count('class="field-error"') == 1
    assert snapshot(acme) == before


def test_alice_changes_a_role(alice_client, acme, bob):
    before = len(entries(acme))
    r = alice_client.post(role_url(member(acme, "bob")), {"role": "operator"}, headers=HTMX)
    html = r.content.decode()
    assert r.status_code == 200 and html.lstrip().startswith('<div id="members"') and "<html" not in html
    assert member(acme, "bob").role == Role.OPERATOR
    (entry,) = entries(acme)[before:]
    assert (entry.action, entry.actor, entry.before, entry.after) == (
        "update", "alice", {"role": "viewer"}, {"role": "operator"}
    )  # fmt: skip


def test_changing_a_role_without_htmx_redirects_back(alice_client, acme, bob):
    r = alice_client.post(role_url(member(acme, "bob")), {"role": "admin"})
    assert r.status_code == 302 and r["Location"] == URL and member(acme, "bob").role == Role.ADMIN
    assert "bob is now admin" in alice_client.get(URL).content.decode()


def test_the_same_role_again_is_safe_and_audits_nothing(alice_client, acme, bob):
    alice_client.post(role_url(member(acme, "bob")), {"role": "operator"})
    before = snapshot(acme)
    alice_client.post(role_url(member(acme, "bob")), {"role": "operator"}, headers=HTMX)
    assert snapshot(acme) == before


@pytest.mark.parametrize("role", ["", "owner", "ADMIN", "x" * 1000])
def test_an_unknown_role_is_refused_and_changes_nothing(alice_client, acme, bob, role):
    before = snapshot(acme)
    r = alice_client.post(role_url(member(acme, "bob")), {"role": role}, headers=HTMX)
    assert r.status_code == 200 and 'role="alert"' in r.content.decode()
    assert snapshot(acme) == before


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_the_last_admin_cannot_demote_themself(alice_client, acme, bob, htmx):
    before = snapshot(acme)
    r = alice_client.post(role_url(member(acme, "alice")), {"role": "viewer"}, headers=HTMX if htmx else {})
    if htmx:
        assert r.status_code == 200 and "last admin" in r.content.decode()
    else:
        assert r.status_code == 302 and "last admin" in alice_client.get(URL).content.decode()
    assert snapshot(acme) == before


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_the_last_admin_cannot_remove_themself(alice_client, acme, bob, htmx):
    before = snapshot(acme)
    r = alice_client.post(remove_url(member(acme, "alice")), headers=HTMX if htmx else {})
    assert r.status_code == (200 if htmx else 302)
    assert "last admin" in (r.content.decode() if htmx else alice_client.get(URL).content.decode())
    assert snapshot(acme) == before


def test_an_admin_who_demotes_themself_is_sent_away(alice_client, acme, bob):
    alice_client.post(role_url(member(acme, "bob")), {"role": "admin"})
    r = alice_client.post(role_url(member(acme, "alice")), {"role": "operator"}, headers=HTMX)
    assert r.status_code == 200 and r["HX-Redirect"] == "/"
    assert member(acme, "alice").role == Role.OPERATOR and alice_client.get(URL).status_code == 403


def test_an_admin_may_leave_while_another_remains(alice_client, acme, bob):
    alice_client.post(role_url(member(acme, "bob")), {"role": "admin"})
    before = len(entries(acme))
    r = alice_client.post(remove_url(member(acme, "alice")))
    assert r.status_code == 302 and r["Location"] == "/"
    assert not Membership.objects.filter(tenant=acme, user__username="alice").exists()
    assert [(e.action, e.actor) for e in entries(acme)[before:]] == [("delete", "alice")]
    assert alice_client.get(URL).status_code == 404  # no tenant left


def test_alice_removes_a_member_who_loses_access_at_once(alice_client, acme, bob, bob_client):
    assert bob_client.get("/").status_code == 200
    before = len(entries(acme))
    r = alice_client.post(remove_url(member(acme, "bob")), headers=HTMX)
    assert r.status_code == 200 and "<td>bob" not in r.content.decode() and "<td>alice" in r.content.decode()
    assert User.objects.filter(username="bob").exists() and not Membership.objects.filter(user__username="bob")
    assert bob_client.get("/").status_code == 404
    (entry,) = entries(acme)[before:]
    assert (entry.action, entry.actor, entry.before) == ("delete", "alice", {"user": "bob", "role": "viewer"})


def test_removing_twice_is_safe(alice_client, acme, bob):
    url = remove_url(member(acme, "bob"))
    alice_client.post(url)
    before = snapshot(acme)
    assert alice_client.post(url).status_code == 404
    assert snapshot(acme) == before


def test_remove_and_self_demotion_ask_first(alice_client, acme, bob):
    html = alice_client.get(URL).content.decode()
    assert 'hx-confirm="Remove bob from Acme? They lose access at once."' in html
    alice_client.post(role_url(member(acme, "bob")), {"role": "admin"})
    html = alice_client.get(URL).content.decode()
    assert 'hx-confirm="Change your own role?' in html and 'hx-confirm="Leave Acme?' in html


def test_get_on_the_action_urls_changes_nothing(alice_client, acme, bob):
    before = snapshot(acme)
    for url in (role_url(member(acme, "bob")), remove_url(member(acme, "bob"))):
        assert alice_client.get(url).status_code == 405
    assert snapshot(acme) == before


def test_viewers_and_operators_are_refused_and_change_nothing(bob_client, dave_client, acme, alice, erin):
    before = snapshot(acme)
    target = member(acme, "alice")
    for client in (bob_client, dave_client):
        assert client.get(URL).status_code == 403
        assert client.post(URL, {"username": "erin", "role": "admin"}).status_code == 403
        assert client.post(role_url(target), {"role": "viewer"}, headers=HTMX).status_code == 403
        assert client.post(remove_url(target)).status_code == 403
    own = member(acme, "bob")
    assert bob_client.post(role_url(own), {"role": "admin"}).status_code == 403  # no self-promotion
    assert snapshot(acme) == before


def test_another_tenants_admin_gets_404_and_changes_nothing(carol_client, acme, globex, alice, bob):
    before = snapshot(acme, globex)
    for target in (member(acme, "alice"), member(acme, "bob")):
        assert carol_client.get(role_url(target)).status_code == 404
        assert carol_client.post(role_url(target), {"role": "viewer"}).status_code == 404
        assert carol_client.post(remove_url(target), headers=HTMX).status_code == 404
    html = carol_client.get(URL).content.decode()
    assert "<td>alice" not in html and "<td>carol" in html
    assert snapshot(acme, globex) == before


def test_carol_adds_members_to_her_own_tenant(carol_client, acme, globex, erin):
    carol_client.post(URL, {"username": "erin", "role": "viewer"})
    assert list(Membership.objects.filter(user=erin).values_list("tenant__slug", flat=True)) == ["globex"]
