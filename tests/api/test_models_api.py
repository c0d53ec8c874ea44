"""`/api/v1/models/`: model routes over REST: CRUD, the envelope for bad input with
nothing changed, tenant isolation, token scope and the audit entry of each change."""

from __future__ import annotations

import json

import pytest

from providers.models import ModelRoute, ModelRouteTarget
from tenants.models import AuditEntry, TokenScope
from tests.conftest import ApiClient, make_token

URL = "/api/v1/models/"
VALID = {"name": "fast", "description": "quick answers", "targets": [
    {"provider": "openai-main", "model": "gpt-4o", "weight": 70}, {"provider": "claude", "weight": 30}]}  # fmt: skip


@pytest.fixture
def pair(acme, make_provider):
    return (
        make_provider(acme, name="openai-main", model="gpt-4o-mini"),
        make_provider(acme, name="claude", type="anthropic", model="claude-3-haiku"),
    )


def state(as_tenant, *tenants):
    snap = {}
    for tenant in tenants:
        with as_tenant(tenant):
            snap[tenant.slug] = (
                list(ModelRoute.objects.filter(tenant=tenant).order_by("pk").values()),
                list(ModelRouteTarget.objects.filter(tenant=tenant).order_by("pk").values()),
                AuditEntry.objects.filter(tenant=tenant).count(),
            )
    return snap


def route_audit(tenant, as_tenant):
    with as_tenant(tenant):
        return list(AuditEntry.objects.filter(tenant=tenant, object_type="model_route").order_by("pk"))


def test_it_creates_a_route_and_lists_targets_by_provider_name(acme_api, acme, pair, as_tenant):
    r = acme_api.post(URL, VALID)
    assert r.status_code == 201, r.content
    body = r.json()
    assert (body["name"], body["description"]) == ("fast", "quick answers")
    assert body["targets"] == [
        {"provider": "openai-main", "model": "gpt-4o", "weight": 70},
        {"provider": "claude", "model": "claude-3-haiku", "weight": 30},
    ]
    assert body["created"] and body["updated"]
    with as_tenant(acme):
        assert ModelRoute.objects.get().targets.count() == 2


def test_it_lists_and_reads_routes(acme_api, pair):
    acme_api.post(URL, VALID)
    acme_api.post(URL, {"name": "cheap", "targets": [{"provider": "claude"}]})
    r = acme_api.get(URL)
    assert r.status_code == 200
    assert [(x["name"], len(x["targets"])) for x in r.json()] == [("cheap", 1), ("fast", 2)]
    one = acme_api.get(f"{URL}cheap/").json()
    assert one["targets"] == [{"provider": "claude", "model": "claude-3-haiku", "weight": 50}]
    assert one["description"] == ""


def test_the_list_takes_a_bounded_number_of_queries(acme_api, acme, make_provider, django_assert_max_num_queries):
    for i in range(10):
        make_provider(acme, name=f"p{i}")
        acme_api.post(URL, {"name": f"route{i}", "targets": [{"provider": f"p{j}"} for j in range(i + 1)]})
    with django_assert_max_num_queries(12):
        r = acme_api.get(URL)
    assert len(r.json()) == 10


@pytest.mark.parametrize("name", ["llama3:8b", "gpt-4.1", "a.b_c-d:e"])
def test_names_with_dots_and_colons_work_in_the_path(name, acme_api, pair):
    assert acme_api.post(URL, {**VALID, "name": name}).status_code == 201
    assert acme_api.get(f"{URL}{name}/").json()["name"] == name
    assert acme_api.put(f"{URL}{name}/", {"targets": [{"provider": "claude"}]}).status_code == 200
    assert acme_api.delete(f"{URL}{name}/").status_code == 204


def test_put_replaces_the_route_and_its_targets(acme_api, acme, pair, as_tenant):
    acme_api.post(URL, VALID)
    r = acme_api.put(f"{URL}fast/", {"targets": [{"provider": "claude", "model": "claude-3-opus", "weight": 10}]})
    assert r.status_code == 200, r.content
    assert r.json()["name"] == "fast" and r.json()["description"] == ""
    assert r.json()["targets"] == [{"provider": "claude", "model": "claude-3-opus", "weight": 10}]
    with as_tenant(acme):
        assert ModelRouteTarget.objects.count() == 1


