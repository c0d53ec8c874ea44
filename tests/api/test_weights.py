"""GET, PUT /api/v1/routing/weights/."""

from __future__ import annotations

import pytest

from providers.models import ProviderConfig
from routing.health import breaker
from tenants.models import TokenScope
from tests.conftest import ApiClient, make_token

URL = "/api/v1/routing/weights/"


@pytest.fixture
def providers(acme, make_provider):
    return make_provider(acme, name="a", weight=50), make_provider(acme, name="b", weight=10)


def weights(tenant, as_tenant) -> dict:
    with as_tenant(tenant):
        return dict(ProviderConfig.objects.filter(tenant=tenant).values_list("name", "weight"))


def test_it_lists_the_tenants_weights(acme_api, providers):
    r = acme_api.get(URL)
    assert r.status_code == 200
    assert r.json() == {"weights": {"a": 50, "b": 10}}


def test_it_updates_the_named_providers_and_keeps_the_others(acme_api, providers, acme, as_tenant):
    r = acme_api.put(URL, {"weights": {"b": 90}})
    assert r.status_code == 200
    assert r.json() == {"weights": {"a": 50, "b": 90}}
    assert weights(acme, as_tenant) == {"a": 50, "b": 90}


@pytest.mark.parametrize(
    "body",
    [
        {"weights": {"a": -1}},
        {"weights": {"a": 101}},
        {"weights": {"a": "50"}},
        {"weights": {"a": 12.5}},
        {"weights": {"a": True}},
        {"weights": {"a": None}},
        {"weights": {"ghost": 10}},
        {"weights": {"a": 20, "ghost": 10}},
        {"weights": [50]},
        {"weights": "a=5"},
        {"a": 5},
        {"weights": {"a": 5}, "extra": 1},
        [1, 2],
    ],
)
def test_it_rejects_bad_input_and_changes_nothing(acme_api, providers, acme, as_tenant, body):
    r = acme_api.put(URL, body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "validation_error"
    assert weights(acme, as_tenant) == {"a": 50, "b": 10}


def test_one_bad_weight_rejects_the_whole_update(acme_api, providers, acme, as_tenant):
    assert acme_api.put(URL, {"weights": {"a": 1, "b": 1000}}).status_code == 400
    assert weights(acme, as_tenant) == {"a": 50, "b": 10}


def test_malformed_json_is_a_validation_error(acme_api, providers):
    r = acme_api.put(URL, "{nope", content_type="application/json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"


def test_a_completions_token_may_not_touch_weights(acme_completions_api, providers, acme, as_tenant):
    assert acme_completions_api.get(URL).status_code == 403
    assert acme_completions_api.put(URL, {"weights": {"a": 1}}).status_code == 403
    assert weights(acme, as_tenant) == {"a": 50, "b": 10}


def test_without_a_token_it_is_401(client, providers):
    r = client.get(URL)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_carol_sees_only_globex_and_cannot_change_acme(globex_api, providers, acme, as_tenant):
    assert globex_api.get(URL).json() == {"weights": {}}
    r = globex_api.put(URL, {"weights": {"a": 1}})
    assert r.status_code == 400 and r.json()["error"]["details"]["names"] == ["a"]
    assert weights(acme, as_tenant) == {"a": 50, "b": 10}


@pytest.mark.django_db(transaction=True)
def test_a_weight_change_takes_effect_on_the_next_request(gateway, acme, make_provider, upstream):
    breaker.reset()
    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111", weight=100)
    make_provider(acme, name="b", base_url=upstream.base_url("b"), api_key="sk-test-bbbb2222", weight=0)
    admin = ApiClient(make_token(acme, TokenScope.ADMIN))
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as app:
        chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        assert {app.post("/v1/chat/completions", json=chat).headers["x-axonflow-provider"] for _ in range(5)} == {"a"}
        assert admin.put(URL, {"weights": {"a": 0, "b": 100}}).status_code == 200
        assert {app.post("/v1/chat/completions", json=chat).headers["x-axonflow-provider"] for _ in range(5)} == {"b"}
        assert {app.post("/api/v1/completions", json={"prompt": "hi"}).json()["provider"] for _ in range(5)} == {"b"}
