"""Provider `settings` are parsed when saved, through the registry, exactly as the adapter
will parse them: a bad value, an unknown key or an unknown factory is a 400
`invalid_config` naming the setting and changes nothing; never a 500 later."""

from __future__ import annotations

import asyncio

import pytest

from axonflow_site.errors import InvalidConfig
from providers import registry
from providers.adapters import http
from providers.adapters.base import CompletionRequest, Message
from providers.adapters.openai import OpenAIProvider
from providers.models import ProviderConfig
from routing import cache, router
from routing.health import breaker
from routing.health.status import DEFAULT_THRESHOLDS
from routing.route import Caller
from routing.selection import RoutingOptions

URL = "/api/v1/providers/"
BASE = {
    "openai": {"model": "gpt-4o-mini", "api_key": "sk-test-abcdefgh12345678"},
    "anthropic": {"model": "claude-3-5-haiku-latest", "api_key": "sk-ant-test-abcdefgh1234"},
    "ollama": {"model": "llama3.2", "base_url": "http://127.0.0.1:11434"},
    "gemini": {"model": "gemini-2.5-flash", "api_key": "AIzaSyFAKE-gemini-key-000000000000000"},
    "bedrock": {"model": "amazon.nova-lite-v1:0", "region": "us-east-1", "api_key": "secret-access-key-0000"},
    "custom": {"model": "my-model", "base_url": "http://127.0.0.1:9/v1"},
}
# Settings each type needs to be saved at all (bedrock: its own keys, not the server's).
NEEDED = {"bedrock": {"aws_access_key_id": "AKIDEXAMPLE"}}
TYPES = list(BASE)

BAD_CLOCKS = [
    "abc", "10", "", 0, -1, -0.5, 0.0, 601, 10**6, 10**400, True, False, [], {}, [5], {"s": 5},
]  # fmt: skip
CLOCKS = list(http.CLOCK_SETTINGS)
UNKNOWN_KEYS = [
    {"colour": "blue"}, {"Connect_Timeout": 5}, {"connect-timeout": 5}, {"": 1}, {"timeout": 5},
    {"api_key": "sk-in-settings"}, {"base_url": "http://elsewhere"}, {"x" * 500: 1},
]  # fmt: skip
BAD_TYPED = {
    "openai": [
        {"max_tokens_field": "tokens"}, {"max_tokens_field": 5}, {"stream_usage": "yes"}, {"stream_usage": 1},
        {"organization": 5}, {"project": ["p"]}, {"profile": "default"}, {"headers": {"X": "y"}},
    ],
    "anthropic": [
        {"anthropic_version": "latest"}, {"anthropic_version": 2023}, {"beta": 5}, {"beta": ["a,b"]},
        {"beta": [""]}, {"beta": ""}, {"beta": {}}, {"anthropic_version": ""}, {"anthropic_version": 0}, {"max_tokens": 0}, {"max_tokens": "10"}, {"max_tokens": True}, {"max_tokens": 1.5},
    ],
    "ollama": [
        {"keep_alive": True}, {"keep_alive": [1]}, {"num_ctx": -1}, {"num_ctx": "8k"}, {"num_ctx": 0},
        {"options": []}, {"options": ""}, {"options": 0}, {"options": "top_k=5"},
    ],
    "gemini": [
        {"api_version": "2"}, {"api_version": 1}, {"safety_settings": "none"}, {"safety_settings": [1]},
        {"safety_settings": {"category": "x"}}, {"safety_settings": {}}, {"safety_settings": ""},
    ],
    "bedrock": [
        {"aws_access_key_id": 5}, {"health_probe": "invoke"}, {"health_probe": None}, {"profile": "default"},
        {"profile": ""}, {"aws_access_key_id": "A" * 200},
    ],
    "custom": [
        {"headers": []}, {"headers": ""}, {"headers": {"Host": "evil"}}, {"headers": {"X-Ok": 5}}, {"headers": {"X": "a\r\nb"}},
        {"auth_scheme": "Bearer x"}, {"auth_header": ""}, {"health_path": "models"}, {"factory": "nope"},
        {"factory": 5}, {"factory": 0}, {"factory": False}, {"factory": []}, {"factory": ["a"]}, {"factory": {"name": "x"}},
    ],
}  # fmt: skip
CASES = (
    [(t, {name: value}) for t in TYPES for name in CLOCKS for value in BAD_CLOCKS]
    + [(t, {"factory": "team"}) for t in TYPES if t != "custom"]
    + [(t, keys) for t in TYPES for keys in UNKNOWN_KEYS]
    + [(t, bad) for t, cases in BAD_TYPED.items() for bad in cases]
)