def test_put_may_rename(acme_api, pair):
    acme_api.post(URL, VALID)
    r = acme_api.put(f"{URL}fast/", {**VALID, "name": "quick"})
    assert r.status_code == 200 and r.json()["name"] == "quick"
    assert acme_api.get(f"{URL}fast/").status_code == 404
    assert acme_api.get(f"{URL}quick/").status_code == 200


def test_it_deletes(acme_api, acme, pair, as_tenant):
    acme_api.post(URL, VALID)
    r = acme_api.delete(f"{URL}fast/")
    assert r.status_code == 204
    with as_tenant(acme):
        assert not ModelRoute.objects.exists() and not ModelRouteTarget.objects.exists()


def test_each_change_leaves_one_audit_entry_by_the_token(acme_api, acme, pair, as_tenant):
    acme_api.post(URL, VALID)
    acme_api.put(f"{URL}fast/", {**VALID, "description": "changed"})
    acme_api.delete(f"{URL}fast/")
    entries = route_audit(acme, as_tenant)
    assert [e.action for e in entries] == ["create", "update", "delete"]
    assert all(e.actor_kind == "token" and e.object_name == "fast" for e in entries)
    assert entries[1].before == {"description": "quick answers"} and entries[1].after == {"description": "changed"}
    assert entries[2].before["targets"][0] == {"provider": "openai-main", "model": "gpt-4o", "weight": 70}


def test_an_unknown_route_is_provider_not_found(acme_api, pair, acme, as_tenant):
    before = state(as_tenant, acme)
    for method in ("get", "put", "delete"):
        r = getattr(acme_api, method)(f"{URL}nope/", *([VALID] if method == "put" else []))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "provider_not_found"
        assert "nope" in r.json()["error"]["message"] and r.json()["error"]["details"] == {"name": "nope"}
    assert state(as_tenant, acme) == before


def test_another_tenants_route_is_not_found_and_unchanged(acme_api, globex_api, acme, globex, pair, make_provider,
                                                           as_tenant):  # fmt: skip
    acme_api.post(URL, VALID)
    make_provider(globex, name="claude")
    before = state(as_tenant, acme, globex)
    assert globex_api.get(URL).json() == []
    for method in ("get", "put", "delete"):
        r = getattr(globex_api, method)(f"{URL}fast/", *([{"targets": [{"provider": "claude"}]}] if method == "put" else []))  # fmt: skip
        assert r.status_code == 404 and r.json()["error"]["code"] == "provider_not_found"
    assert state(as_tenant, acme, globex) == before


def test_another_tenants_provider_is_unknown(globex_api, globex, pair, as_tenant):
    r = globex_api.post(URL, {"name": "steal", "targets": [{"provider": "openai-main"}]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "validation_error"
    assert r.json()["error"]["details"]["provider"] == "openai-main"
    with as_tenant(globex):
        assert not ModelRoute.objects.exists()


def test_a_duplicate_name_is_409(acme_api, acme, pair, as_tenant):
    acme_api.post(URL, VALID)
    before = state(as_tenant, acme)
    r = acme_api.post(URL, VALID)
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate_provider"
    assert r.json()["error"]["details"] == {"field": "name", "name": "fast"}
    assert state(as_tenant, acme) == before


def test_a_route_cannot_take_a_providers_name_nor_a_provider_a_routes(acme_api, acme, pair, as_tenant):
    r = acme_api.post(URL, {**VALID, "name": "claude"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate_provider"
    acme_api.post(URL, VALID)
    r = acme_api.post("/api/v1/providers/", {"name": "fast", "type": "openai", "model": "gpt-4o", "api_key": "sk-x"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate_provider"
    acme_api.post(URL, {**VALID, "name": "slow"})
    r = acme_api.put("/api/v1/models/slow/", {**VALID, "name": "fast"})
    assert r.status_code == 409


BAD_BODIES = [
    ([], "validation_error"),
    ("fast", "validation_error"),
    (None, "validation_error"),
    ({}, "validation_error"),
    ({"name": "fast"}, "validation_error"),
    ({"targets": [{"provider": "claude"}]}, "validation_error"),
    ({**VALID, "name": ""}, "validation_error"),
    ({**VALID, "name": "auto"}, "validation_error"),
    ({**VALID, "name": "has space"}, "validation_error"),
    ({**VALID, "name": "a/b"}, "validation_error"),
    ({**VALID, "name": "x" * 129}, "validation_error"),
    ({**VALID, "name": 12}, "validation_error"),
    ({**VALID, "name": {"$gt": ""}}, "validation_error"),
    ({**VALID, "description": 5}, "validation_error"),
    ({**VALID, "description": "d" * 501}, "validation_error"),
    ({**VALID, "enabled": True}, "validation_error"),
    ({**VALID, "targets": []}, "validation_error"),
    ({**VALID, "targets": "claude"}, "validation_error"),
    ({**VALID, "targets": {"provider": "claude"}}, "validation_error"),
    ({**VALID, "targets": [None]}, "validation_error"),
    ({**VALID, "targets": [["claude"]]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "ghost"}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "claude"}, {"provider": "claude"}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "claude", "priority": 9}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "claude", "weight": -5}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "claude", "weight": 101}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "claude", "weight": 1.5}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "claude", "weight": False}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "claude", "weight": "x"}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "claude", "weight": 1e308}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "claude", "model": 3}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "claude", "model": "m" * 201}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": ["claude"]}]}, "validation_error"),
    ({**VALID, "targets": [{"provider": "claude"}] * 40}, "validation_error"),
]


