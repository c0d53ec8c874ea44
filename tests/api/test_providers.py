"""`/api/v1/providers/`: CRUD, write-only keys, validation rules, tenant isolation."""

from __future__ import annotations

import json

import pytest

from providers.models import ProviderConfig
from tenants.models import TokenScope
from tests.conftest import ApiClient, make_token

URL = "/api/v1/providers/"
VALID = {"name": "main", "type": "openai", "model": "gpt-4o-mini", "api_key": "sk-test-abcdefgh12345678"}


def snapshot(as_tenant, tenant):
    with as_tenant(tenant):
        return list(ProviderConfig.objects.filter(tenant=tenant).order_by("pk").values())


def test_it_creates_a_provider_and_never_returns_the_key(acme_api, acme, as_tenant):
    r = acme_api.post(URL, VALID)
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["name"] == "main" and body["api_key_set"] is True and body["api_key_last4"] == "5678"
    assert "sk-test-abcdefgh12345678" not in r.content.decode()
    assert "api_key" not in body
    with as_tenant(acme):
        assert ProviderConfig.objects.get(name="main").model == "gpt-4o-mini"


def test_it_lists_only_the_tokens_tenant(acme_api, globex_api, acme, globex, make_provider):
    make_provider(acme, name="acme-one")
    make_provider(globex, name="globex-one")
    assert [p["name"] for p in acme_api.get(URL).json()] == ["acme-one"]
    assert [p["name"] for p in globex_api.get(URL).json()] == ["globex-one"]


def test_another_tenants_provider_is_not_found_and_unchanged(globex_api, acme, make_provider, as_tenant):
    make_provider(acme, name="secret", weight=10)
    before = snapshot(as_tenant, acme)
    for method in ("get", "patch", "put", "delete"):
        call = getattr(globex_api, method)
        r = call(f"{URL}secret/") if method in ("get", "delete") else call(f"{URL}secret/", {"weight": 99})
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "provider_not_found"
    assert snapshot(as_tenant, acme) == before


def test_it_patches_and_keeps_the_key_when_absent(acme_api, acme, as_tenant):
    acme_api.post(URL, VALID)
    r = acme_api.patch(f"{URL}main/", {"weight": 80, "priority": 5})
    assert r.status_code == 200, r.content
    assert r.json()["weight"] == 80 and r.json()["api_key_last4"] == "5678"


def test_put_replaces_fields_but_keeps_the_write_only_key(acme_api):
    acme_api.post(URL, {**VALID, "weight": 10, "rate_limit": 5})
    r = acme_api.put(f"{URL}main/", {"name": "main", "type": "openai", "model": "gpt-4o"})
    assert r.status_code == 200, r.content
    assert (r.json()["weight"], r.json()["rate_limit"], r.json()["model"]) == (50, 0, "gpt-4o")
    assert r.json()["api_key_set"] is True


def test_it_deletes(acme_api, acme, as_tenant):
    acme_api.post(URL, VALID)
    assert acme_api.delete(f"{URL}main/").status_code == 204
    with as_tenant(acme):
        assert not ProviderConfig.objects.filter(name="main").exists()


def test_duplicate_name_is_409(acme_api, acme, as_tenant):
    acme_api.post(URL, VALID)
    r = acme_api.post(URL, VALID)
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate_provider"
    with as_tenant(acme):
        assert ProviderConfig.objects.count() == 1


def test_renaming_onto_an_existing_name_is_409(acme_api):
    acme_api.post(URL, VALID)
    acme_api.post(URL, {**VALID, "name": "other"})
    r = acme_api.patch(f"{URL}other/", {"name": "main"})
    assert r.status_code == 409


def test_same_name_in_two_tenants_is_fine(acme_api, globex_api):
    assert acme_api.post(URL, VALID).status_code == 201
    assert globex_api.post(URL, VALID).status_code == 201


