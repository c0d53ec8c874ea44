"""POST /v1/messages with the official `anthropic` client, routed to an Anthropic-type
and to an OpenAI-type provider: create, stream, and a tool call."""

from __future__ import annotations

import anthropic
import pytest

from tenants.models import TokenScope
from tests.api.test_model_resolution import records
from tests.api.test_v1_dropin import make
from tests.conftest import make_token

pytestmark = pytest.mark.django_db(transaction=True)
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def client(gateway, acme) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=make_token(acme, TokenScope.COMPLETIONS), max_retries=0)


@pytest.fixture(params=["anthropic", "openai"])
def provider(request, acme, upstream):
    return make(acme, request.param, request.param, upstream)


def test_create(client, provider, acme):
    message = client.messages.create(
        model=provider.name, max_tokens=64, messages=[{"role": "user", "content": "hello"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "Echo: hello"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    (record,) = records(acme)
    assert record.endpoint == "messages" and record.provider_name == provider.name


def test_stream(client, provider):
    with client.messages.stream(
        model=provider.name, max_tokens=64, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: one two three" and final.content[0].text == text


def test_a_tool_call_and_its_result(client, provider, upstream):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(model=provider.name, max_tokens=64, messages=ask, tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and isinstance(call.input["city"], str)
    history = [*ask, {"role": "assistant", "content": first.content},  # as the SDK docs show
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]}]  # fmt: skip
    second = client.messages.create(model=provider.name, max_tokens=64, messages=history, tools=[WEATHER])
    assert second.stop_reason == "end_turn" and "18C" in second.content[0].text


def test_a_streamed_tool_call(client, provider):
    with client.messages.stream(
        model=provider.name, max_tokens=64, tools=[WEATHER],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    ) as stream:  # fmt: skip
        final = stream.get_final_message()
    (call,) = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and isinstance(call.input["city"], str)


def test_errors_use_anthropics_envelope(client, acme, upstream):
    make(acme, "oa", "openai", upstream)
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "not_found_error"


def test_x_api_key_authenticates(gateway, acme, upstream):
    make(acme, "oa", "openai", upstream)
    token = make_token(acme, TokenScope.COMPLETIONS)
    with gateway.client() as http:
        r = http.post(
            "/v1/messages",
            headers={"x-api-key": token, "anthropic-version": "2023-06-01"},
            json={"model": "oa", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200 and r.json()["type"] == "message"
        r = http.post("/v1/messages", headers={"x-api-key": "wrong"}, json={})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
