"""The Gemini adapter beyond text: function calling, images, JSON output and embeddings,
as pure wire functions and against the fake upstream (every body sent is checked against
the served Gemini spec)."""

from __future__ import annotations

import json
import math

import aiohttp
import pytest

from providers.adapters import gemini, gemini_embed, gemini_request
from providers.adapters.base import (
    EMBEDDINGS,
    IMAGE_URLS,
    IMAGES,
    JSON_MODE,
    JSON_SCHEMA,
    PARALLEL_TOOL_CALLS,
    TOOLS,
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
from providers.adapters.gemini_schema import gemini_schema
from providers.fake_upstream import synth
from providers.fake_upstream.gemini import FAKE_SIGNATURE
from tests.fixtures_upstream import adapter_for, assert_matches_spec, collect, sse_events, stream_until_error

pytestmark = pytest.mark.usefixtures("http_session")

KEY = "AIzaSyFAKE-gemini-key-000000000000000"
MODEL = "gemini-2.5-flash"
PROMPT = "What is the weather in Paris?"
SKIP = "skip_thought_signature_validator"
WEATHER = Tool(
    "get_weather",
    "The current weather in a city.",
    {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    strict=True,
)
TIME = Tool("get_time", "The local time in a city.", {"type": "object", "properties": {"city": {"type": "string"}}})
WEATHER_WIRE = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "OBJECT",
        "properties": {"city": {"type": "STRING"}, "unit": {"type": "STRING", "enum": ["c", "f"]}},
        "required": ["city"],
    },
}
TIME_WIRE = {
    "name": "get_time",
    "description": "The local time in a city.",
    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
}
PIXEL = "iVBORw0KGgo="  # the first bytes of a PNG, base64


def make(upstream, label: str = "gm", **fields) -> gemini.GeminiProvider:
    return adapter_for(upstream, "gemini", label, KEY, **{"model": MODEL, **fields})


def ask(text: str = PROMPT, **fields) -> CompletionRequest:
    return CompletionRequest(messages=[Message("user", text)], **fields)


def sent_body(upstream, label: str = "gm") -> dict:
    body = upstream.last(label).body
    assert_matches_spec("gemini", "GenerateContentRequest__Req", body)
    return body


def second_turn(call: ToolCall, result: str) -> CompletionRequest:
    return CompletionRequest(
        messages=[
            Message("user", PROMPT),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", result, tool_call_id=call.id),
        ],
        tools=(WEATHER,),
    )


# --- function calling against the fake ------------------------------------------------------


