"""The custom adapter (any OpenAI-compatible server) and user factories registered
through settings (issue 3, must-show 3). Failure kinds shared by every adapter live in
test_adapter_contract.py."""

from __future__ import annotations

import pytest

from axonflow_site.errors import InvalidConfig
from providers import registry
from providers.adapters import openai
from providers.adapters.base import (
    CompletionRequest,
    EmbeddingRequest,
    ImagePart,
    Message,
    Provider,
    TextPart,
    Tool,
    ToolCall,
)
from providers.adapters.custom import CustomProvider, Settings
from tests.fixtures_upstream import assert_matches_spec, make_config

KEY = "custom-key-0123456789abcdef"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
REQUEST = CompletionRequest(messages=[Message("user", "Hello vLLM")], system="Be brief.", max_tokens=32)


def provider_for(upstream, label="cu", key=KEY, **settings):
    config = make_config("custom", upstream.base_url(label, "custom"), key, model=MODEL, settings=settings)
    return CustomProvider(config)


# --- settings ------------------------------------------------------------------------------


def test_settings_read_headers_and_auth_options():
    s = Settings.parse({"headers": {"X-Team": "search"}, "auth_header": "api-key", "auth_scheme": "", "project": "p"})
    assert (s.headers, s.auth_header, s.auth_scheme, s.project) == ((("X-Team", "search"),), "api-key", "", "p")
    assert s.max_tokens_field == "max_tokens" and s.stream_usage is True


@pytest.mark.parametrize(
    "raw",
    [
        {"headers": ["X-Team"]},
        {"headers": {"X-Team": "a\r\nX-Injected: 1"}},
        {"headers": {"Bad Header": "x"}},
        {"headers": {"Host": "evil.example"}},
        {"headers": {"X-Num": 5}},
        {"auth_header": "Content-Length"},
        {"auth_scheme": "Bearer token"},
        {"health_path": "models"},
        {"max_tokens_field": "tokens"},
    ],
)
def test_settings_reject_bad_values(raw):
    with pytest.raises(InvalidConfig):
        Settings.parse(raw)


def test_a_base_url_is_required():
    with pytest.raises(InvalidConfig):
        CustomProvider(make_config("custom", "", KEY, model=MODEL))


def test_it_reuses_the_openai_adapter():
    assert issubclass(CustomProvider, openai.OpenAIProvider)


# --- declared features ----------------------------------------------------------------------


def test_by_default_it_handles_what_openai_does():
    provider = CustomProvider(make_config("custom", "http://127.0.0.1:9/v1", KEY, model=MODEL))
    assert Settings.parse({}).features == openai.FEATURES
    assert provider.capabilities().features == openai.FEATURES and provider.supports_streaming


def test_a_text_only_server_declares_chat_and_streaming():
    config = make_config(
        "custom", "http://127.0.0.1:9/v1", KEY, model=MODEL, settings={"features": ["chat", "streaming"]}
    )
    provider = registry.build(config)
    capabilities = provider.capabilities()
    assert capabilities.features == {"chat", "streaming"} and capabilities.streaming
    tools = CompletionRequest(messages=[Message("user", "x")], tools=(Tool("f"),))
    image = Message("user", "x", parts=(TextPart("x"), ImagePart("data:image/png;base64,AAAA")))
    assert capabilities.missing(tools.required_features()) == {"tools"}
    assert capabilities.missing(CompletionRequest(messages=[image]).required_features()) == {"images"}
    assert capabilities.missing(REQUEST.required_features()) == frozenset()


def test_a_server_that_cannot_stream_says_so():
    provider = CustomProvider(
        make_config("custom", "http://127.0.0.1:9/v1", KEY, model=MODEL, settings={"features": ["chat"]})
    )
    assert not provider.supports_streaming and not provider.capabilities().streaming
    assert provider.capabilities().missing(CompletionRequest(messages=[], stream=True).required_features()) == {
        "streaming"
    }


@pytest.mark.parametrize(
    "features",
    [
        "chat",
        [],
        {"chat": True},
        ["chat", 5],
        ["chat", "teleport"],
        ["chat", "tools", "parallel_tool_calls", "Tools"],
        ["chat", "parallel_tool_calls"],
        ["chat", "image_urls"],
        ["tools"],
        ["streaming"],
    ],
)
def test_refused_features_are_an_invalid_config(features):
    with pytest.raises(InvalidConfig) as exc:
        Settings.parse({"features": features})
    assert exc.value.code == "invalid_config" and "settings.features" in exc.value.message
    with pytest.raises(InvalidConfig):
        registry.build(
            make_config("custom", "http://127.0.0.1:9/v1", KEY, model=MODEL, settings={"features": features})
        )


def test_openai_itself_takes_no_features_setting():
    with pytest.raises(InvalidConfig, match="features"):
        openai.Settings.parse({"features": ["chat"]})


# --- against the fake upstream ----------------------------------------------------------