def body(provider_type: str, settings: dict | None = None, name: str = "p") -> dict:
    merged = {**NEEDED.get(provider_type, {}), **(settings or {})}
    return {"name": name, "type": provider_type, **BASE[provider_type], "settings": merged}


def rows(as_tenant, tenant) -> list[dict]:
    with as_tenant(tenant):
        return list(ProviderConfig.objects.filter(tenant=tenant).order_by("pk").values())


@pytest.mark.parametrize("provider_type,bad", CASES, ids=[f"{t}-{i}" for i, (t, _) in enumerate(CASES)])
def test_bad_settings_are_invalid_config_and_save_nothing(acme_api, acme, as_tenant, provider_type, bad):
    r = acme_api.post(URL, body(provider_type, bad))
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "invalid_config", error
    assert error["details"]["field"] == "settings"
    assert rows(as_tenant, acme) == []


def test_a_non_numeric_clock_names_the_setting(acme_api, acme, as_tenant):
    r = acme_api.post(URL, body("openai", {"connect_timeout": "abc"}))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_config"
    assert "settings.connect_timeout" in error["message"] and error["details"]["setting"] == "connect_timeout"
    assert rows(as_tenant, acme) == []


def test_an_unknown_key_is_named_with_the_keys_that_are_known(acme_api):
    error = acme_api.post(URL, body("gemini", {"safety": []})).json()["error"]
    assert "settings.safety" in error["message"] and "safety_settings" in error["message"]
    assert error["details"]["setting"] == "safety"


@pytest.mark.parametrize("provider_type", TYPES)
@pytest.mark.parametrize("clocks", [{"connect_timeout": 0.5}, {"first_byte_timeout": 30, "idle_timeout": 600}, {}])
def test_good_clock_settings_are_accepted_for_every_type(acme_api, provider_type, clocks):
    r = acme_api.post(URL, body(provider_type, clocks))
    assert r.status_code == 201, r.content
    assert r.json()["settings"] == {**NEEDED.get(provider_type, {}), **clocks}


GOOD_TYPED = {
    "openai": {"max_tokens_field": "max_tokens", "stream_usage": False, "organization": "org-1", "project": "p"},
    "anthropic": {"anthropic_version": "2023-06-01", "beta": ["tools-2024-04-04"], "max_tokens": 512},
    "ollama": {"keep_alive": "5m", "num_ctx": 8192, "options": {"top_k": 40}},
    "gemini": {"api_version": "v1", "safety_settings": [{"category": "HARM_CATEGORY_HATE", "threshold": "BLOCK_NONE"}]},
    "bedrock": {"health_probe": "converse"},
    "custom": {
        "headers": {"X-Team": "search"},
        "auth_header": "api-key",
        "auth_scheme": "",
        "health_path": "/v1/models",
    },
}


@pytest.mark.parametrize("provider_type", TYPES)
def test_every_setting_an_adapter_documents_is_accepted(acme_api, provider_type):
    r = acme_api.post(URL, body(provider_type, GOOD_TYPED[provider_type]))
    assert r.status_code == 201, r.content


