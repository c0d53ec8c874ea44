"""The OpenAI adapter beyond plain text: image parts, tools and tool calls (whole and
streamed), structured output, the remaining options and embeddings, per
https://platform.openai.com/docs/api-reference/chat/create and
https://platform.openai.com/docs/api-reference/embeddings/create. Every body sent is
checked against the served OpenAPI description."""

from __future__ import annotations

import json

import httpx
import openai as openai_sdk
import pytest

from providers.adapters import openai as adapter
from providers.adapters.base import (
    ALL_FEATURES,
    CompletionRequest,
    EmbeddingRequest,
    ImagePart,
    MalformedResponse,
    Message,
    ProviderError,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
)
from providers.adapters.chat import tool_calls_from_deltas
from providers.fake_upstream import synth
from tests.fixtures_upstream import adapter_for, assert_matches_spec, collect, sse_events

pytestmark = pytest.mark.usefixtures("http_session")

KEY = "sk-test-openai-tools-0123456789abcdef"
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER = Tool(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]},
)
TIME = Tool("get_time", parameters={"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC"]}}})
PROMPT = "What is the weather in Paris?"


def ask(*messages: Message, **fields) -> CompletionRequest:
    return CompletionRequest(messages=list(messages) or [Message("user", PROMPT)], **fields)


def make(upstream, label: str = "oat", **settings) -> adapter.OpenAIProvider:
    return adapter_for(upstream, "openai", label, KEY, model="gpt-4o-mini", settings=settings)


def expected_call(tool: Tool, index: int = 0, prompt: str = PROMPT) -> ToolCall:
    """The call the fake model makes (providers/fake_upstream/synth.py)."""
    arguments = json.dumps(synth.tool_arguments(tool.parameters, prompt))
    return ToolCall(synth.call_id("call_", tool.name, index, prompt), tool.name, arguments)


# --- to_wire ------------------------------------------------------------------------------


def test_to_wire_sends_image_parts_tools_and_every_option():
    request = ask(
        Message("user", "Look.", parts=(TextPart("Look."), ImagePart("https://example.com/cat.png", "low"))),
        tools=(WEATHER, Tool("ping", strict=True)),
        tool_choice=ToolChoice("function", "get_weather"),
        parallel_tool_calls=False,
        response_format=ResponseFormat("json_schema", {"type": "object"}, "answer", True, "The answer."),
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"50256": -100.0, "13": 5},
        user="user-1234",
    )
    body = adapter.to_wire(request, "gpt-4o")
    assert body == {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look."},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                ],
            }
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": WEATHER.description,
                    "parameters": WEATHER.parameters,
                },
            },
            {"type": "function", "function": {"name": "ping", "strict": True}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": {"type": "object"},
                "strict": True,
                "description": "The answer.",
            },
        },
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {"50256": -100, "13": 5},
        "user": "user-1234",
    }
    assert_matches_spec("openai", "CreateChatCompletionRequest", body)


def test_to_wire_sends_a_call_only_turn_with_null_content_then_the_tool_result():
    call = ToolCall("call_1", "get_weather", '{"city":"Paris"}')
    request = ask(
        Message("user", PROMPT, name="alice"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "22 degrees", tool_call_id="call_1", name="get_weather"),
        tools=(WEATHER,),
    )
    messages = adapter.to_wire(request, "gpt-4o")["messages"]
    assert messages == [
        {"role": "user", "content": PROMPT, "name": "alice"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees"},
    ]
    assert_matches_spec("openai", "CreateChatCompletionRequest", adapter.to_wire(request, "gpt-4o"))


def test_an_assistant_turn_keeps_its_text_beside_its_calls():
    call = ToolCall("call_1", "get_weather", "{}")
    message = adapter.message_to_wire(Message("assistant", "Let me check.", tool_calls=(call,)))
    assert message["content"] == "Let me check." and len(message["tool_calls"]) == 1


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (ToolChoice("auto"), "auto"),
        (ToolChoice("none"), "none"),
        (ToolChoice("required"), "required"),
        (ToolChoice("function", "get_time"), {"type": "function", "function": {"name": "get_time"}}),
    ],
)
def test_tool_choice_modes_are_the_apis_words(choice, wire):
    body = adapter.to_wire(ask(tools=(WEATHER, TIME), tool_choice=choice), "gpt-4o")
    assert body["tool_choice"] == wire
    assert_matches_spec("openai", "CreateChatCompletionRequest", body)