@pytest.mark.parametrize("data, code", BAD_BODIES)
def test_bad_bodies_are_refused_on_create_and_change_nothing(data, code, acme_api, acme, pair, as_tenant):
    acme_api.post(URL, {**VALID, "name": "existing"})
    before = state(as_tenant, acme)
    r = acme_api.post(URL, data)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert state(as_tenant, acme) == before


@pytest.mark.parametrize("data, code", [(d, c) for d, c in BAD_BODIES if not (isinstance(d, dict) and "targets" in d
                                        and "name" not in d)])  # fmt: skip
def test_bad_bodies_are_refused_on_put_and_change_nothing(data, code, acme_api, acme, pair, as_tenant):
    acme_api.post(URL, {**VALID, "name": "existing"})
    before = state(as_tenant, acme)
    r = acme_api.put(f"{URL}existing/", data)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == code
    assert state(as_tenant, acme) == before


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b'{"name": "fast", "targets": [' + b"[" * 5000 + b"]" * 5000 + b"]}", b"\xff\xfe",
     b'{"name": NaN, "targets": []}', b'{"name": "fast", "targets": [{"provider": "claude", "weight": Infinity}]}'],
)  # fmt: skip
def test_malformed_json_is_a_validation_error(raw, acme_api, acme, pair, as_tenant):
    before = state(as_tenant, acme)
    r = acme_api.generic("POST", URL, raw, content_type="application/json", **acme_api._auth({}))
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == "validation_error"
    assert state(as_tenant, acme) == before


def test_a_huge_body_is_413(acme_api, acme, pair, as_tenant, settings):
    settings.AXONFLOW_MAX_BODY_BYTES = 1000
    r = acme_api.post(URL, {**VALID, "description": "x" * 2000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"  # SPEC §3 (issue 10)
    with as_tenant(acme):
        assert not ModelRoute.objects.exists()


def test_wrong_content_type_is_refused(acme_api, pair):
    r = acme_api.post(URL, "name=fast", content_type="application/x-www-form-urlencoded")
    assert r.status_code in (400, 415) and r.json()["error"]["code"] == "validation_error"


def test_patch_is_not_allowed(acme_api, pair):
    acme_api.post(URL, VALID)
    r = acme_api.patch(f"{URL}fast/", {"description": "x"})
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_a_completions_token_and_no_token_are_refused(acme, pair, as_tenant):
    completions = ApiClient(make_token(acme, TokenScope.COMPLETIONS, "app"))
    anonymous = ApiClient(None)
    for client in (completions, anonymous):
        assert client.get(URL).status_code in (401, 403)
        r = client.post(URL, VALID)
        assert r.status_code in (401, 403) and r.json()["error"]["code"] in ("unauthorized", "forbidden")
    with as_tenant(acme):
        assert not ModelRoute.objects.exists()


def test_the_schema_documents_the_endpoints(client):
    r = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    paths = json.loads(r.content)["paths"]
    assert set(paths["/api/v1/models/"]) >= {"get", "post"}
    assert set(paths["/api/v1/models/{name}/"]) >= {"get", "put", "delete"}
    assert "provider_not_found" in paths["/api/v1/models/{name}/"]["get"]["description"]