def test_patching_bad_settings_changes_nothing(acme_api, acme, as_tenant):
    assert acme_api.post(URL, body("openai", {"connect_timeout": 5})).status_code == 201
    before = rows(as_tenant, acme)
    for bad in ({"connect_timeout": "abc"}, {"colour": "blue"}, {"idle_timeout": -1}):
        r = acme_api.patch(f"{URL}p/", {"settings": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"
    r = acme_api.put(f"{URL}p/", {**body("openai", {"first_byte_timeout": "soon"}), "api_key": ""})
    assert r.status_code == 400
    assert rows(as_tenant, acme) == before


class Mine(OpenAIProvider):
    """A registered factory that is an OpenAI-compatible adapter class (openai's settings)."""


def test_a_factory_class_parses_settings_with_its_own_settings_class(acme_api, settings):
    settings.AXONFLOW_PROVIDER_FACTORIES = {"mine": "tests.test_settings_validation.Mine"}
    registry._loaded.pop("mine", None)
    try:
        r = acme_api.post(URL, body("custom", {"factory": "mine", "organization": "org-1"}))
        assert r.status_code == 201, r.content
        r = acme_api.post(URL, {**body("custom", {"factory": "mine", "headers": {}}), "name": "q"})
        assert r.status_code == 400 and r.json()["error"]["details"]["setting"] == "headers"
    finally:
        registry._loaded.pop("mine", None)


def test_a_custom_factory_must_be_registered(acme_api, acme, as_tenant, settings):
    r = acme_api.post(URL, body("custom", {"factory": "team"}))
    assert r.status_code == 400 and "team" in r.json()["error"]["message"]
    settings.AXONFLOW_PROVIDER_FACTORIES = {"team": "tests.test_adapter_custom.team_factory"}
    registry._loaded.pop("team", None)
    try:
        r = acme_api.post(URL, body("custom", {"factory": "team", "anything": "the factory's own"}))
        assert r.status_code == 201, r.content
        r = acme_api.post(URL, {**body("custom", {"factory": "team", "idle_timeout": "x"}), "name": "q"})
        assert r.status_code == 400 and r.json()["error"]["details"]["setting"] == "idle_timeout"
    finally:
        registry._loaded.pop("team", None)


# --- the same rules hold where the settings are read ------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), -1e-9, 600.0001])
def test_non_finite_or_out_of_range_clocks_are_refused(value):
    with pytest.raises(InvalidConfig):
        http.Clocks.for_timeout(30, {"idle_timeout": value})


def test_clock_settings_default_from_the_total_and_are_used_as_given():
    assert http.Clocks.for_timeout(5) == http.Clocks(connect=5, first_byte=5, idle=5, total=5)
    clocks = http.Clocks.for_timeout(60, {"connect_timeout": 2, "first_byte_timeout": 12.5, "idle_timeout": 20})
    assert (clocks.connect, clocks.first_byte, clocks.idle, clocks.total) == (2.0, 12.5, 20.0, 60.0)


def test_an_old_row_with_bad_settings_is_failed_over_not_a_500(acme, make_provider, upstream):
    make_provider(acme, name="old", priority=1, settings={"connect_timeout": "abc"})
    make_provider(acme, name="ok", base_url=upstream.base_url("ok", "openai"), api_key="sk-test-ok-00001111")
    snapshot = cache.load_snapshot(acme.pk)
    breaker.remember_thresholds(acme.pk, DEFAULT_THRESHOLDS)  # no load on the health thread

    async def go():
        try:
            request = CompletionRequest([Message("user", "hi")])
            return await router.complete(snapshot, request, RoutingOptions(), Caller(acme.pk))
        finally:
            await http.close_session()

    result = asyncio.run(go())
    assert result.provider_name == "ok"
    assert [(a.provider, a.outcome) for a in result.attempts] == [("old", "invalid_config"), ("ok", "success")]


def test_an_old_row_with_bad_settings_can_still_be_switched_off(acme_api, acme, make_provider, as_tenant):
    make_provider(acme, name="old", settings={"connect_timeout": "abc"})
    r = acme_api.patch(f"{URL}old/", {"enabled": False})
    assert r.status_code == 200, r.content  # settings are checked when they are edited
    with as_tenant(acme):
        assert ProviderConfig.objects.get(name="old").settings == {"connect_timeout": "abc"}
