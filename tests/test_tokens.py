"""tenants/tokens.py: issuing (validated, stored only as a hash, shown once) and revoking
(once, at once, audited once) API tokens."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from axonflow_site.errors import ValidationFailed
from tenants import audit
from tenants.authentication import lookup_token
from tenants.models import ActorKind, ApiToken, AuditEntry, TokenScope, hash_token
from tenants.rls import tenant_context
from tenants.tokens import create_token, parse_expiry, revoke_token

pytestmark = pytest.mark.django_db


def entries(tenant) -> list[AuditEntry]:
    with tenant_context(tenant.pk):
        return list(AuditEntry.objects.filter(tenant=tenant).order_by("pk"))


def assert_no_secret(entry: AuditEntry, *secrets: str) -> None:
    text = json.dumps([entry.actor, entry.object_id, entry.object_name, entry.before, entry.after])
    for secret in secrets:
        assert secret not in text and secret[len(secret) // 2 :] not in text


def test_it_issues_a_token_stored_only_as_its_hash(acme):
    token, raw = create_token(acme, "support-bot", TokenScope.COMPLETIONS)
    assert raw.startswith("axf_") and raw.startswith(token.prefix) and len(raw) > 40
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.token_hash == hash_token(raw) and raw not in json.dumps(list(ApiToken.objects.values()), default=str)
    assert (stored.name, stored.scope, stored.expires_at, stored.revoked_at) == (
        "support-bot", TokenScope.COMPLETIONS, None, None
    )  # fmt: skip


def test_the_new_token_authenticates_as_its_tenant_and_scope(acme):
    token, raw = create_token(acme, "ops", TokenScope.ADMIN)
    identity = lookup_token(raw)
    assert (identity.token_id, identity.tenant_id, identity.scope) == (token.pk, acme.pk, TokenScope.ADMIN)


def test_the_scope_defaults_to_completions_and_the_name_is_stripped(acme):
    token, _raw = create_token(acme, "  app  ")
    assert (token.name, token.scope) == ("app", TokenScope.COMPLETIONS)


def test_every_token_is_different(acme):
    raws = {create_token(acme, "same name")[1] for _ in range(5)}
    assert len(raws) == 5 and ApiToken.objects.filter(tenant=acme, name="same name").count() == 5


def test_a_name_of_exactly_100_characters_is_accepted(acme):
    token, _raw = create_token(acme, "n" * 100)
    assert len(token.name) == 100


FUTURE = (timezone.now() + timedelta(days=30)).replace(microsecond=0)


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("", None),
        ("2031-05-06T07:08:09Z", datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2031-05-06T07:08:09+02:00", datetime(2031, 5, 6, 5, 8, 9, tzinfo=UTC)),
        ("2031-05-06T07:08", datetime(2031, 5, 6, 7, 8, tzinfo=UTC)),  # a form's datetime-local: UTC
        ("2031-05-06", datetime(2031, 5, 6, tzinfo=UTC)),
        (" 2031-05-06 07:08:09 ", datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)),
        (datetime(2031, 5, 6, 7, 8, 9), datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)),
    ],
)
def test_it_reads_expiries_as_utc(value, expected):
    assert parse_expiry(value) == expected


def test_an_expiry_in_the_future_is_kept(acme):
    token, raw = create_token(acme, "short-lived", TokenScope.COMPLETIONS, FUTURE.isoformat())
    assert ApiToken.objects.get(pk=token.pk).expires_at == FUTURE
    assert lookup_token(raw) is not None


def test_an_expired_token_does_not_authenticate(acme):
    token, raw = create_token(acme, "short-lived", TokenScope.COMPLETIONS, timezone.now() + timedelta(seconds=30))
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert lookup_token(raw) is None and not ApiToken.objects.active().filter(pk=token.pk).exists()


BAD = [
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "n" * 101}, "name"),
    ({"name": None}, "name"),
    ({"name": 5}, "name"),
    ({"name": ["app"]}, "name"),
    ({"name": "nul\x00byte"}, "name"),
    ({"name": "line\nbreak"}, "name"),
    ({"name": "bell\x07"}, "name"),
    ({"scope": ""}, "scope"),
    ({"scope": "root"}, "scope"),
    ({"scope": "ADMIN"}, "scope"),
    ({"scope": None}, "scope"),
    ({"scope": 1}, "scope"),
    ({"scope": ["admin"]}, "scope"),
    ({"expires_at": "yesterday"}, "expires_at"),
    ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "2031-13-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "2031-02-30T00:00:00Z"}, "expires_at"),
    ({"expires_at": "9999-12-31T23:59:59-05:00"}, "expires_at"),
    ({"expires_at": 1893456000}, "expires_at"),
    ({"expires_at": True}, "expires_at"),
    ({"expires_at": {"at": "2031-01-01"}}, "expires_at"),
    ({"expires_at": timezone.now() - timedelta(seconds=1)}, "expires_at"),
]


@pytest.mark.parametrize("change, field", BAD, ids=[f"{f}={v!r}"[:40] for c, f in BAD for v in c.values()])
def test_it_refuses_bad_input_and_creates_nothing(acme, change, field):
    values = {"name": "app", "scope": TokenScope.COMPLETIONS, "expires_at": None, **change}
    with pytest.raises(ValidationFailed) as caught:
        create_token(acme, **values)
    assert caught.value.code == "validation_error" and caught.value.details["field"] == field
    assert caught.value.message.startswith(f"{field}: ")
    assert not ApiToken.objects.exists() and entries(acme) == []


def test_creating_leaves_one_audit_entry_by_the_actor_without_the_token(acme):
    with audit.acting_as(ActorKind.USER, "alice"):
        token, raw = create_token(acme, "app", TokenScope.ADMIN, FUTURE)
    (entry,) = entries(acme)
    assert (entry.action, entry.object_type, entry.object_id, entry.actor_kind, entry.actor) == (
        "create", "api_token", str(token.pk), ActorKind.USER, "alice"
    )  # fmt: skip
    assert entry.after["name"] == "app" and entry.after["scope"] == "admin" and entry.after["prefix"] == token.prefix
    assert_no_secret(entry, raw, token.token_hash)


def test_revoking_refuses_the_token_at_once(acme):
    token, raw = create_token(acme, "app")
    assert lookup_token(raw) is not None  # now cached in this process
    assert revoke_token(token) is True
    assert lookup_token(raw) is None


def test_revoking_twice_changes_nothing_the_second_time(acme):
    token, raw = create_token(acme, "app")
    with audit.acting_as(ActorKind.USER, "alice"):
        assert revoke_token(token) is True
        first = ApiToken.objects.get(pk=token.pk).revoked_at
        stale = ApiToken.objects.get(pk=token.pk)
        stale.revoked_at = None  # a copy read before the first revocation
        assert revoke_token(stale) is False
    assert first is not None and ApiToken.objects.get(pk=token.pk).revoked_at == first == stale.revoked_at
    revokes = [e for e in entries(acme) if e.action == "revoke"]
    assert len(revokes) == 1 and len(entries(acme)) == 2  # create, revoke
    assert (revokes[0].actor, revokes[0].before, revokes[0].after["revoked_at"]) == (
        "alice", {"revoked_at": None}, first.isoformat()
    )  # fmt: skip
    assert_no_secret(revokes[0], raw, token.token_hash)


def test_revoking_an_expired_token_records_when(acme):
    token, _raw = create_token(acme, "old", TokenScope.COMPLETIONS, timezone.now() + timedelta(seconds=30))
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(days=1))
    assert revoke_token(token) is True and ApiToken.objects.get(pk=token.pk).revoked_at is not None
