"""The server's own AWS credentials (Bedrock without keys) serve only the tenants named in
AXONFLOW_AMBIENT_AWS_TENANTS, when saved and when used; no tenant picks an AWS profile
(SPEC §6)."""

from __future__ import annotations

import asyncio

import pytest

from providers.adapters import aws, http
from providers.adapters.base import CompletionRequest, Message, ProviderError
from providers.fake_upstream import bedrock as fake_bedrock
from providers.models import ProviderConfig
from routing import cache, router
from routing.health import breaker
from routing.health.status import DEFAULT_THRESHOLDS
from routing.route import Caller
from routing.selection import RoutingOptions
from tests.conftest import ApiClient, make_token
from tests.factories import TenantFactory

URL = "/api/v1/providers/"
ACCESS_KEY, SECRET = next(iter(fake_bedrock.TEST_CREDENTIALS.items()))
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
BEDROCK = {"name": "br", "type": "bedrock", "model": MODEL, "region": "us-east-1"}


@pytest.fixture(autouse=True)
def server_credentials(monkeypatch, tmp_path, settings):
    """The server's chain holds the fake's test keys (environment only); only acme may use it."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings.AXONFLOW_AMBIENT_AWS_TENANTS = ["acme"]
    aws.forget_credentials()
    yield
    aws.forget_credentials()


@pytest.fixture
def initech(db):
    """An enterprise tenant the operator did not name."""
    return TenantFactory(slug="initech", name="Initech", plan="enterprise")


@pytest.fixture
def initech_api(initech) -> ApiClient:
    return ApiClient(make_token(initech))


def rows(as_tenant, tenant) -> list[dict]:
    with as_tenant(tenant):
        return list(ProviderConfig.objects.filter(tenant=tenant).values())


# --- when saved ---------------------------------------------------------------------------


def test_a_named_tenant_may_save_bedrock_without_keys(acme_api):
    r = acme_api.post(URL, BEDROCK)
    assert r.status_code == 201, r.content


def test_any_other_tenant_is_refused_naming_the_setting(initech_api, initech, as_tenant):
    r = initech_api.post(URL, BEDROCK)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_config" and "AXONFLOW_AMBIENT_AWS_TENANTS" in error["message"]
    assert error["details"]["field"] == "settings"
    assert rows(as_tenant, initech) == []


def test_an_api_key_without_a_key_id_is_still_the_servers_chain(initech_api, initech, as_tenant):
    r = initech_api.post(URL, {**BEDROCK, "api_key": "some-secret-access-key-0000"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"
    assert rows(as_tenant, initech) == []


def test_any_tenant_may_save_bedrock_with_its_own_keys(initech_api):
    r = initech_api.post(URL, {**BEDROCK, "api_key": SECRET, "settings": {"aws_access_key_id": ACCESS_KEY}})
    assert r.status_code == 201, r.content


def test_removing_the_key_id_later_is_refused(initech_api, initech, as_tenant):
    initech_api.post(URL, {**BEDROCK, "api_key": SECRET, "settings": {"aws_access_key_id": ACCESS_KEY}})
    before = rows(as_tenant, initech)
    r = initech_api.patch(f"{URL}br/", {"settings": {}})
    assert r.status_code == 400 and "AXONFLOW_AMBIENT_AWS_TENANTS" in r.json()["error"]["message"]
    assert rows(as_tenant, initech) == before


@pytest.mark.parametrize("profile", ["default", "prod-admin", "", ["a"]])
def test_no_tenant_may_pick_an_aws_profile(acme_api, acme, as_tenant, profile):
    r = acme_api.post(URL, {**BEDROCK, "settings": {"profile": profile}})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_config" and "profile" in error["message"]
    assert rows(as_tenant, acme) == []


def test_an_empty_allowlist_refuses_everyone(acme_api, settings):
    settings.AXONFLOW_AMBIENT_AWS_TENANTS = []
    assert acme_api.post(URL, BEDROCK).status_code == 400


# --- when used ----------------------------------------------------------------------------


def complete(config: ProviderConfig):
    from providers import registry

    async def go():
        try:
            return await registry.build(config).complete(CompletionRequest([Message("user", "hi")]))
        finally:
            await http.close_session()

    return asyncio.run(go())


def keyless(tenant, upstream, make_provider, label="br") -> ProviderConfig:
    """A keyless Bedrock config stored without the save-time rules (an old row)."""
    base_url = upstream.base_url(label, "bedrock")
    return make_provider(tenant, name=label, type="bedrock", model=MODEL, region="us-east-1", base_url=base_url)


def test_a_named_tenant_is_served_with_the_servers_credentials(acme, make_provider, upstream):
    response = complete(keyless(acme, upstream, make_provider))
    assert response.content == "Echo: hi"
    assert ACCESS_KEY in upstream.last("br").headers["authorization"]


def test_another_tenants_old_keyless_row_is_refused_before_anything_is_sent(
    initech, make_provider, upstream, monkeypatch
):
    loads = []
    monkeypatch.setattr(aws, "_load_chain", lambda: loads.append(1))
    with pytest.raises(ProviderError) as caught:
        complete(keyless(initech, upstream, make_provider))
    assert caught.value.retryable and "AXONFLOW_AMBIENT_AWS_TENANTS" in caught.value.message
    assert loads == [] and upstream.requests("br") == []  # the chain is not even read
    assert SECRET not in str(caught.value)


def test_a_tenant_removed_from_the_list_stops_being_served(acme, make_provider, upstream, settings):
    config = keyless(acme, upstream, make_provider)
    complete(config)
    settings.AXONFLOW_AMBIENT_AWS_TENANTS = ["someone-else"]
    with pytest.raises(ProviderError):
        complete(config)
    assert len(upstream.requests("br")) == 1


def test_the_router_fails_over_from_a_refused_keyless_bedrock(initech, make_provider, upstream):
    keyless(initech, upstream, make_provider)
    make_provider(initech, name="oa", priority=-1, base_url=upstream.base_url("oa", "openai"), api_key="sk-oa-00001111")
    snapshot = cache.load_snapshot(initech.pk)
    breaker.remember_thresholds(initech.pk, DEFAULT_THRESHOLDS)  # no load on the health thread

    async def go():
        try:
            request = CompletionRequest([Message("user", "hi")])
            return await router.complete(snapshot, request, RoutingOptions(), Caller(initech.pk))
        finally:
            await http.close_session()

    result = asyncio.run(go())
    assert result.provider_name == "oa"
    assert [(a.provider, a.outcome) for a in result.attempts] == [("br", "error"), ("oa", "success")]
    assert "AXONFLOW_AMBIENT_AWS_TENANTS" in result.attempts[0].error


def test_a_config_whose_tenant_is_not_loaded_on_the_loop_is_refused(acme, make_provider, upstream):
    config = keyless(acme, upstream, make_provider)
    fields = {f.attname: getattr(config, f.attname) for f in ProviderConfig._meta.concrete_fields}
    unloaded = ProviderConfig(**fields)  # tenant_id only: reading the tenant would be a query
    with pytest.raises(ProviderError):  # none is made on the event loop: refused, not guessed
        complete(unloaded)
    assert upstream.requests("br") == []