def test_tool_choice_and_parallel_calls_are_left_out_without_tools():
    body = adapter.to_wire(ask(tool_choice=ToolChoice("none"), parallel_tool_calls=True), "gpt-4o")
    assert "tool_choice" not in body and "parallel_tool_calls" not in body and "tools" not in body


def test_json_mode_and_a_nameless_schema_are_valid_response_formats():
    json_mode = adapter.to_wire(ask(response_format=ResponseFormat("json_object")), "gpt-4o")
    assert json_mode["response_format"] == {"type": "json_object"}
    assert_matches_spec("openai", "CreateChatCompletionRequest", json_mode)
    schema = adapter.to_wire(ask(response_format=ResponseFormat("json_schema", {"type": "object"})), "gpt-4o")
    assert schema["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}},
    }
    assert_matches_spec("openai", "CreateChatCompletionRequest", schema)


# --- from_wire and parse_stream ----------------------------------------------------------------


def test_from_wire_reads_tool_calls_with_null_content():
    body = {
        "id": "chatcmpl-9",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    response = adapter.from_wire(body)
    assert (response.content, response.finish_reason) == ("", "tool_calls")
    assert response.tool_calls == [
        ToolCall("call_a", "get_weather", '{"city":"Paris"}'),
        ToolCall("call_b", "get_time", "{}"),
    ]


def test_from_wire_has_no_tool_calls_for_a_text_answer():
    body = {"choices": [{"message": {"content": "Hi", "tool_calls": []}, "finish_reason": "stop"}]}
    assert adapter.from_wire(body).tool_calls is None


@pytest.mark.parametrize("calls", ["call", [5], [{"id": "x", "function": {"arguments": "{}"}}], [{"id": "x"}]])
def test_from_wire_rejects_malformed_tool_calls(calls):
    body = {"choices": [{"message": {"content": None, "tool_calls": calls}, "finish_reason": "tool_calls"}]}
    with pytest.raises(MalformedResponse):
        adapter.from_wire(body)


async def test_parse_stream_yields_tool_call_deltas_as_they_came():
    def chunk(delta, finish=None):
        return {"model": "gpt-4o", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    head = {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    chunks = await collect(adapter.parse_stream(sse_events(
        chunk({"role": "assistant", "content": None, "tool_calls": [head]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    )))  # fmt: skip
    deltas = [d for c in chunks for d in c.tool_calls or []]
    assert deltas == [
        ToolCallDelta(0, "call_a", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"ci'),
        ToolCallDelta(0, None, None, 'ty":"Paris"}'),
    ]
    assert tool_calls_from_deltas(deltas) == [ToolCall("call_a", "get_weather", '{"city":"Paris"}')]
    assert all(c.delta == "" for c in chunks) and chunks[-1].finish_reason == "tool_calls"


def test_embeddings_come_back_in_index_order():
    body = {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.5, -0.5]},
            {"object": "embedding", "index": 0, "embedding": [1, 0]},
        ],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    response = adapter.embeddings_from_wire(body, expected=2)
    assert response.vectors == [[1.0, 0.0], [0.5, -0.5]]
    assert (response.model, response.prompt_tokens) == ("text-embedding-3-small", 4)


@pytest.mark.parametrize(
    "body",
    [[], {"data": "x"}, {"data": [{"index": 0, "embedding": "AAAA"}]}, {"data": [{"embedding": [True]}]}, {"data": []}],
)
def test_embeddings_that_are_not_one_vector_per_input_are_malformed(body):
    with pytest.raises(MalformedResponse):
        adapter.embeddings_from_wire(body, expected=1)


def test_it_declares_every_feature():
    assert adapter.OpenAIProvider.features == ALL_FEATURES


# --- against the fake upstream ----------------------------------------------------------------


async def test_it_sends_tools_and_reads_the_tool_call(upstream):
    request = ask(tools=(WEATHER, TIME), tool_choice=ToolChoice("auto"))
    response = await make(upstream).complete(request)

    sent = upstream.last("oat")
    assert sent.body == adapter.to_wire(request, "gpt-4o-mini")
    assert_matches_spec("openai", "CreateChatCompletionRequest", sent.body)
    assert response.tool_calls == [expected_call(WEATHER)]
    assert (response.content, response.finish_reason) == ("", "tool_calls")
    assert response.usage.completion_tokens > 0


async def test_a_second_turn_with_the_tool_result_gets_the_answer(upstream):
    provider = make(upstream)
    first = await provider.complete(ask(tools=(WEATHER,)))
    second = ask(
        Message("user", PROMPT),
        Message("assistant", "", tool_calls=tuple(first.tool_calls)),
        Message("tool", "22 degrees and sunny", tool_call_id=first.tool_calls[0].id),
        tools=(WEATHER,),
    )
    response = await provider.complete(second)

    sent = upstream.last("oat")
    assert sent.body["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": first.tool_calls[0].id, "type": "function",
             "function": {"name": "get_weather", "arguments": first.tool_calls[0].arguments}},
        ]},
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "22 degrees and sunny"},
    ]  # fmt: skip
    assert_matches_spec("openai", "CreateChatCompletionRequest", sent.body)
    assert (response.content, response.tool_calls) == ("Tool said: 22 degrees and sunny", None)
    assert response.finish_reason == "stop"


