"""The API tokens page: list, create (shown once, copy button, a form sent twice creates
one token), revoke (refused at once by the API); admins only, tenant-scoped, every
change audited once without the token."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tenants.models import ActorKind, ApiToken, AuditEntry, TokenScope
from tenants.rls import tenant_context
from tenants.tokens import create_token
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db

URL = "/tokens/"
HTMX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def revoke_url(token) -> str:
    return reverse("console:token_revoke", kwargs={"token_id": token.pk})


def entries(tenant) -> list[AuditEntry]:
    with tenant_context(tenant.pk):
        return list(AuditEntry.objects.filter(tenant=tenant).order_by("pk"))


def snapshot(*tenants) -> list:
    return [(list(ApiToken.objects.filter(tenant=t).order_by("pk").values()), len(entries(t))) for t in tenants]


def form_id(client) -> str:
    return re.search(r'name="form_id" value="([0-9a-f]+)"', client.get(URL).content.decode()).group(1)


def post_form(client, headers=None, **fields):
    data = {"name": "support-bot", "scope": "completions", "expires_at": "", "form_id": form_id(client), **fields}
    return client.post(URL, data, headers=headers or {})


def raw_tokens(html: str) -> list[str]:
    return re.findall(r"axf_[A-Za-z0-9_-]{20,}", html)


def test_the_urls_are_where_the_nav_expects():
    assert reverse("console:tokens") == URL and reverse("console:token_revoke", kwargs={"token_id": 7}) == (
        "/tokens/7/revoke/"
    )


def test_alice_sees_the_tenants_tokens_by_prefix_only(alice_client, acme, globex):
    token, raw = create_token(acme, "support-bot", TokenScope.ADMIN, timezone.now() + timedelta(days=3))
    revoked, _ = create_token(acme, "old-app")
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    expired, _ = create_token(acme, "last-quarter", TokenScope.COMPLETIONS, timezone.now() + timedelta(seconds=30))
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
    create_token(globex, "globex-app")
    r = alice_client.get(URL)
    html = r.content.decode()
    assert r.status_code == 200 and "<h1>API tokens</h1>" in html
    assert "support-bot" in html and f"{token.prefix}…" in html and "old-app" in html and "revoked" in html
    assert raw not in html and token.token_hash not in html and "globex-app" not in html
    assert raw_tokens(html) == [] and 'class="pill pill-expired">expired<' in html
    assert f'href="{URL}" aria-current="page"' in html  # the nav marks the page


def test_an_empty_list_says_so(alice_client):
    assert "No API tokens yet" in alice_client.get(URL).content.decode()


def test_the_list_takes_as_many_queries_for_many_tokens_as_for_one(alice_client, acme):
    create_token(acme, "first")
    alice_client.get(URL)  # the session's first request may store it
    with CaptureQueriesContext(connection) as one:
        assert alice_client.get(URL).status_code == 200
    for i in range(30):
        create_token(acme, f"app-{i}")
    with CaptureQueriesContext(connection) as many:
        assert alice_client.get(URL).content.decode().count('<tr id="token-') == 31
    assert len(many) == len(one) <= 20


def test_creating_shows_the_token_once_with_a_copy_button(alice_client, acme):
    r = post_form(alice_client, scope="admin")
    html = r.content.decode()
    token = ApiToken.objects.get(tenant=acme, name="support-bot")
    (raw,) = set(raw_tokens(html))
    assert r.status_code == 200 and ApiClient(raw).get("/api/v1/tokens/").status_code == 200
    assert raw.startswith(token.prefix) and token.scope == TokenScope.ADMIN
    assert 'id="new-token"' in html and 'data-copy="new-token"' in html and "won't see it again" in html
    assert "no-store" in r["Cache-Control"]
    assert raw not in alice_client.get(URL).content.decode()  # never again


def test_creating_with_htmx_returns_the_fragment_and_the_new_list(alice_client, acme):
    r = post_form(alice_client, headers=HTMX, name="htmx-app")
    html = r.content.decode()
    assert r.status_code == 200 and "<html" not in html and 'id="token-create"' in html
    assert 'id="tokens" hx-swap-oob="true"' in html and "htmx-app" in html
    assert len(set(raw_tokens(html))) == 1 and "no-store" in r["Cache-Control"]


def test_an_expiry_from_the_form_is_utc(alice_client, acme):
    when = (timezone.now() + timedelta(days=10)).replace(second=0, microsecond=0)
    post_form(alice_client, expires_at=when.strftime("%Y-%m-%dT%H:%M"))
    assert ApiToken.objects.get(tenant=acme, name="support-bot").expires_at == when


def test_a_form_sent_twice_creates_one_token(alice_client, acme):
    data = {"name": "twice", "scope": "completions", "expires_at": "", "form_id": form_id(alice_client)}
    first = alice_client.post(URL, data)
    second = alice_client.post(URL, data, headers=HTMX)
    assert ApiToken.objects.filter(tenant=acme, name="twice").count() == 1
    assert len(raw_tokens(first.content.decode())) >= 1
    assert second.status_code == 200 and raw_tokens(second.content.decode()) == []
    assert "already sent" in second.content.decode()


def test_a_post_without_its_form_id_creates_nothing(alice_client, acme):
    before = snapshot(acme)
    r = alice_client.post(URL, {"name": "x", "scope": "completions"})
    assert r.status_code == 200 and "reload the page" in r.content.decode() and snapshot(acme) == before


BAD = [
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "n" * 101}, "name"),
    ({"name": "tab\there"}, "name"),
    ({"name": "nul\x00"}, "name"),
    ({"scope": ""}, "scope"),
    ({"scope": "root"}, "scope"),
    ({"scope": "ADMIN"}, "scope"),
    ({"expires_at": "tomorrow"}, "expires_at"),
    ({"expires_at": "2001-01-01T00:00"}, "expires_at"),
    ({"expires_at": "2031-13-01T00:00"}, "expires_at"),
    ({"expires_at": "9999-99-99T99:99"}, "expires_at"),
]


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
@pytest.mark.parametrize("change, field", BAD, ids=[f"{f}:{list(c.values())[0]!r}"[:30] for c, f in BAD])
def test_bad_input_is_shown_next_to_its_field_and_changes_nothing(alice_client, acme, change, field, htmx):
    before = snapshot(acme)
    r = post_form(alice_client, headers=HTMX if htmx else None, **change)
    html = r.content.decode()
    assert r.status_code == 200
    assert ("<html" in html) is not htmx
    ids = {"name": "token-name", "scope": "token-scope", "expires_at": "token-expires"}
    assert f'id="{ids[field]}-error"' in html and html.count('class="field-error"') == 1
    assert raw_tokens(html) == [] and snapshot(acme) == before


def test_a_bad_post_keeps_what_was_typed(alice_client):
    html = post_form(alice_client, name="keep me", expires_at="2001-01-01T00:00").content.decode()
    assert 'value="keep me"' in html and 'value="2001-01-01T00:00"' in html


def test_revoking_refuses_the_token_at_once(alice_client, acme):
    token, raw = create_token(acme, "ci", TokenScope.ADMIN)
    api = ApiClient(raw)
    assert api.get("/api/v1/providers/").status_code == 200
    r = alice_client.post(revoke_url(token))
    assert r.status_code == 302 and r["Location"] == URL
    assert api.get("/api/v1/providers/").status_code == 401
    assert "revoked" in alice_client.get(URL).content.decode()


def test_revoking_with_htmx_returns_the_row(alice_client, acme):
    token, _raw = create_token(acme, "ci")
    r = alice_client.post(revoke_url(token), headers=HTMX)
    html = r.content.decode()
    assert r.status_code == 200 and html.lstrip().startswith(f'<tr id="token-{token.pk}"')
    assert "revoked" in html and "Revoke</button>" not in html


def test_the_revoke_button_asks_first(alice_client, acme):
    token, _raw = create_token(acme, "ci")
    html = alice_client.get(URL).content.decode()
    assert f'hx-post="{revoke_url(token)}"' in html and 'hx-confirm="Revoke ci' in html


def test_revoking_twice_is_safe_and_audited_once(alice_client, acme):
    token, raw = create_token(acme, "ci")
    before = len(entries(acme))
    alice_client.post(revoke_url(token))
    first = ApiToken.objects.get(pk=token.pk).revoked_at
    assert alice_client.post(revoke_url(token), headers=HTMX).status_code == 200
    assert ApiToken.objects.get(pk=token.pk).revoked_at == first
    (entry,) = entries(acme)[before:]
    assert (entry.action, entry.actor_kind, entry.actor) == ("revoke", ActorKind.USER, "alice")
    assert raw not in json.dumps([entry.before, entry.after, entry.object_name])


def test_creating_is_audited_once_by_alice_without_the_token(alice_client, acme):
    before = len(entries(acme))
    html = post_form(alice_client, name="audited").content.decode()
    (raw,) = set(raw_tokens(html))
    token = ApiToken.objects.get(tenant=acme, name="audited")
    (entry,) = entries(acme)[before:]
    assert (entry.action, entry.object_type, entry.actor_kind, entry.actor) == (
        "create", "api_token", ActorKind.USER, "alice"
    )  # fmt: skip
    text = json.dumps([entry.actor, entry.object_id, entry.object_name, entry.before, entry.after])
    assert raw not in text and raw[12:] not in text and token.token_hash not in text


def test_get_on_the_revoke_url_changes_nothing(alice_client, acme):
    token, _raw = create_token(acme, "ci")
    before = snapshot(acme)
    assert alice_client.get(revoke_url(token)).status_code == 405
    assert snapshot(acme) == before


def test_viewers_and_operators_are_refused_and_change_nothing(bob_client, dave_client, acme):
    token, _raw = create_token(acme, "ci")
    before = snapshot(acme)
    for client in (bob_client, dave_client):
        assert client.get(URL).status_code == 403
        assert client.post(URL, {"name": "x", "scope": "admin", "form_id": "f" * 32}).status_code == 403
        assert client.post(revoke_url(token)).status_code == 403
        assert client.post(revoke_url(token), headers=HTMX).status_code == 403
    assert snapshot(acme) == before


def test_only_admins_see_the_page_in_the_nav(alice_client, dave_client):
    assert f'href="{URL}"' in alice_client.get("/").content.decode()
    assert f'href="{URL}"' not in dave_client.get("/").content.decode()


def test_another_tenants_admin_gets_404_and_changes_nothing(carol_client, acme, globex):
    token, raw = create_token(acme, "acme-ci", TokenScope.ADMIN)
    before = snapshot(acme, globex)
    assert carol_client.get(revoke_url(token)).status_code == 404
    assert carol_client.post(revoke_url(token)).status_code == 404
    assert carol_client.post(revoke_url(token), headers=HTMX).status_code == 404
    assert "acme-ci" not in carol_client.get(URL).content.decode()
    assert snapshot(acme, globex) == before and ApiClient(raw).get("/api/v1/tokens/").status_code == 200


def test_carol_creates_tokens_for_her_own_tenant(carol_client, acme, globex):
    post_form(carol_client, name="globex-app")
    assert ApiToken.objects.get(name="globex-app").tenant == globex
    assert not ApiToken.objects.filter(tenant=acme).exists()