async def test_it_offers_tools_and_reads_the_function_call(upstream):
    response = await make(upstream).complete(ask(tools=(WEATHER,), tool_choice=ToolChoice("auto")))

    call_id = gemini.synthesized_id(response.id, 0)
    assert response.tool_calls == [ToolCall(call_id, "get_weather", json.dumps({"city": PROMPT}))]
    assert response.finish_reason == "tool_calls" and response.content == ""
    assert call_id.startswith("call_") and len(call_id) <= 40  # OpenAI's limit, should a client fail over
    assert sent_body(upstream) == {
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "tools": [{"functionDeclarations": [WEATHER_WIRE]}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
    }


async def test_the_second_turn_carries_the_tool_result(upstream):
    provider = make(upstream)
    (call,) = (await provider.complete(ask(tools=(WEATHER,)))).tool_calls
    response = await provider.complete(second_turn(call, "21 degrees and sunny"))

    assert response.content == "Tool said: 21 degrees and sunny"
    assert response.finish_reason == "stop" and response.tool_calls is None
    assert sent_body(upstream)["contents"] == [
        {"role": "user", "parts": [{"text": PROMPT}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": PROMPT}}, "thoughtSignature": SKIP}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "21 degrees and sunny"}}}]},
    ]  # fmt: skip


async def test_a_streamed_tool_call_is_one_delta_with_the_whole_call(upstream):
    provider = make(upstream)
    whole = await provider.complete(ask(tools=(WEATHER,)))
    chunks = await collect(provider.stream(ask(tools=(WEATHER,))))

    deltas = [delta for chunk in chunks for delta in chunk.tool_calls or ()]
    assert deltas == [ToolCallDelta(0, whole.tool_calls[0].id, "get_weather", json.dumps({"city": PROMPT}))]
    assert tool_calls_from_deltas(deltas) == whole.tool_calls
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage == whole.usage
    assert upstream.last("gm").path.endswith(":streamGenerateContent")
    sent_body(upstream)


async def test_a_function_without_parameters_is_called_with_empty_arguments(upstream):
    response = await make(upstream).complete(ask(tools=(Tool("now", "The time now."),)))

    assert [(call.name, call.arguments) for call in response.tool_calls] == [("now", "{}")]
    assert sent_body(upstream)["tools"] == [{"functionDeclarations": [{"name": "now", "description": "The time now."}]}]


async def test_parallel_calls_are_numbered_across_the_stream(upstream):
    request = ask("Weather and time in Paris, in parallel", tools=(WEATHER, TIME))
    whole = await make(upstream).complete(request)
    chunks = await collect(make(upstream).stream(request))

    assert [call.name for call in whole.tool_calls] == ["get_weather", "get_time"]
    assert len({call.id for call in whole.tool_calls}) == 2
    assert [(d.index, d.id) for c in chunks for d in c.tool_calls or ()] == [(0, whole.tool_calls[0].id), (1, whole.tool_calls[1].id)]  # fmt: skip


@pytest.mark.parametrize(
    ("choice", "config", "called"),
    [
        (ToolChoice("function", "get_time"), {"mode": "ANY", "allowedFunctionNames": ["get_time"]}, ["get_time"]),
        (ToolChoice("required"), {"mode": "ANY"}, ["get_weather"]),
        (ToolChoice("none"), {"mode": "NONE"}, None),
    ],
)
async def test_the_tool_choice_becomes_the_function_calling_mode(upstream, choice, config, called):
    response = await make(upstream).complete(ask(tools=(WEATHER, TIME), tool_choice=choice))

    assert sent_body(upstream)["toolConfig"] == {"functionCallingConfig": config}
    assert (response.tool_calls and [call.name for call in response.tool_calls]) == called


async def test_several_tool_results_answer_in_one_user_turn(upstream):
    calls = (
        ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_b", "get_time", '{"city": "Paris"}'),
    )
    request = CompletionRequest(
        messages=[
            Message("user", PROMPT),
            Message("assistant", "Let me look.", tool_calls=calls),
            Message("tool", '{"celsius": 21}', tool_call_id="call_a"),
            Message("tool", "14:05", tool_call_id="call_b"),
        ],
        tools=(WEATHER, TIME),
    )
    response = await make(upstream).complete(request)

    assert response.content == 'Tool said: {"celsius": 21}\n14:05'
    assert sent_body(upstream)["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"text": "Let me look."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SKIP},
                {"functionCall": {"name": "get_time", "args": {"city": "Paris"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"celsius": 21}}},
                {"functionResponse": {"name": "get_time", "response": {"result": "14:05"}}},
            ],
        },
    ]


# --- images and JSON against the fake --------------------------------------------------------


async def test_an_inline_image_is_sent_as_inline_data(upstream):
    parts = (TextPart("What is in this image?"), ImagePart(f"data:image/png;base64,{PIXEL}", detail="low"))
    response = await make(upstream).complete(CompletionRequest([Message("user", "What is in this image?", parts)]))

    assert response.content == "Echo: What is in this image?"
    assert sent_body(upstream)["contents"] == [
        {"role": "user", "parts": [{"text": "What is in this image?"}, {"inlineData": {"mimeType": "image/png", "data": PIXEL}}]}
    ]  # fmt: skip


async def test_an_image_url_is_refused_before_anything_is_sent(upstream):
    image = Message("user", "What is this?", (ImagePart("https://example.com/cat.png"),))
    with pytest.raises(ProviderError) as caught:
        await make(upstream).complete(CompletionRequest([image]))

    assert "not a base64 data URL" in caught.value.message
    assert upstream.requests("gm") == []


async def test_json_mode_asks_for_json(upstream):
    response = await make(upstream).complete(ask(response_format=ResponseFormat("json_object"), seed=7))

    assert json.loads(response.content) == {"reply": f"Echo: {PROMPT}"}
    assert sent_body(upstream)["generationConfig"] == {"seed": 7, "responseMimeType": "application/json"}


async def test_a_json_schema_becomes_the_response_schema(upstream):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }
    response_format = ResponseFormat("json_schema", schema=schema, name="verdict", strict=True)
    response = await make(upstream).complete(ask(response_format=response_format))

    assert json.loads(response.content) == {"answer": PROMPT, "confidence": 1.5}
    assert sent_body(upstream)["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"answer": {"type": "STRING"}, "confidence": {"type": "NUMBER"}},
            "required": ["answer", "confidence"],
            "propertyOrdering": ["answer", "confidence"],
        },
    }