async def test_a_streamed_tool_call_assembles_into_the_completed_one(upstream):
    provider = make(upstream)
    request = ask(tools=(WEATHER,))
    whole = await provider.complete(request)
    chunks = await collect(provider.stream(request))

    assert_matches_spec("openai", "CreateChatCompletionRequest", upstream.last("oat").body)
    deltas = [d for c in chunks for d in c.tool_calls or []]
    assert deltas[0] == ToolCallDelta(0, whole.tool_calls[0].id, "get_weather", "")
    assert len(deltas) >= 3 and all(d.id is None and d.name is None and d.arguments for d in deltas[1:])
    assert tool_calls_from_deltas(deltas) == whole.tool_calls
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage == whole.usage


async def test_parallel_calls_come_when_asked_and_allowed(upstream):
    provider = make(upstream)
    prompt = "Weather and time in parallel, please."
    both = await provider.complete(ask(Message("user", prompt), tools=(WEATHER, TIME)))
    assert both.tool_calls == [expected_call(WEATHER, 0, prompt), expected_call(TIME, 1, prompt)]
    streamed = await collect(provider.stream(ask(Message("user", prompt), tools=(WEATHER, TIME))))
    assert tool_calls_from_deltas([d for c in streamed for d in c.tool_calls or []]) == both.tool_calls

    one = await provider.complete(ask(Message("user", prompt), tools=(WEATHER, TIME), parallel_tool_calls=False))
    assert upstream.last("oat").body["parallel_tool_calls"] is False
    assert [c.name for c in one.tool_calls] == ["get_weather"]


async def test_tool_choice_forces_a_function_or_forbids_calls(upstream):
    provider = make(upstream)
    forced = await provider.complete(ask(tools=(WEATHER, TIME), tool_choice=ToolChoice("function", "get_time")))
    assert forced.tool_calls == [expected_call(TIME)]
    assert json.loads(forced.tool_calls[0].arguments) == {"zone": "UTC"}

    text = await provider.complete(ask(tools=(WEATHER,), tool_choice=ToolChoice("none")))
    assert (text.content, text.tool_calls, text.finish_reason) == (f"Echo: {PROMPT}", None, "stop")
    assert_matches_spec("openai", "CreateChatCompletionRequest", upstream.last("oat").body)


async def test_an_image_part_is_sent_as_an_image_url_part(upstream):
    parts = (TextPart("What is in this picture?"), ImagePart(f"data:image/png;base64,{PIXEL}", "high"))
    response = await make(upstream).complete(ask(Message("user", "What is in this picture?", parts=parts)))

    sent = upstream.last("oat")
    assert sent.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}", "detail": "high"}},
            ],
        }
    ]
    assert_matches_spec("openai", "CreateChatCompletionRequest", sent.body)
    assert response.content == "Echo: What is in this picture?"


async def test_json_mode_and_a_json_schema_answer_json(upstream):
    provider = make(upstream)
    json_mode = await provider.complete(ask(response_format=ResponseFormat("json_object"), seed=3))
    assert_matches_spec("openai", "CreateChatCompletionRequest", upstream.last("oat").body)
    assert json.loads(json_mode.content) == {"reply": f"Echo: {PROMPT}"}

    schema = {"type": "object", "properties": {"city": {"type": "string"}, "hot": {"type": "boolean"}}}
    structured = await provider.complete(ask(response_format=ResponseFormat("json_schema", schema, "weather", True)))
    sent = upstream.last("oat")
    assert sent.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": schema, "strict": True},
    }
    assert_matches_spec("openai", "CreateChatCompletionRequest", sent.body)
    assert json.loads(structured.content) == {"city": PROMPT, "hot": True}


