"""`POST, DELETE /api/v1/providers/{name}/state/`: operator states through the API,
audited as the token, obeyed by the router, refused with the envelope for bad input."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from providers.models import ProviderConfig
from tenants.models import AuditEntry, TokenScope
from tests.conftest import ApiClient, make_token

KEY = "sk-state-api-0123456789abcdef"


def url(name: str) -> str:
    return f"/api/v1/providers/{name}/state/"


@pytest.fixture
def main(acme, make_provider):
    return make_provider(acme, name="main", api_key=KEY)


def snapshot(as_tenant, tenant) -> tuple:
    with as_tenant(tenant):
        return (
            list(ProviderConfig.objects.filter(tenant=tenant).order_by("pk").values()),
            AuditEntry.objects.filter(tenant=tenant).count(),
        )


def provider_entries(as_tenant, tenant) -> list[AuditEntry]:
    with as_tenant(tenant):
        return list(AuditEntry.objects.filter(tenant=tenant, object_type="provider").order_by("pk"))


def test_it_drains_a_provider_and_answers_with_its_state(acme_api, main, acme, as_tenant):
    until = (timezone.now() + datetime.timedelta(hours=1)).replace(microsecond=0)
    before = len(provider_entries(as_tenant, acme))
    r = acme_api.post(url("main"), {"state": "drained", "reason": "upstream incident", "until": until.isoformat()})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["name"] == "main" and body["operator_state"] == "drained"
    assert body["operator_reason"] == "upstream incident" and body["operator_by"].startswith("test (axf_")
    assert body["operator_at"] and datetime.datetime.fromisoformat(body["operator_until"]) == until
    assert KEY not in r.content.decode()
    (entry,) = provider_entries(as_tenant, acme)[before:]
    assert entry.action == "drain" and entry.actor_kind == "token" and entry.actor == body["operator_by"]
    assert KEY not in str(entry.before) + str(entry.after)


def test_the_provider_read_shows_the_operator_state(acme_api, main):
    acme_api.post(url("main"), {"state": "forced_unhealthy", "reason": "bad answers"})
    body = acme_api.get("/api/v1/providers/main/").json()
    assert body["operator_state"] == "forced_unhealthy" and body["operator_reason"] == "bad answers"
    assert body["operator_until"] is None and body["operator_by"] and body["operator_at"]


def test_delete_clears_the_state_with_one_entry_and_repeats_safely(acme_api, main, acme, as_tenant):
    acme_api.post(url("main"), {"state": "forced_healthy", "reason": "probe is wrong", "until": None})
    before = len(provider_entries(as_tenant, acme))
    r = acme_api.delete(url("main"))
    assert r.status_code == 200, r.content
    assert r.json()["operator_state"] == "" and r.json()["operator_reason"] == "" and r.json()["operator_until"] is None
    assert acme_api.delete(url("main")).status_code == 200
    assert [e.action for e in provider_entries(as_tenant, acme)[before:]] == ["clear_state"]


def test_a_repeated_post_is_safe(acme_api, main, acme, as_tenant):
    before = len(provider_entries(as_tenant, acme))
    for _ in range(3):
        assert acme_api.post(url("main"), {"state": "drained", "reason": "deploy"}).status_code == 200
    assert [e.action for e in provider_entries(as_tenant, acme)[before:]] == ["drain"]


@pytest.mark.django_db(transaction=True)
def test_the_router_obeys_a_drain_at_once_and_a_clear_after(acme_api, two):
    def route() -> str:
        r = acme_api.post("/api/v1/completions", {"prompt": "hi"})
        assert r.status_code == 200, r.content
        return r.json()["route"]["provider_name"]

    assert route() == "a"  # priority 1: always first
    assert acme_api.post(url("a"), {"state": "drained", "reason": "deploy"}).status_code == 200
    assert {route() for _ in range(3)} == {"b"}
    assert acme_api.delete(url("a")).status_code == 200
    assert route() == "a"


def test_another_tenants_provider_is_not_found_and_unchanged(globex_api, main, acme, as_tenant):
    before = snapshot(as_tenant, acme)
    for call in (globex_api.post(url("main"), {"state": "drained", "reason": "x"}), globex_api.delete(url("main"))):
        assert call.status_code == 404
        assert call.json()["error"]["code"] == "provider_not_found"
    assert snapshot(as_tenant, acme) == before


def test_an_unknown_name_is_provider_not_found(acme_api, main):
    r = acme_api.post(url("nope"), {"state": "drained", "reason": "x"})
    assert r.status_code == 404 and r.json()["error"] == {
        "code": "provider_not_found", "message": "No provider named 'nope'.", "details": {"name": "nope"},
    }  # fmt: skip
    assert acme_api.delete(url("nope")).status_code == 404


def test_a_completions_token_or_none_is_refused(acme, main, as_tenant):
    app = ApiClient(make_token(acme, TokenScope.COMPLETIONS, "app"))
    before = snapshot(as_tenant, acme)
    assert app.post(url("main"), {"state": "drained", "reason": "x"}).status_code == 403
    assert app.delete(url("main")).status_code == 403
    assert ApiClient(None).post(url("main"), {"state": "drained", "reason": "x"}).status_code == 401
    assert snapshot(as_tenant, acme) == before


PAST = "2001-01-01T00:00:00Z"
BAD_BODIES = [
    ({}, "validation_error"),
    ({"reason": "x"}, "validation_error"),
    ({"state": "drained"}, "validation_error"),
    ({"state": "drained", "reason": ""}, "validation_error"),
    ({"state": "drained", "reason": "   "}, "validation_error"),
    ({"state": "drained", "reason": None}, "validation_error"),
    ({"state": "drained", "reason": 5}, "validation_error"),
    ({"state": "drained", "reason": ["x"]}, "validation_error"),
    ({"state": "drained", "reason": "x" * 501}, "validation_error"),
    ({"state": "Drained", "reason": "x"}, "validation_error"),
    ({"state": "offline", "reason": "x"}, "validation_error"),
    ({"state": "", "reason": "x"}, "validation_error"),
    ({"state": None, "reason": "x"}, "validation_error"),
    ({"state": 1, "reason": "x"}, "validation_error"),
    ({"state": {"x": 1}, "reason": "x"}, "validation_error"),
    ({"state": "drained", "reason": "x", "until": PAST}, "validation_error"),
    ({"state": "drained", "reason": "x", "until": "soon"}, "validation_error"),
    ({"state": "drained", "reason": "x", "until": "2030-02-30T00:00:00Z"}, "validation_error"),
    ({"state": "drained", "reason": "x", "until": 1893456000}, "validation_error"),
    ({"state": "drained", "reason": "x", "until": True}, "validation_error"),
    ({"state": "drained", "reason": "x", "until": ["2030-01-01"]}, "validation_error"),
    ({"state": "drained", "reason": "x", "until": "2" * 100_000}, "validation_error"),
    ({"state": "drained", "reason": "x", "by": "mallory"}, "validation_error"),
    ({"state": "drained", "reason": "x", "operator_by": "mallory"}, "validation_error"),
    ({"state": "drained", "reason": "x", "weight": 0}, "validation_error"),
    ([], "validation_error"),
    (["drained"], "validation_error"),
    ("drained", "validation_error"),
    (42, "validation_error"),
]


@pytest.mark.parametrize("body, code", BAD_BODIES, ids=[str(i) for i in range(len(BAD_BODIES))])
def test_bad_input_gets_the_envelope_and_changes_nothing(acme_api, main, acme, as_tenant, body, code):
    before = snapshot(as_tenant, acme)
    r = acme_api.post(url("main"), body)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert snapshot(as_tenant, acme) == before


@pytest.mark.parametrize("raw", ["{", '{"state": "drained", "reason": ', "\x00\x01", "[" * 5000 + "]" * 5000])
def test_malformed_json_gets_the_envelope_and_changes_nothing(acme_api, main, acme, as_tenant, raw):
    before = snapshot(as_tenant, acme)
    r = acme_api.post(url("main"), raw, content_type="application/json")
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"] == "validation_error"
    assert snapshot(as_tenant, acme) == before


def test_a_body_field_error_names_the_field(acme_api, main):
    r = acme_api.post(url("main"), {"state": "drained", "reason": "x", "until": PAST})
    assert r.json()["error"]["details"] == {"field": "until"}
    r = acme_api.post(url("main"), {"state": "drained", "reason": "x", "nope": 1})
    assert r.json()["error"]["details"] == {"field": "nope", "fields": ["nope"]}


def test_the_state_endpoint_is_in_the_schema(acme_api):
    r = acme_api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert r.status_code == 200
    assert "/api/v1/providers/{name}/state/" in r.content.decode()