@pytest.mark.usefixtures("http_session")
async def test_it_sends_an_openai_request_with_the_extra_headers(upstream):
    await provider_for(upstream, headers={"X-Team": "search", "X-Trace": "on"}).complete(REQUEST)
    sent = upstream.last("cu")
    assert (sent.method, sent.path) == ("POST", "/cu/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert (sent.headers["x-team"], sent.headers["x-trace"]) == ("search", "on")
    assert sent.body["max_tokens"] == 32 and "max_completion_tokens" not in sent.body
    assert sent.body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert_matches_spec("openai", "CreateChatCompletionRequest", sent.body)


@pytest.mark.usefixtures("http_session")
async def test_it_can_send_the_key_in_another_header_without_a_scheme(upstream):
    upstream.configure("cu", require_auth=False)
    await provider_for(upstream, auth_header="api-key", auth_scheme="").complete(REQUEST)
    sent = upstream.last("cu")
    assert sent.headers["api-key"] == KEY and "authorization" not in sent.headers


@pytest.mark.usefixtures("http_session")
async def test_a_keyless_server_gets_no_credential_header(upstream):
    upstream.configure("cu", require_auth=False)
    response = await provider_for(upstream, key="").complete(REQUEST)
    assert response.content == "Echo: Hello vLLM"
    assert "authorization" not in upstream.last("cu").headers


@pytest.mark.usefixtures("http_session")
async def test_it_passes_tools_through_and_reads_the_call(upstream):
    request = CompletionRequest(messages=[Message("user", "Find docs")], tools=(Tool("search"),), max_tokens=32)
    response = await provider_for(upstream).complete(request)
    sent = upstream.last("cu")
    assert sent.body["tools"] == [{"type": "function", "function": {"name": "search"}}]
    assert_matches_spec("openai", "CreateChatCompletionRequest", sent.body)
    assert [(c.name, c.input()) for c in response.tool_calls] == [("search", {})]  # no parameters, no arguments
    assert isinstance(response.tool_calls[0], ToolCall) and response.finish_reason == "tool_calls"


@pytest.mark.usefixtures("http_session")
async def test_it_embeds_with_the_configured_model(upstream):
    provider = provider_for(upstream, embedding_model="BAAI/bge-small-en-v1.5", headers={"X-Team": "t"})
    response = await provider.embed(EmbeddingRequest(["hi"]))
    sent = upstream.last("cu")
    assert (sent.path, sent.body["model"], sent.headers["x-team"]) == (
        "/cu/v1/embeddings",
        "BAAI/bge-small-en-v1.5",
        "t",
    )
    assert response.model == "BAAI/bge-small-en-v1.5" and len(response.vectors) == 1


@pytest.mark.usefixtures("http_session")
async def test_the_health_probe_calls_the_models_list_under_the_base_url(upstream):
    assert (await provider_for(upstream).health_check()).ok
    assert upstream.last("cu").path == "/cu/v1/models"


# --- a user factory registered through settings -------------------------------------------


class TeamProvider(CustomProvider):
    """A user's own provider: the OpenAI-compatible wire plus its own touch."""

    def headers(self, accept: str = "application/json") -> dict[str, str]:
        return {**super().headers(accept), "X-Team-Gateway": "1"}

    async def complete(self, request):
        response = await super().complete(request)
        response.content = f"[team] {response.content}"
        return response


def team_factory(config):
    return TeamProvider(config)


@pytest.fixture
def team_factory_setting(settings):
    settings.AXONFLOW_PROVIDER_FACTORIES = {"team": "tests.test_adapter_custom.team_factory"}
    registry._loaded.pop("team", None)
    yield
    registry._loaded.pop("team", None)


@pytest.fixture
def team_config(upstream, acme, make_provider):
    """A stored ProviderConfig of type custom that names the factory."""
    return make_provider(
        acme,
        name="team",
        type="custom",
        model=MODEL,
        base_url=upstream.base_url("team", "custom"),
        settings={"factory": "team"},
        api_key=KEY,
    )


@pytest.mark.usefixtures("http_session", "team_factory_setting")
async def test_a_factory_registered_in_settings_builds_and_serves_a_custom_config(upstream, team_config):
    provider = registry.build(team_config)
    assert isinstance(provider, TeamProvider) and isinstance(provider, Provider)
    response = await provider.complete(REQUEST)
    assert response.content == "[team] Echo: Hello vLLM"
    sent = upstream.last("team")
    assert sent.headers["x-team-gateway"] == "1" and sent.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.usefixtures("team_factory_setting")
def test_a_factory_built_provider_keeps_its_declared_features():
    settings = {"factory": "team", "features": ["chat", "streaming", "tools"]}
    provider = registry.build(make_config("custom", "http://127.0.0.1:9/v1", KEY, model=MODEL, settings=settings))
    assert isinstance(provider, TeamProvider)
    assert provider.capabilities().features == {"chat", "streaming", "tools"}


@pytest.mark.usefixtures("team_factory_setting")
def test_an_unknown_factory_name_is_an_invalid_config():
    config = make_config("custom", "http://127.0.0.1:9/v1", KEY, model=MODEL, settings={"factory": "nope"})
    with pytest.raises(InvalidConfig, match="nope"):
        registry.build(config)