async def test_sampling_extras_are_sent_and_logit_bias_and_user_are_not(upstream):
    request = ask(seed=1, presence_penalty=0.5, frequency_penalty=-0.5, logit_bias={"50256": -100}, user="u-1")
    await make(upstream).complete(request)

    assert sent_body(upstream)["generationConfig"] == {"seed": 1, "presencePenalty": 0.5, "frequencyPenalty": -0.5}


# --- embeddings against the fake --------------------------------------------------------------


def assert_sent_embeddings(upstream, model: str, texts: list[str], dimensions: int | None = None) -> None:
    sent = upstream.last("gm")
    assert (sent.method, sent.path) == ("POST", f"/gm/v1beta/models/{model}:batchEmbedContents")
    assert sent.headers["x-goog-api-key"] == KEY
    options = {"outputDimensionality": dimensions} if dimensions else {}
    assert sent.body == {
        "requests": [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **options} for t in texts]
    }
    assert_matches_spec("gemini", "BatchEmbedContentsRequest__Req", sent.body)


async def test_one_input_is_embedded_with_the_default_embedding_model(upstream):
    response = await make(upstream).embed(EmbeddingRequest(["hello world"]))

    assert response.vectors == [synth.embedding("hello world")]
    assert response.model == "gemini-embedding-001"
    assert response.prompt_tokens == 2  # estimated: 11 characters / 4
    assert_sent_embeddings(upstream, "gemini-embedding-001", ["hello world"])
    assert upstream.counts("gm") == {"embeddings": 1, "total": 1}


async def test_several_inputs_with_dimensions_come_back_in_order_and_of_unit_length(upstream):
    texts = ["first", "second text", "a"]
    provider = make(upstream, settings={"embedding_model": "gemini-embedding-exp"})
    response = await provider.embed(EmbeddingRequest(texts, dimensions=4))

    assert response.vectors == [pytest.approx(synth.embedding(text, 4)) for text in texts]
    assert all(math.isclose(math.hypot(*vector), 1.0) for vector in response.vectors)
    assert response.prompt_tokens == 1 + 2 + 1
    assert_sent_embeddings(upstream, "gemini-embedding-exp", texts, dimensions=4)


async def test_the_routes_embedding_model_wins_over_the_setting(upstream):
    response = await make(upstream).embed(EmbeddingRequest(["x"], model="gemini-embedding-002"))

    assert response.model == "gemini-embedding-002"
    assert_sent_embeddings(upstream, "gemini-embedding-002", ["x"])


async def test_more_inputs_than_a_batch_takes_are_sent_in_batches(upstream):
    texts = [f"text {i}" for i in range(gemini_embed.MAX_EMBED_BATCH + 1)]
    response = await make(upstream).embed(EmbeddingRequest(texts))

    assert response.vectors == [synth.embedding(text) for text in texts]
    assert [len(sent.body["requests"]) for sent in upstream.requests("gm")] == [100, 1]