async def test_embeddings_send_the_documented_request(upstream):
    provider = make(upstream)
    response = await provider.embed(EmbeddingRequest(["first text", "second text"], dimensions=16, user="u-1"))

    sent = upstream.last("oat")
    assert (sent.method, sent.path, sent.headers["authorization"]) == ("POST", "/oat/v1/embeddings", f"Bearer {KEY}")
    assert sent.body == {
        "model": "text-embedding-3-small",
        "input": ["first text", "second text"],
        "dimensions": 16,
        "user": "u-1",
        "encoding_format": "float",
    }
    assert_matches_spec("openai", "CreateEmbeddingRequest", sent.body)
    assert response.vectors == [synth.embedding("first text", 16), synth.embedding("second text", 16)]
    assert (response.model, response.prompt_tokens) == ("text-embedding-3-small", 4)
    assert upstream.counts("oat") == {"embeddings": 1, "total": 1}


async def test_the_embedding_model_comes_from_the_request_then_the_settings(upstream):
    provider = make(upstream, embedding_model="text-embedding-3-large")
    await provider.embed(EmbeddingRequest(["x"]))
    assert upstream.last("oat").body["model"] == "text-embedding-3-large"
    await provider.embed(EmbeddingRequest(["x"], model="text-embedding-ada-002"))
    assert upstream.last("oat").body == {"model": "text-embedding-ada-002", "input": ["x"], "encoding_format": "float"}


@pytest.mark.parametrize(("kind", "retryable"), [("429", True), ("500", True), ("400", False), ("401", True)])
async def test_embedding_errors_are_retryable_or_final(upstream, kind, retryable):
    upstream.configure("oat", failure_kind=kind, fail_next=1)
    with pytest.raises(ProviderError) as exc:
        await make(upstream).embed(EmbeddingRequest(["x"]))
    assert (exc.value.status_code, exc.value.retryable) == (int(kind), retryable)


# --- the fake answers as the API does (the official client and the spec agree) -------------------


@pytest.fixture
def sdk(upstream):
    return openai_sdk.OpenAI(api_key=KEY, base_url=upstream.base_url("sdk", "openai"), max_retries=0)


SDK_TOOLS = [{"type": "function", "function": {"name": WEATHER.name, "parameters": WEATHER.parameters}}]


def test_the_official_client_reads_a_tool_call_and_its_stream(sdk):
    messages = [{"role": "user", "content": PROMPT}]
    reply = sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=SDK_TOOLS)
    call = reply.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == tuple(
        getattr(expected_call(WEATHER), f) for f in ("id", "name", "arguments")
    )
    assert reply.choices[0].finish_reason == "tool_calls"

    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=SDK_TOOLS, stream=True)
    pieces = [tc for chunk in stream if chunk.choices for tc in chunk.choices[0].delta.tool_calls or []]
    assert pieces[0].id == call.id and "".join(p.function.arguments or "" for p in pieces) == call.function.arguments


def test_the_official_client_decodes_base64_embeddings(sdk):
    # openai-python asks for base64 by default and decodes little-endian float32.
    result = sdk.embeddings.create(model="text-embedding-3-small", input=["hello"], dimensions=12)
    assert result.data[0].embedding == pytest.approx(synth.embedding("hello", 12), abs=1e-6)
    assert result.usage.prompt_tokens == 1


def test_the_fake_answers_match_the_spec(upstream):
    url, headers = upstream.base_url("spec", "openai"), {"Authorization": f"Bearer {KEY}"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "tools": SDK_TOOLS}
    assert_matches_spec(
        "openai",
        "CreateChatCompletionResponse",
        httpx.post(f"{url}/chat/completions", json=body, headers=headers).json(),
    )
    embedding = httpx.post(f"{url}/embeddings", json={"model": "m", "input": "x"}, headers=headers).json()
    assert_matches_spec("openai", "CreateEmbeddingResponse", embedding)
    # The chunk schema marks nulls with OpenAPI 3.0's `nullable`, which JSON Schema
    # ignores, so each delta is checked on its own.
    streamed = httpx.post(f"{url}/chat/completions", json={**body, "stream": True}, headers=headers).text
    deltas = [
        json.loads(line[6:])["choices"][0]["delta"] for line in streamed.splitlines() if line.startswith("data: {")
    ]
    assert any(d.get("tool_calls") for d in deltas)
    for delta in deltas:
        assert_matches_spec("openai", "ChatCompletionStreamResponseDelta", delta)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "input": ""},
        {"model": "m", "input": []},
        {"model": "m", "input": ["x"], "dimensions": 0},
        {"model": "m", "input": ["x"], "encoding_format": "int8"},
        {"input": ["x"]},
    ],
)
def test_the_fake_refuses_bad_embedding_requests(upstream, body):
    r = httpx.post(
        f"{upstream.base_url('spec', 'openai')}/embeddings", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
