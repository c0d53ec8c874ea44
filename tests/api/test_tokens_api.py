"""`/api/v1/tokens/`: create (the token shown once), list (never the token or its hash),
revoke (refused at once, in every process); admin-scope tokens of the tenant only; bad
input gets the envelope and changes nothing."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from routing import cache
from tenants import authentication
from tenants.models import ActorKind, ApiToken, AuditEntry, TokenScope
from tenants.rls import tenant_context
from tenants.tokens import create_token
from tests.conftest import ApiClient, make_token

pytestmark = pytest.mark.django_db

URL = "/api/v1/tokens/"
CREATED_FIELDS = {"id", "name", "scope", "prefix", "created", "expires_at", "token"}
LISTED_FIELDS = {"id", "name", "scope", "prefix", "created", "last_used", "expires_at", "revoked_at", "active",
                 "rpm_limit", "tpm_limit"}


def audit_count(tenant) -> int:
    with tenant_context(tenant.pk):
        return AuditEntry.objects.filter(tenant=tenant).count()


def snapshot(tenant) -> tuple:
    """What a request could change; not last_used, which every authenticated call stamps."""
    fields = [f.name for f in ApiToken._meta.concrete_fields if f.name != "last_used"]
    return list(ApiToken.objects.filter(tenant=tenant).order_by("pk").values(*fields)), audit_count(tenant)


def test_it_creates_a_token_and_shows_it_once(acme_api, acme):
    r = acme_api.post(URL, {"name": "support-bot", "scope": "completions"})
    assert r.status_code == 201, r.content
    body = r.json()
    assert set(body) == CREATED_FIELDS and r["Cache-Control"] == "no-store"
    assert body["token"].startswith(body["prefix"]) and (body["name"], body["scope"]) == ("support-bot", "completions")
    assert body["expires_at"] is None
    listed = acme_api.get(URL)
    assert body["token"] not in listed.content.decode() and body["prefix"] in listed.content.decode()
    assert ApiToken.objects.get(pk=body["id"]).tenant == acme


def test_the_token_is_never_logged(acme_api, caplog):
    caplog.set_level(logging.DEBUG)
    raw = acme_api.post(URL, {"name": "quiet", "scope": "admin"}).json()["token"]
    ApiClient(raw).get(URL)
    token_id = next(row["id"] for row in acme_api.get(URL).json() if row["name"] == "quiet")
    acme_api.delete(f"{URL}{token_id}/")
    ApiClient(raw).get(URL)  # refused: a 401 is logged, the token is not
    assert raw not in caplog.text and raw[12:] not in caplog.text


def test_the_created_token_works_with_its_scope(acme_api):
    admin = acme_api.post(URL, {"name": "ops", "scope": "admin"}).json()["token"]
    app = acme_api.post(URL, {"name": "app"}).json()["token"]  # completions by default
    assert ApiClient(admin).get(URL).status_code == 200
    r = ApiClient(app).get(URL)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_it_keeps_an_expiry(acme_api):
    when = (timezone.now() + timedelta(days=7)).replace(microsecond=0)
    r = acme_api.post(URL, {"name": "week", "expires_at": when.isoformat()})
    assert r.status_code == 201, r.content
    assert r.json()["expires_at"].replace("Z", "+00:00") == when.isoformat()
    assert ApiToken.objects.get(pk=r.json()["id"]).expires_at == when


def test_it_lists_the_tenants_tokens_without_secrets(acme_api, acme, globex):
    token, raw = create_token(acme, "listed", TokenScope.ADMIN)
    _other, other_raw = create_token(globex, "globex-only")
    r = acme_api.get(URL)
    assert r.status_code == 200
    rows = r.json()
    assert all(set(row) == LISTED_FIELDS for row in rows)
    assert [row["name"] for row in rows] == ["listed", "test"]  # newest first; "test" is acme_api's own
    text = r.content.decode()
    assert raw not in text and token.token_hash not in text and other_raw not in text and "globex-only" not in text
    assert "token_hash" not in text and "hash" not in rows[0]


def test_the_list_shows_last_use_and_revocation(acme_api, acme, monkeypatch):
    monkeypatch.setattr(authentication, "_last_used_written", {})  # ids recur across tests
    _token, raw = create_token(acme, "used", TokenScope.ADMIN)
    ApiClient(raw).get(URL)
    revoked, _ = create_token(acme, "gone")
    acme_api.delete(f"{URL}{revoked.pk}/")
    rows = {row["name"]: row for row in acme_api.get(URL).json()}
    assert rows["used"]["last_used"] is not None and rows["used"]["active"] is True
    assert rows["gone"]["revoked_at"] is not None and rows["gone"]["active"] is False


def test_a_revoked_token_is_refused_on_its_next_call(acme_api, acme):
    token, raw = create_token(acme, "ci", TokenScope.ADMIN)
    client = ApiClient(raw)
    assert client.get("/api/v1/providers/").status_code == 200  # works, and is now cached
    assert acme_api.delete(f"{URL}{token.pk}/").status_code == 204
    r = client.get("/api/v1/providers/")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None


def test_a_revocation_is_broadcast_to_every_process_once_committed(
    acme_api, acme, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(cache, "broadcast_invalidation", lambda tenant_id, **kw: sent.append((tenant_id, kw)))
    token, _raw = create_token(acme, "ci")
    with django_capture_on_commit_callbacks(execute=True):
        assert acme_api.delete(f"{URL}{token.pk}/").status_code == 204
    assert (acme.pk, {"tokens": True}) in sent


def test_a_token_may_revoke_itself(acme, acme_api):
    me = ApiToken.objects.get(tenant=acme, name="test")
    assert acme_api.delete(f"{URL}{me.pk}/").status_code == 204
    assert acme_api.get(URL).status_code == 401


def test_revoking_twice_is_a_no_op(acme_api, acme):
    token, _raw = create_token(acme, "twice")
    assert acme_api.delete(f"{URL}{token.pk}/").status_code == 204
    first, before = ApiToken.objects.get(pk=token.pk).revoked_at, audit_count(acme)
    assert acme_api.delete(f"{URL}{token.pk}/").status_code == 204
    assert ApiToken.objects.get(pk=token.pk).revoked_at == first and audit_count(acme) == before


def test_each_change_leaves_one_entry_by_the_token_without_the_secret(acme_api, acme):
    me = ApiToken.objects.get(tenant=acme, name="test")
    label = f"test ({me.prefix})"
    before = audit_count(acme)
    body = acme_api.post(URL, {"name": "audited", "scope": "admin"}).json()
    assert acme_api.delete(f"{URL}{body['id']}/").status_code == 204
    with tenant_context(acme.pk):
        created, revoked = AuditEntry.objects.filter(tenant=acme).order_by("pk")[before:]
    assert audit_count(acme) == before + 2
    stored = ApiToken.objects.get(pk=body["id"])
    for entry, action in ((created, "create"), (revoked, "revoke")):
        assert (entry.action, entry.object_type, entry.object_id) == (action, "api_token", str(body["id"]))
        assert (entry.actor_kind, entry.actor) == (ActorKind.TOKEN, label)
        text = json.dumps([entry.actor, entry.object_name, entry.before, entry.after])
        assert body["token"] not in text and stored.token_hash not in text and body["token"][12:] not in text


def test_another_tenants_token_is_not_found_and_unchanged(globex_api, acme, globex):
    token, raw = create_token(acme, "acme-secret", TokenScope.ADMIN)
    before = snapshot(acme), snapshot(globex)
    r = globex_api.delete(f"{URL}{token.pk}/")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (snapshot(acme), snapshot(globex)) == before
    assert "acme-secret" not in globex_api.get(URL).content.decode()
    assert ApiClient(raw).get(URL).status_code == 200


@pytest.mark.parametrize("scope", [TokenScope.COMPLETIONS])
def test_a_completions_token_may_not_manage_tokens(acme, scope):
    client = ApiClient(make_token(acme, scope, "app"))
    target, _raw = create_token(acme, "target", TokenScope.ADMIN)
    before = snapshot(acme)
    for r in (client.get(URL), client.post(URL, {"name": "x"}), client.delete(f"{URL}{target.pk}/")):
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert snapshot(acme) == before


@pytest.mark.parametrize("header", [None, "Bearer axf_not-a-token", "Basic YWxpY2U6cGFzcw==", "Bearer "])
def test_it_needs_a_live_token(acme, header):
    target, _raw = create_token(acme, "target", TokenScope.ADMIN)
    before = snapshot(acme)
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    client = ApiClient(None)
    for r in (client.get(URL, **extra), client.post(URL, {"name": "x"}, **extra),
              client.delete(f"{URL}{target.pk}/", **extra)):  # fmt: skip
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert snapshot(acme) == before


BAD_BODIES = [
    ([], "validation_error"),
    ("a string", "validation_error"),
    (None, "validation_error"),
    (42, "validation_error"),
    ({}, "validation_error"),
    ({"scope": "admin"}, "validation_error"),
    ({"name": ""}, "validation_error"),
    ({"name": "   "}, "validation_error"),
    ({"name": "n" * 101}, "validation_error"),
    ({"name": 5}, "validation_error"),
    ({"name": None}, "validation_error"),
    ({"name": True}, "validation_error"),
    ({"name": ["app"]}, "validation_error"),
    ({"name": {"x": 1}}, "validation_error"),
    ({"name": "nul\u0000byte"}, "validation_error"),
    ({"name": "app", "scope": "root"}, "validation_error"),
    ({"name": "app", "scope": "Admin"}, "validation_error"),
    ({"name": "app", "scope": None}, "validation_error"),
    ({"name": "app", "scope": 1}, "validation_error"),
    ({"name": "app", "scope": ["admin"]}, "validation_error"),
    ({"name": "app", "expires_at": "tomorrow"}, "validation_error"),
    ({"name": "app", "expires_at": "2001-01-01T00:00:00Z"}, "validation_error"),
    ({"name": "app", "expires_at": "2031-13-01T00:00:00Z"}, "validation_error"),
    ({"name": "app", "expires_at": "9999-12-31T23:59:59-05:00"}, "validation_error"),
    ({"name": "app", "expires_at": 1893456000}, "validation_error"),
    ({"name": "app", "expires_at": 1e309}, "validation_error"),
    ({"name": "app", "expires_at": True}, "validation_error"),
    ({"name": "app", "expires_at": []}, "validation_error"),
    ({"name": "app", "extra": 1}, "validation_error"),
    ({"name": "app", "token_hash": "0" * 64}, "validation_error"),
    ({"name": "app", "prefix": "axf_chosen"}, "validation_error"),
    ({"name": "app", "revoked_at": None}, "validation_error"),
    ({"name": "app", "tenant": 2}, "validation_error"),
    ({"name": "app", "id": 1}, "validation_error"),
]


@pytest.mark.parametrize("body, code", BAD_BODIES, ids=[json.dumps(b, default=str)[:50] for b, _ in BAD_BODIES])
def test_bad_bodies_get_the_envelope_and_change_nothing(acme_api, acme, body, code):
    before = snapshot(acme)
    r = acme_api.post(URL, json.dumps(body))
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == code and set(error) == {"code", "message", "details"} and error["message"]
    assert snapshot(acme) == before


@pytest.mark.parametrize(
    "raw, content_type, status",
    [
        ("{", "application/json", 400),
        ('{"name": "app",}', "application/json", 400),
        ("", "application/json", 400),
        ("\xff\xfe", "application/json", 400),
        ('{"name": "a", "name": NaN}', "application/json", 400),
        ("[" * 100_000 + "]" * 100_000, "application/json", 400),
        ("name=app", "application/x-www-form-urlencoded", 415),
        ("<name>app</name>", "application/xml", 415),
        (json.dumps({"name": "x" * 2_000_000}), "application/json", 413),
    ],
    ids=["truncated", "trailing-comma", "empty", "not-utf8", "nan", "deeply-nested", "form", "xml", "huge"],
)
def test_malformed_requests_get_the_envelope_and_change_nothing(acme_api, acme, raw, content_type, status):
    before = snapshot(acme)
    r = acme_api.post(URL, raw, content_type=content_type)
    assert r.status_code == status, r.content[:200]
    # SPEC §3: a body over the limit is payload_too_large (issue 10), the rest validation_error
    assert r.json()["error"]["code"] == ("payload_too_large" if status == 413 else "validation_error")
    assert snapshot(acme) == before


@pytest.mark.parametrize("token_id", ["abc", "-1", "0", "1.5", "99999999", "9" * 30, "1e3", "\u0661", "%20"])
def test_unknown_ids_are_not_found_and_change_nothing(acme_api, acme, token_id):
    before = snapshot(acme)
    r = acme_api.delete(f"{URL}{token_id}/")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert snapshot(acme) == before


@pytest.mark.parametrize("method", ["put", "patch"])
def test_tokens_cannot_be_edited(acme_api, acme, method):
    token, _raw = create_token(acme, "fixed")
    before = snapshot(acme)
    for url in (URL, f"{URL}{token.pk}/"):
        r = getattr(acme_api, method)(url, {"name": "renamed", "scope": "admin"})
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert acme_api.get(f"{URL}{token.pk}/").status_code == 405
    assert snapshot(acme) == before


def test_the_schema_documents_the_endpoints(acme_api):
    from django.test import Client

    schema = Client().get("/api/schema/?format=json").json()
    assert {"get", "post"} <= set(schema["paths"]["/api/v1/tokens/"])
    assert "delete" in schema["paths"]["/api/v1/tokens/{token_id}/"]