async def test_a_chat_model_cannot_embed_and_the_error_is_final(upstream):
    with pytest.raises(ProviderError) as caught:
        await make(upstream).embed(EmbeddingRequest(["x"], model=MODEL))

    assert (caught.value.status_code, caught.value.retryable) == (404, False)
    assert caught.value.message.startswith("NOT_FOUND: ")


# --- the fake refuses what Gemini refuses ------------------------------------------------------


def user(*parts: dict) -> dict:
    return {"contents": [{"role": "user", "parts": list(parts)}]}


async def post_to_fake(upstream, method: str, body: dict, model: str = "gemini-embedding-001") -> tuple[int, dict]:
    url = upstream.base_url("gm", "gemini") + f"/v1beta/models/{model}:{method}"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers={"x-goog-api-key": KEY}) as response:
            return response.status, await response.json()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({**user({"text": "Hi"}), "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "additionalProperties": False}}]}]}, 'Unknown name "additionalProperties"'),  # noqa: E501
        ({**user({"text": "Hi"}), "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": {}}}]}]}, "should be non-empty for OBJECT type"),  # noqa: E501
        (user({"text": "Hi", "inlineData": {"mimeType": "image/png", "data": PIXEL}}), "exactly one of"),
        (user({"inlineData": {"mimeType": "image/png", "data": "not base64!"}}), "inline_data"),
        (user({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "not base64!"}), "thought_signature"),
        (user({"text": "Hi", "cache": True}), 'Unknown name "cache"'),
    ],
)  # fmt: skip
async def test_the_fake_refuses_what_gemini_refuses(upstream, body, says):
    status, answer = await post_to_fake(upstream, "generateContent", body, MODEL)

    assert status == 400 and answer["error"]["status"] == "INVALID_ARGUMENT"
    assert says in answer["error"]["message"]


async def test_the_fake_embeds_one_content_too(upstream):
    body = {"content": {"parts": [{"text": "hello"}]}, "embedContentConfig": {"outputDimensionality": 3}}
    status, answer = await post_to_fake(upstream, "embedContent", body)

    assert status == 200 and answer == {"embedding": {"values": synth.embedding("hello", 3)}}
    assert upstream.counts("gm") == {"embeddings": 1, "total": 1}


@pytest.mark.parametrize(
    "body",
    [
        {"requests": [{"content": {"parts": [{"text": "no model"}]}}]},
        {"requests": [{"model": "models/other-embedding", "content": {"parts": [{"text": "x"}]}}]},
        {"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "x"}]}}] * 101},
        {
            "requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "x"}]}, "dimensions": 3}
            ]
        },
    ],
)
async def test_the_fake_refuses_a_batch_gemini_refuses(upstream, body):
    status, answer = await post_to_fake(upstream, "batchEmbedContents", body)

    assert status == 400 and answer["error"]["status"] == "INVALID_ARGUMENT"


# --- pure functions ----------------------------------------------------------------------------


def test_it_declares_what_gemini_can_do_and_no_more(upstream):
    features = make(upstream).capabilities().features

    assert {TOOLS, IMAGES, JSON_MODE, JSON_SCHEMA, EMBEDDINGS} <= features
    assert PARALLEL_TOOL_CALLS not in features and IMAGE_URLS not in features


def test_to_wire_declares_a_function_without_arguments_without_parameters():
    body = gemini_request.to_wire(
        ask(tools=(Tool("now"), Tool("ping", parameters={"type": "object", "properties": {}})))
    )

    assert body["tools"] == [{"functionDeclarations": [{"name": "now"}, {"name": "ping"}]}]
    assert "toolConfig" not in body


def test_a_tool_result_names_its_function_from_the_earlier_call():
    call = ToolCall("call_9", "get_weather", "{}")
    body = gemini_request.to_wire(second_turn(call, "[1, 2]"))

    assert body["contents"][-1] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "[1, 2]"}}}],
    }