BAD_BODIES = [
    ({**VALID, "weight": -1}, "validation_error", "weight"),
    ({**VALID, "weight": 101}, "validation_error", "weight"),
    ({**VALID, "weight": "heavy"}, "validation_error", "weight"),
    ({**VALID, "weight": True}, "validation_error", "weight"),
    ({**VALID, "weight": 1.5}, "validation_error", "weight"),
    ({**VALID, "priority": 10**6}, "validation_error", "priority"),
    ({**VALID, "timeout_seconds": 0}, "validation_error", "timeout_seconds"),
    ({**VALID, "timeout_seconds": 601}, "validation_error", "timeout_seconds"),
    ({**VALID, "rate_limit": -5}, "validation_error", "rate_limit"),
    ({**VALID, "name": ""}, "validation_error", "name"),
    ({**VALID, "name": "has space"}, "validation_error", "name"),
    ({**VALID, "name": "../etc"}, "validation_error", "name"),
    ({**VALID, "name": "x" * 65}, "validation_error", "name"),
    ({**VALID, "name": "auto"}, "validation_error", "name"),
    ({**VALID, "name": 7}, "validation_error", "name"),
    ({**VALID, "model": ""}, "validation_error", "model"),
    ({k: v for k, v in VALID.items() if k != "model"}, "validation_error", "model"),
    ({k: v for k, v in VALID.items() if k != "type"}, "validation_error", "type"),
    ({**VALID, "type": "skynet"}, "validation_error", "type"),
    ({**VALID, "type": "ollama"}, "validation_error", "base_url"),
    ({**VALID, "type": "custom"}, "validation_error", "base_url"),
    # The egress guard's refusals are invalid_config (issue 10; tests/test_egress*.py has the full table).
    ({**VALID, "base_url": "ftp://example.com"}, "invalid_config", "base_url"),
    ({**VALID, "base_url": "javascript:alert(1)"}, "invalid_config", "base_url"),
    ({**VALID, "base_url": "http://user:pw@example.com"}, "invalid_config", "base_url"),
    ({**VALID, "type": "bedrock", "model": "amazon.nova-lite-v1:0"}, "validation_error", "region"),
    ({**VALID, "type": "bedrock", "region": "mars-1"}, "validation_error", "region"),
    ({**VALID, "enabled": "yes"}, "validation_error", "enabled"),
    ({**VALID, "settings": []}, "validation_error", "settings"),
    ({**VALID, "cost_input_per_1k": -1}, "validation_error", "cost_input_per_1k"),
    ({**VALID, "cost_output_per_1k": "NaN"}, "validation_error", "cost_output_per_1k"),
    ({**VALID, "secret_ref": "env:DATABASE_URL"}, "invalid_config", "secret_ref"),
    ({**VALID, "secret_ref": "file:/etc/passwd"}, "invalid_config", "secret_ref"),
    ({**VALID, "secret_ref": "vault:x"}, "invalid_config", "secret_ref"),
]


@pytest.mark.parametrize("body,code,field", BAD_BODIES, ids=[f"{f}-{i}" for i, (_, _, f) in enumerate(BAD_BODIES)])
def test_it_rejects_bad_input_and_changes_nothing(acme_api, acme, as_tenant, body, code, field):
    before = snapshot(as_tenant, acme)
    r = acme_api.post(URL, body)
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == code
    assert error["details"].get("field") == field
    assert snapshot(as_tenant, acme) == before


def test_it_rejects_unknown_fields(acme_api, acme, as_tenant):
    r = acme_api.post(URL, {**VALID, "colour": "blue"})
    assert r.status_code == 400 and r.json()["error"]["details"]["fields"] == ["colour"]
    assert snapshot(as_tenant, acme) == []


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"a string"', b"null", b""])
def test_it_rejects_malformed_json(acme_api, acme, as_tenant, raw):
    r = acme_api.generic("POST", URL, raw, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {acme_api.raw_token}")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "validation_error"
    assert snapshot(as_tenant, acme) == []


def test_it_rejects_huge_bodies(acme_api, acme, as_tenant, settings):
    settings.AXONFLOW_MAX_BODY_BYTES = 1000
    r = acme_api.post(URL, {**VALID, "settings": {"pad": "x" * 5000}})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"  # SPEC §3 (issue 10)
    assert snapshot(as_tenant, acme) == []


def test_bad_patch_changes_nothing(acme_api, acme, as_tenant):
    acme_api.post(URL, VALID)
    before = snapshot(as_tenant, acme)
    for body in ({"weight": -3}, {"type": "anthropic"}, {"model": ""}, {"nope": 1}, {"timeout_seconds": "soon"}):
        r = acme_api.patch(f"{URL}main/", body)
        assert r.status_code == 400, body
    assert snapshot(as_tenant, acme) == before


def test_enterprise_type_on_community_plan_needs_a_license(globex_api, globex, as_tenant):
    r = globex_api.post(URL, {**VALID, "type": "gemini", "model": "gemini-2.5-flash"})
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "license_required"
    assert error["details"] == {"provider_type": "gemini", "required_tier": "enterprise", "current_tier": "community"}
    assert snapshot(as_tenant, globex) == []


def test_enterprise_plan_may_register_bedrock(acme_api):
    # With its own keys: the server's credentials serve only AXONFLOW_AMBIENT_AWS_TENANTS (issue 10).
    bedrock = {"type": "bedrock", "model": "amazon.nova-lite-v1:0", "region": "us-east-1"}
    r = acme_api.post(URL, {**VALID, **bedrock, "settings": {"aws_access_key_id": "AKIDEXAMPLE"}})
    assert r.status_code == 201, r.content


def test_missing_or_bad_token_is_401(acme, db):
    for client in (ApiClient(None), ApiClient("axf_not-a-real-token")):
        r = client.get(URL)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_completions_scope_cannot_manage_providers(acme):
    client = ApiClient(make_token(acme, TokenScope.COMPLETIONS))
    r = client.post(URL, VALID)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_revoked_token_is_401(acme):
    from django.utils import timezone

    from tenants.models import ApiToken

    raw = make_token(acme)
    ApiToken.objects.update(revoked_at=timezone.now())
    assert ApiClient(raw).get(URL).status_code == 401


def test_the_key_is_not_in_any_read(acme_api):
    acme_api.post(URL, VALID)
    for r in (acme_api.get(URL), acme_api.get(f"{URL}main/")):
        assert "sk-test-abcdefgh12345678" not in json.dumps(r.json())
