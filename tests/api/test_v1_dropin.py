"""Drop-in use of /v1 by real applications (issue "Step 8"): the official `openai`
client asks for tool calls (plain and streamed), sends the tool result back, asks for
JSON and sends an image, through every provider type on the fake upstream; each
request the fake receives is in that provider's own format and, for OpenAI,
Anthropic, Gemini and Ollama, valid against its official OpenAPI description.
"""

from __future__ import annotations

import json

import openai
import pytest

from providers.fake_upstream import bedrock as fake_bedrock
from providers.models import ProviderConfig
from providers.secrets import set_api_key
from tenants.models import TokenScope
from tenants.rls import tenant_context
from tests.conftest import make_token
from tests.fixtures_upstream import assert_matches_spec

pytestmark = pytest.mark.django_db(transaction=True)

ACCESS_KEY, SECRET = next(iter(fake_bedrock.TEST_CREDENTIALS.items()))
TYPES = ("openai", "anthropic", "gemini", "bedrock", "ollama", "custom")
MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-20241022",
    "gemini": "gemini-2.0-flash",
    "bedrock": "anthropic.claude-3-5-haiku-20241022-v1:0",
    "ollama": "llama3.2",
    "custom": "served-model",
}
# The OpenAPI schema each chat request must satisfy (Bedrock has none in provider-specs:
# its shape is asserted by hand, from the Converse reference).
SPEC = {
    "openai": ("openai", "CreateChatCompletionRequest"),
    "custom": ("openai", "CreateChatCompletionRequest"),
    "anthropic": ("anthropic", "CreateMessageParams"),
    "gemini": ("gemini", "GenerateContentRequest__Req"),
    "ollama": ("ollama", "ChatRequest"),
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
# A 1x1 transparent PNG.
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def make(tenant, name: str, type_: str, upstream, **fields) -> ProviderConfig:
    fields.setdefault("model", MODELS[type_])
    if type_ == "bedrock":
        fields.update(region="us-east-1", settings={"aws_access_key_id": ACCESS_KEY})
    config = ProviderConfig(tenant=tenant, name=name, type=type_, base_url=upstream.base_url(name, type_),
                            timeout_seconds=5, **fields)  # fmt: skip
    set_api_key(config, SECRET if type_ == "bedrock" else f"sk-test-{name}-0123456789")
    with tenant_context(tenant.pk):
        config.save()
    return config


@pytest.fixture
def client(gateway, acme) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=make_token(acme, TokenScope.COMPLETIONS), max_retries=0)


@pytest.fixture(params=TYPES)
def provider(request, acme, upstream) -> ProviderConfig:
    return make(acme, request.param, request.param, upstream)


def sent(upstream, config: ProviderConfig) -> dict:
    """The last generation request the fake received for the provider, checked against
    the provider's OpenAPI description where provider-specs has one."""
    body = [r for r in upstream.requests(config.name) if r.kind == "chat"][-1].body
    if config.type in SPEC:
        assert_matches_spec(*SPEC[config.type], body)
    return body


def offered_tool_names(config: ProviderConfig, body: dict) -> list[str]:
    """The tool names in the provider's own request format."""
    if config.type in ("openai", "custom", "ollama"):
        return [t["function"]["name"] for t in body["tools"]]
    if config.type == "anthropic":
        return [t["name"] for t in body["tools"]]
    if config.type == "gemini":
        return [f["name"] for t in body["tools"] for f in t["functionDeclarations"]]
    return [t["toolSpec"]["name"] for t in body["toolConfig"]["tools"]]


def tool_result_sent(config: ProviderConfig, body: dict, call_id: str) -> str:
    """The tool result text as the provider received it, in its own format."""
    if config.type in ("openai", "custom"):
        message = body["messages"][-1]
        assert message["role"] == "tool" and message["tool_call_id"] == call_id
        return message["content"]
    if config.type == "ollama":
        message = body["messages"][-1]
        assert message["role"] == "tool"
        return message["content"]
    if config.type == "anthropic":
        (block,) = [b for b in body["messages"][-1]["content"] if b["type"] == "tool_result"]
        assert body["messages"][-1]["role"] == "user" and block["tool_use_id"] == call_id
        content = block["content"]
        return content if isinstance(content, str) else "".join(b["text"] for b in content)
    if config.type == "gemini":
        (part,) = [p for p in body["contents"][-1]["parts"] if "functionResponse" in p]
        assert part["functionResponse"]["name"] == "get_weather"
        return json.dumps(part["functionResponse"]["response"])
    (block,) = [b for b in body["messages"][-1]["content"] if "toolResult" in b]
    assert body["messages"][-1]["role"] == "user"
    return json.dumps(block["toolResult"]["content"])


def image_sent(config: ProviderConfig, body: dict) -> bool:
    """Whether the provider received the PNG in its own image format."""
    data = PNG.split(",", 1)[1]
    if config.type in ("openai", "custom"):
        parts = body["messages"][-1]["content"]
        return any(p.get("type") == "image_url" and p["image_url"]["url"] == PNG for p in parts)
    if config.type == "ollama":
        return body["messages"][-1]["images"] == [data]
    if config.type == "anthropic":
        blocks = body["messages"][-1]["content"]
        return any(b["type"] == "image" and b["source"] == {"type": "base64", "media_type": "image/png", "data": data}
                   for b in blocks)  # fmt: skip
    if config.type == "gemini":
        parts = body["contents"][-1]["parts"]
        return any(p.get("inlineData") == {"mimeType": "image/png", "data": data} for p in parts)
    blocks = body["messages"][-1]["content"]
    return any("image" in b and b["image"]["format"] == "png" and b["image"]["source"]["bytes"] == data for b in blocks)


def test_a_tool_call_and_the_second_turn_with_its_result(client, provider, upstream):
    first = client.chat.completions.create(model=provider.name, messages=ASK, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    assert offered_tool_names(provider, sent(upstream, provider)) == ["get_weather"]

    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": "18C", "sky": "sunny"}'}]  # fmt: skip
    second = client.chat.completions.create(model=provider.name, messages=history, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert "18C" in second.choices[0].message.content and "sunny" in second.choices[0].message.content
    assert "18C" in tool_result_sent(provider, sent(upstream, provider), call.id)


def test_a_streamed_tool_call_is_assembled_by_the_client(client, provider, upstream):
    with client.chat.completions.stream(model=provider.name, messages=ASK, tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and call.id
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    assert offered_tool_names(provider, sent(upstream, provider)) == ["get_weather"]


def test_json_mode_answers_json(client, provider, upstream):
    answer = client.chat.completions.create(
        model=provider.name, messages=[{"role": "user", "content": "Reply in JSON"}],
        response_format={"type": "json_object"},
    )  # fmt: skip
    assert isinstance(json.loads(answer.choices[0].message.content), dict)
    sent(upstream, provider)


def test_an_image_part_reaches_the_provider_in_its_format(client, provider, upstream):
    content = [{"type": "text", "text": "What is in this picture?"}, {"type": "image_url", "image_url": {"url": PNG}}]
    answer = client.chat.completions.create(model=provider.name, messages=[{"role": "user", "content": content}])
    assert answer.choices[0].message.content
    assert image_sent(provider, sent(upstream, provider))