def test_gemini_schema_keeps_the_openapi_subset_gemini_takes():
    schema = {
        "$defs": {"Unit": {"type": "string", "enum": ["c", "f"], "default": "c"}},
        "type": "object",
        "properties": {
            "unit": {"$ref": "#/$defs/Unit", "description": "Which scale"},
            "days": {"type": ["integer", "null"], "minimum": 1, "exclusiveMaximum": 15},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "level": {"oneOf": [{"type": "integer", "enum": [1, 2]}, {"type": "string", "const": "max"}]},
        },
        "required": ["unit"],
        "additionalProperties": False,
    }

    assert gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "unit": {"type": "STRING", "enum": ["c", "f"], "description": "Which scale"},
            "days": {"type": "INTEGER", "nullable": True, "minimum": 1},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": "1"},
            "note": {"type": "STRING", "nullable": True},
            "level": {"anyOf": [{"type": "INTEGER"}, {"type": "STRING", "enum": ["max"]}]},
        },
        "required": ["unit"],
    }


def test_from_wire_reads_function_calls_next_to_text():
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Checking."},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": FAKE_SIGNATURE},
                        {"functionCall": {"id": "fc-7", "name": "get_time"}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "responseId": "r-1",
    }  # fmt: skip
    response = gemini.from_wire(body)

    assert response.content == "Checking."
    assert response.tool_calls == [
        ToolCall(gemini.synthesized_id("r-1", 0), "get_weather", '{"city": "Paris"}'),
        ToolCall("fc-7", "get_time", "{}"),
    ]
    assert response.finish_reason == "tool_calls"


def test_synthesized_ids_are_stable_per_answer_and_distinct_across_answers():
    assert gemini.synthesized_id("r-1", 0) == gemini.synthesized_id("r-1", 0)
    assert len({gemini.synthesized_id("r-1", 0), gemini.synthesized_id("r-1", 1), gemini.synthesized_id("r-2", 0)}) == 3
    assert gemini.synthesized_id(None, 3) == "call_3"


async def test_parse_stream_gives_one_delta_per_call_indexed_across_events():
    def event(*parts: dict, finish: str | None = None) -> dict:
        candidate = {"content": {"role": "model", "parts": list(parts)}, **({"finishReason": finish} if finish else {})}
        return {"candidates": [candidate], "responseId": "r-1"}

    events = sse_events(
        event({"text": "On it."}),
        event({"functionCall": {"name": "a", "args": {"x": 1}}}, {"functionCall": {"name": "b", "args": {}}}),
        event({"functionCall": {"name": "c", "args": {}}}, finish="STOP"),
    )
    chunks = await collect(gemini.parse_stream(events))

    assert chunks[0].delta == "On it." and chunks[0].tool_calls is None
    assert [(d.index, d.name, d.arguments) for c in chunks for d in c.tool_calls or ()] == [
        (0, "a", '{"x": 1}'),
        (1, "b", "{}"),
        (2, "c", "{}"),
    ]
    assert chunks[-1].finish_reason == "tool_calls"


def test_embeddings_use_gemini_usage_when_it_comes():
    body = {"embeddings": [{"values": [0.6, 0.8]}], "usageMetadata": {"promptTokenCount": 9}}

    assert gemini_embed.embeddings_from_wire(body, ["some text"]).prompt_tokens == 9


@pytest.mark.parametrize(
    "body",
    [{}, {"embeddings": []}, {"embeddings": [{"values": ["a"]}]}, {"embeddings": [{}]}, [], {"embeddings": [{"values": [1]}] * 2}],
)  # fmt: skip
def test_embeddings_from_wire_refuses_anything_but_one_vector_per_text(body):
    with pytest.raises(MalformedResponse):
        gemini_embed.embeddings_from_wire(body, ["one text"])


async def test_a_stream_of_text_still_ends_with_stop():
    event = {"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": "STOP"}]}
    chunks = await collect(gemini.parse_stream(sse_events(event)))

    assert chunks[-1].finish_reason == "stop"


async def test_a_malformed_stream_event_is_still_refused():
    await stream_until_error(gemini.parse_stream(sse_events("[1]")), MalformedResponse)
