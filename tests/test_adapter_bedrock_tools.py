"""The Bedrock adapter beyond plain text: tools and tool results, images, JSON output
through a forced tool, and embeddings (InvokeModel with Titan and Cohere).

The request bodies are checked three ways: literally, against what botocore's own
serializer makes of the same parameters (the AWS SDK is the reference for the REST wire
format, base64 image bytes included), and end to end against the fake upstream, which
the official SDK is shown to accept too."""

from __future__ import annotations

import base64
import json

import botocore.session
import pytest
from botocore.config import Config
from botocore.serialize import create_serializer
from botocore.validate import ParamValidator

from axonflow_site.errors import InvalidConfig
from providers.adapters import bedrock, bedrock_converse, bedrock_embed
from providers.adapters.base import (
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
from providers.fake_upstream import bedrock as fake_bedrock
from providers.fake_upstream import bedrock_validation, synth
from providers.fake_upstream.core import count_tokens
from tests.fixtures_upstream import adapter_for, collect, items

pytestmark = pytest.mark.usefixtures("http_session")

ACCESS_KEY, SECRET = next(iter(fake_bedrock.TEST_CREDENTIALS.items()))
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TITAN = "amazon.titan-embed-text-v2:0"
WEATHER = Tool(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]},
)
TIME = Tool("get_time", None, {"type": "object", "properties": {"zone": {"type": "string"}}})
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(40))).decode()
PROMPT = "What is the weather in Paris?"
REPORT = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "warm": {"type": "boolean"}},
    "required": ["city", "warm"],
}


def make(upstream, label: str = "bt", **fields) -> bedrock.BedrockProvider:
    """An adapter with the explicit test keys, whose signatures the fake verifies."""
    settings = {"aws_access_key_id": ACCESS_KEY, **fields.pop("settings", {})}
    return adapter_for(upstream, "bedrock", label, SECRET, model=MODEL, region="us-east-1", settings=settings, **fields)


def ask(text: str = PROMPT, **fields) -> CompletionRequest:
    return CompletionRequest(messages=[Message("user", text)], **fields)


def tool_turns(result: str = '{"temp_c": 21, "sky": "clear"}', call_id: str = "call_abc123") -> list[Message]:
    """A first turn, the assistant's call and the tool's answer (OpenAI's shape)."""
    call = ToolCall(call_id, "get_weather", '{"city": "Paris"}')
    return [
        Message("user", PROMPT),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", result, tool_call_id=call_id),
    ]


def sdk_body(body: dict) -> dict:
    """What botocore sends for the Converse parameters `body` stands for: the AWS SDK
    takes image bytes raw and base64-encodes them in the REST body itself."""
    operation = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model("Converse")
    params = json.loads(json.dumps(body))
    for message in params["messages"]:
        for block in message["content"]:
            if "image" in block:
                block["image"]["source"]["bytes"] = base64.b64decode(block["image"]["source"]["bytes"])
    params["modelId"] = MODEL
    report = ParamValidator().validate(params, operation.input_shape)
    assert not report.has_errors(), report.generate_report()
    return json.loads(create_serializer("rest-json").serialize_to_request(params, operation)["body"])


# --- the request ---------------------------------------------------------------------------


def test_tools_are_offered_as_tool_specs_and_auto_is_left_to_the_default():
    body = bedrock_converse.to_wire(ask(tools=(WEATHER, TIME), tool_choice=ToolChoice("auto")))

    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "inputSchema": {"json": WEATHER.parameters},
                }
            },
            {"toolSpec": {"name": "get_time", "inputSchema": {"json": TIME.parameters}}},
        ]
    }
    assert sdk_body(body) == body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        (ToolChoice("auto"), None),
        (ToolChoice("required"), {"any": {}}),
        (ToolChoice("function", "get_time"), {"tool": {"name": "get_time"}}),
    ],
)
def test_tool_choice_maps_to_converse_tool_choice(choice, expected):
    config = bedrock_converse.to_wire(ask(tools=(WEATHER, TIME), tool_choice=choice))["toolConfig"]

    assert config.get("toolChoice") == expected


def test_tool_choice_none_offers_no_tools():
    assert "toolConfig" not in bedrock_converse.to_wire(ask(tools=(WEATHER,), tool_choice=ToolChoice("none")))


def test_a_history_with_tool_blocks_always_declares_the_tools_it_called():
    # Converse: "The toolConfig field must be defined when using toolUse and toolResult
    # content blocks", with at least one tool; there is no "none" choice to send.
    turns = [*tool_turns(), Message("assistant", "Sunny."), Message("user", "And tomorrow?")]
    for req in (
        CompletionRequest(messages=turns, tools=(WEATHER, TIME), tool_choice=ToolChoice("none")),
        CompletionRequest(messages=turns),
    ):
        config = bedrock_converse.to_wire(req)["toolConfig"]
        assert [t["toolSpec"]["name"] for t in config["tools"]] == ["get_weather"]
        assert "toolChoice" not in config
    stub = bedrock_converse.to_wire(CompletionRequest(messages=turns))["toolConfig"]["tools"][0]["toolSpec"]
    assert stub == {"name": "get_weather", "inputSchema": {"json": {"type": "object", "properties": {}}}}


def test_calls_and_results_become_tool_use_and_tool_result_blocks():
    messages = [
        *tool_turns(),
        Message("tool", "22 degrees", tool_call_id="call_def456"),
        Message("user", "Thanks!"),
    ]
    messages[1] = Message(
        "assistant",
        "Let me check.",
        tool_calls=(*messages[1].tool_calls, ToolCall("call_def456", "get_weather", "not json")),
    )
    body = bedrock_converse.to_wire(CompletionRequest(messages=messages, tools=(WEATHER,)))

    assert body["messages"] == [
        {"role": "user", "content": [{"text": PROMPT}]},
        {
            "role": "assistant",
            "content": [
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "call_abc123", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "call_def456", "name": "get_weather", "input": {"_raw": "not json"}}},
            ],
        },
        {
            "role": "user",  # consecutive results, then the user's words, in one user turn
            "content": [
                {"toolResult": {"toolUseId": "call_abc123", "content": [{"json": {"temp_c": 21, "sky": "clear"}}]}},
                {"toolResult": {"toolUseId": "call_def456", "content": [{"text": "22 degrees"}]}},
                {"text": "Thanks!"},
            ],
        },
    ]
    assert sdk_body(body) == body


def test_call_ids_converse_would_refuse_are_rewritten_alike_in_call_and_result():
    body = bedrock_converse.to_wire(CompletionRequest(messages=tool_turns(call_id="fc.7:42/x"), tools=(WEATHER,)))

    assert body["messages"][1]["content"][0]["toolUse"]["toolUseId"] == "fc_7_42_x"
    assert body["messages"][2]["content"][0]["toolResult"]["toolUseId"] == "fc_7_42_x"


@pytest.mark.parametrize(
    ("media_type", "image_format"), [("png", "png"), ("jpeg", "jpeg"), ("jpg", "jpeg"), ("webp", "webp")]
)
def test_data_url_images_become_image_blocks_with_base64_bytes(media_type, image_format):
    parts = (TextPart("What is this?"), ImagePart(f"data:image/{media_type};base64,{PNG}", detail="high"))
    body = bedrock_converse.to_wire(CompletionRequest(messages=[Message("user", "What is this?", parts=parts)]))

    assert body["messages"][0]["content"] == [
        {"text": "What is this?"},
        {"image": {"format": image_format, "source": {"bytes": PNG}}},
    ]
    assert sdk_body(body) == body  # the SDK base64-encodes raw bytes to the very same text


@pytest.mark.parametrize(
    "url", ["https://example.com/cat.png", f"data:image/bmp;base64,{PNG}", "data:image/png,not-base64"]
)
def test_images_converse_cannot_take_fail_over(url):
    req = CompletionRequest(messages=[Message("user", "see", parts=(ImagePart(url),))])
    with pytest.raises(ProviderError) as caught:
        bedrock_converse.to_wire(req, "br")

    assert caught.value.retryable and caught.value.provider == "br"


def test_json_mode_forces_a_tool_taking_any_object():
    body = bedrock_converse.to_wire(ask(response_format=ResponseFormat("json_object")))

    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "json_response",
                    "description": "Give your answer as this tool's input.",
                    "inputSchema": {"json": {"type": "object"}},
                }
            }
        ],
        "toolChoice": {"tool": {"name": "json_response"}},
    }
    assert sdk_body(body) == body


def test_a_json_schema_becomes_the_forced_tools_input_schema_under_its_name():
    fmt = ResponseFormat("json_schema", REPORT, name="weather_report", description="A weather report.")
    config = bedrock_converse.to_wire(ask(response_format=fmt))["toolConfig"]

    assert config == {
        "tools": [
            {
                "toolSpec": {
                    "name": "weather_report",
                    "description": "A weather report.",
                    "inputSchema": {"json": REPORT},
                }
            }
        ],
        "toolChoice": {"tool": {"name": "weather_report"}},
    }


def test_json_output_with_client_tools_lets_the_model_call_either():
    fmt = ResponseFormat("json_schema", REPORT, name="get_weather")  # taken by a client tool
    config = bedrock_converse.to_wire(ask(tools=(WEATHER,), response_format=fmt))["toolConfig"]

    assert [t["toolSpec"]["name"] for t in config["tools"]] == ["get_weather", "json_response"]
    assert config["toolChoice"] == {"any": {}}
    assert bedrock_converse.json_tool_name(ask(tools=(WEATHER,), response_format=fmt)) == "json_response"


def test_fields_converse_has_no_place_for_are_not_sent():
    req = ask(
        seed=7, presence_penalty=0.5, frequency_penalty=0.2, logit_bias={"50256": -100}, user="u-1", temperature=0.3
    )
    req.tools = (Tool("strict_tool", None, {"type": "object", "properties": {}}, strict=True),)

    body = bedrock_converse.to_wire(req)
    assert set(body) == {"messages", "inferenceConfig", "toolConfig"}
    assert body["inferenceConfig"] == {"temperature": 0.3}
    assert "strict" not in body["toolConfig"]["tools"][0]["toolSpec"]


# --- the answer -------------------------------------------------------------------------------


def converse_answer(*content: dict, stop: str = "tool_use") -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": list(content)}},
        "stopReason": stop,
        "usage": {"inputTokens": 30, "outputTokens": 12},
    }


def test_tool_use_blocks_become_tool_calls():
    body = converse_answer(
        {"text": "Checking."},
        {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
        {"toolUse": {"toolUseId": "tooluse_2", "name": "get_time", "input": {}}},
    )
    response = bedrock.from_wire(body, MODEL)

    assert response.content == "Checking."
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == [
        ToolCall("tooluse_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("tooluse_2", "get_time", "{}"),
    ]


def test_the_json_tools_input_is_the_answer_text():
    body = converse_answer({"toolUse": {"toolUseId": "t", "name": "json_response", "input": {"reply": "hi"}}})
    response = bedrock.from_wire(body, MODEL, json_tool="json_response")

    assert (response.content, response.finish_reason, response.tool_calls) == ('{"reply": "hi"}', "stop", None)


def frame(event: str, data: dict) -> tuple[dict, bytes]:
    return {":event-type": event, ":message-type": "event"}, json.dumps(data).encode()


def tool_use_frames(block: int, use_id: str, name: str, *fragments: str) -> list[tuple[dict, bytes]]:
    start = {"contentBlockIndex": block, "start": {"toolUse": {"toolUseId": use_id, "name": name}}}
    deltas = [{"contentBlockIndex": block, "delta": {"toolUse": {"input": f}}} for f in fragments]
    return [
        frame("contentBlockStart", start),
        *(frame("contentBlockDelta", d) for d in deltas),
        frame("contentBlockStop", {"contentBlockIndex": block}),
    ]


async def test_a_streamed_tool_use_becomes_openai_style_tool_call_deltas():
    frames = [
        frame("messageStart", {"role": "assistant"}),
        frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Checking."}}),
        frame("contentBlockStop", {"contentBlockIndex": 0}),
        *tool_use_frames(1, "tooluse_1", "get_weather", '{"city"', ': "Paris"}'),
        *tool_use_frames(2, "tooluse_2", "get_time", "{}"),
        frame("messageStop", {"stopReason": "tool_use"}),
        frame("metadata", {"usage": {"inputTokens": 30, "outputTokens": 12}}),
    ]
    chunks = await collect(bedrock.parse_stream(items(*frames), MODEL))

    deltas = [d for c in chunks for d in c.tool_calls or ()]
    assert deltas == [
        ToolCallDelta(0, "tooluse_1", "get_weather", ""),
        ToolCallDelta(0, arguments='{"city"'),
        ToolCallDelta(0, arguments=': "Paris"}'),
        ToolCallDelta(1, "tooluse_2", "get_time", ""),
        ToolCallDelta(1, arguments="{}"),
    ]
    assert "".join(c.delta for c in chunks) == "Checking."
    assert tool_calls_from_deltas(deltas)[0] == ToolCall("tooluse_1", "get_weather", '{"city": "Paris"}')
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage.prompt_tokens == 30


async def test_a_streamed_json_tool_is_streamed_as_text():
    frames = [
        *tool_use_frames(0, "t", "json_response", '{"reply"', ': "hi"}'),
        frame("messageStop", {"stopReason": "tool_use"}),
    ]
    chunks = await collect(bedrock.parse_stream(items(*frames), MODEL, json_tool="json_response"))

    assert [c.delta for c in chunks if c.delta] == ['{"reply"', ': "hi"}']
    assert not any(c.tool_calls for c in chunks)
    assert chunks[-1].finish_reason == "stop"


async def test_tool_input_without_its_block_start_is_malformed():
    delta = frame("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{}"}}})
    with pytest.raises(MalformedResponse):
        await collect(bedrock.parse_stream(items(delta), MODEL))


async def test_a_content_block_delta_without_its_delta_is_malformed():
    # Skipping it would shorten the answer without a word.
    frames = [frame("contentBlockDelta", {"contentBlockIndex": 0}), frame("messageStop", {"stopReason": "end_turn"})]
    with pytest.raises(MalformedResponse, match="delta"):
        await collect(bedrock.parse_stream(items(*frames), MODEL))


def test_it_declares_what_converse_can_do(upstream):
    features = make(upstream).capabilities().features

    assert features == {"chat", "streaming", "tools", "images", "json_mode", "json_schema", "embeddings"}
    # Converse cannot turn parallel calls off, nor fetch an image by URL.
    assert "parallel_tool_calls" not in features and "image_urls" not in features


# --- against the fake upstream ------------------------------------------------------------------


async def test_it_calls_a_tool_with_the_documented_request(upstream):
    response = await make(upstream).complete(ask(tools=(WEATHER,), max_tokens=100))

    sent = upstream.last("bt")
    assert (sent.method, sent.path) == ("POST", f"/bt/model/{MODEL}/converse")
    assert sent.body == {
        "messages": [{"role": "user", "content": [{"text": PROMPT}]}],
        "inferenceConfig": {"maxTokens": 100},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "The weather in a city.",
                        "inputSchema": {"json": WEATHER.parameters},
                    }
                }
            ]
        },
    }
    arguments = synth.tool_arguments(WEATHER.parameters, PROMPT)
    assert response.tool_calls == [
        ToolCall(synth.call_id("tooluse_", "get_weather", 0, PROMPT), "get_weather", json.dumps(arguments))
    ]
    assert (response.content, response.finish_reason) == ("", "tool_calls")
    assert response.usage.completion_tokens > 0


async def test_the_second_turn_carries_the_tool_result(upstream):
    request = CompletionRequest(messages=tool_turns(), tools=(WEATHER,))
    response = await make(upstream).complete(request)

    assert upstream.last("bt").body["messages"] == [
        {"role": "user", "content": [{"text": PROMPT}]},
        {
            "role": "assistant",
            "content": [{"toolUse": {"toolUseId": "call_abc123", "name": "get_weather", "input": {"city": "Paris"}}}],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "call_abc123", "content": [{"json": {"temp_c": 21, "sky": "clear"}}]}}
            ],
        },
    ]
    assert response.content == synth.tool_result_reply('{"temp_c": 21, "sky": "clear"}')
    assert (response.finish_reason, response.tool_calls) == ("stop", None)


async def test_tool_choice_none_after_a_tool_round_is_accepted_and_answered(upstream):
    request = CompletionRequest(
        messages=tool_turns(result="sunny"), tools=(WEATHER, TIME), tool_choice=ToolChoice("none")
    )
    response = await make(upstream).complete(request)

    assert response.content == "Tool said: sunny"
    assert upstream.last("bt").body["toolConfig"] == {
        "tools": [bedrock_converse.tool_spec(WEATHER)]  # the tool the history called, nothing forced
    }


async def test_a_streamed_tool_call_assembles_into_the_completed_one(upstream):
    provider = make(upstream)
    request = ask(tools=(TIME, WEATHER), tool_choice=ToolChoice("function", "get_weather"))
    whole = await provider.complete(request)
    chunks = await collect(provider.stream(request))

    sent = upstream.last("bt")
    assert sent.path == f"/bt/model/{MODEL}/converse-stream"
    assert sent.body["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    deltas = [d for c in chunks for d in c.tool_calls or ()]
    assert deltas[0] == ToolCallDelta(0, whole.tool_calls[0].id, "get_weather", "")
    assert len(deltas) >= 3 and all(d.index == 0 and d.id is None for d in deltas[1:])
    assert tool_calls_from_deltas(deltas) == whole.tool_calls
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage == whole.usage


async def test_parallel_calls_come_back_as_two_tool_calls(upstream):
    request = ask("Weather and time in parallel, please", tools=(WEATHER, TIME))
    response = await make(upstream).complete(request)
    chunks = await collect(make(upstream).stream(request))

    assert [c.name for c in response.tool_calls] == ["get_weather", "get_time"]
    assert tool_calls_from_deltas([d for c in chunks for d in c.tool_calls or ()]) == response.tool_calls


async def test_an_image_is_sent_as_an_image_block(upstream):
    parts = (TextPart("Describe this."), ImagePart(f"data:image/png;base64,{PNG}"))
    response = await make(upstream).complete(
        CompletionRequest(messages=[Message("user", "Describe this.", parts=parts)])
    )

    assert upstream.last("bt").body["messages"] == [
        {
            "role": "user",
            "content": [{"text": "Describe this."}, {"image": {"format": "png", "source": {"bytes": PNG}}}],
        }
    ]
    assert response.content == "Echo: Describe this."


async def test_json_mode_answers_the_forced_tools_input_as_text(upstream):
    provider = make(upstream)
    request = ask(response_format=ResponseFormat("json_object"))
    response = await provider.complete(request)
    chunks = await collect(provider.stream(request))

    assert upstream.last("bt").body["toolConfig"]["toolChoice"] == {"tool": {"name": "json_response"}}
    assert json.loads(response.content) == json.loads(synth.json_reply(PROMPT))
    assert (response.finish_reason, response.tool_calls) == ("stop", None)
    assert len([c for c in chunks if c.delta]) > 1
    assert "".join(c.delta for c in chunks) == response.content
    assert chunks[-1].finish_reason == "stop" and not any(c.tool_calls for c in chunks)


async def test_a_json_schema_answer_follows_the_schema(upstream):
    fmt = ResponseFormat("json_schema", REPORT, name="weather_report")
    response = await make(upstream).complete(ask(response_format=fmt))

    assert json.loads(response.content) == json.loads(synth.json_reply(PROMPT, REPORT))
    assert upstream.last("bt").body["toolConfig"]["toolChoice"] == {"tool": {"name": "weather_report"}}


async def test_the_fake_refuses_tool_blocks_without_a_tool_config(upstream):
    # The rule behind test_a_history_with_tool_blocks_always_declares_the_tools_it_called.
    body = bedrock_converse.to_wire(CompletionRequest(messages=tool_turns(), tools=(WEATHER,)))
    del body["toolConfig"]
    provider = make(upstream)
    call = provider._call()
    url = provider._model_url(bedrock.CONVERSE, MODEL)
    with pytest.raises(ProviderError) as caught:
        await provider._send(call, "POST", url, body, "application/json")

    assert caught.value.status_code == 400 and not caught.value.retryable
    assert caught.value.message == f"ValidationException: {bedrock_validation.TOOL_CONFIG_NEEDED}"


def test_the_official_sdk_reads_the_fakes_streamed_tool_use(upstream):
    client = botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=upstream.base_url("sdk", "bedrock"),
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        config=Config(retries={"max_attempts": 0}),
    )
    tools = {"tools": [bedrock_converse.tool_spec(WEATHER)], "toolChoice": {"any": {}}}
    messages = [{"role": "user", "content": [{"text": PROMPT}]}]
    events = list(client.converse_stream(modelId=MODEL, messages=messages, toolConfig=tools)["stream"])

    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    fragments = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e]
    assert start["start"]["toolUse"]["name"] == "get_weather"
    assert json.loads("".join(fragments)) == synth.tool_arguments(WEATHER.parameters, PROMPT)
    assert {"messageStop": {"stopReason": "tool_use"}} in events
    answer = client.converse(modelId=MODEL, messages=messages, toolConfig=tools)
    assert answer["output"]["message"]["content"][0]["toolUse"]["toolUseId"] == start["start"]["toolUse"]["toolUseId"]


# --- embeddings -----------------------------------------------------------------------------------


async def test_titan_embeds_one_text_per_invoke_model_call(upstream):
    texts = ["The sky is blue.", "Grass is green."]
    response = await make(upstream).embed(EmbeddingRequest(texts, dimensions=256))

    sent = upstream.requests("bt")
    assert [(r.method, r.path) for r in sent] == [("POST", f"/bt/model/{TITAN}/invoke")] * 2
    assert sorted(r.body["inputText"] for r in sent) == sorted(texts)
    assert all(r.body == {"inputText": r.body["inputText"], "dimensions": 256} for r in sent)
    assert all(r.headers["content-type"] == "application/json" for r in sent)
    assert response.vectors == [synth.embedding(t, 256) for t in texts]
    assert response.model == TITAN
    assert response.prompt_tokens == sum(count_tokens(t) for t in texts)
    assert upstream.counts("bt") == {"embeddings": 2, "total": 2}


async def test_titan_keeps_the_input_order_beyond_the_calls_in_flight(upstream):
    texts = [f"text number {i}" for i in range(bedrock_embed.TITAN_CALLS_AT_ONCE * 2 + 1)]
    response = await make(upstream).embed(EmbeddingRequest(texts))

    assert response.vectors == [synth.embedding(t) for t in texts]
    assert {r.body["inputText"] for r in upstream.requests("bt")} == set(texts)
    assert all(set(r.body) == {"inputText"} for r in upstream.requests("bt"))


async def test_cohere_embeds_texts_in_one_call_for_search_documents(upstream):
    texts = ["The sky is blue.", "Grass is green."]
    provider = make(upstream, settings={"embedding_model": "cohere.embed-english-v3"})
    response = await provider.embed(EmbeddingRequest(texts))

    sent = upstream.last("bt")
    assert sent.path == "/bt/model/cohere.embed-english-v3/invoke"
    assert sent.body == {"texts": texts, "input_type": "search_document"}
    assert response.vectors == [synth.embedding(t) for t in texts]
    assert response.prompt_tokens == sum(bedrock_embed.estimate_tokens(t) for t in texts)  # none reported


async def test_cohere_v4_takes_dimensions_and_answers_by_type(upstream):
    request = EmbeddingRequest(["hello"], model="cohere.embed-v4:0", dimensions=512)
    response = await make(upstream).embed(request)

    assert upstream.last("bt").body == {"texts": ["hello"], "input_type": "search_document", "output_dimension": 512}
    assert response.vectors == [synth.embedding("hello", 512)] and response.model == "cohere.embed-v4:0"


async def test_cohere_batches_at_most_96_texts_per_call(upstream):
    texts = [f"t{i}" for i in range(100)]
    response = await make(upstream).embed(EmbeddingRequest(texts, model="cohere.embed-multilingual-v3"))

    assert [len(r.body["texts"]) for r in upstream.requests("bt")] == [96, 4]
    assert response.vectors == [synth.embedding(t) for t in texts]


async def test_an_embedding_error_is_classified_like_a_chat_error(upstream):
    upstream.configure("bt", failure_kind="429", fail_next=1, error_message="slow down")
    with pytest.raises(ProviderError) as caught:
        await make(upstream).embed(EmbeddingRequest(["hello"]))

    assert caught.value.retryable and caught.value.message == "ThrottlingException: slow down"


async def test_a_model_that_is_neither_titan_nor_cohere_fails_over_unsent(upstream):
    with pytest.raises(ProviderError) as caught:
        await make(upstream).embed(EmbeddingRequest(["hello"], model="amazon.nova-lite-v1:0"))

    assert caught.value.retryable
    assert upstream.requests("bt") == []


def test_the_embedding_model_setting_must_be_titan_or_cohere():
    with pytest.raises(InvalidConfig):
        bedrock.Settings.parse({"embedding_model": "meta.llama3-1-8b-instruct-v1:0"})
    assert bedrock.Settings.parse({}).embedding_model == TITAN


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        (TITAN, "titan"),
        ("amazon.titan-embed-text-v1", "titan"),
        ("cohere.embed-english-v3", "cohere"),
        ("global.cohere.embed-v4:0", "cohere"),
        ("arn:aws:bedrock:us-east-1::foundation-model/cohere.embed-multilingual-v3", "cohere"),
        ("amazon.titan-text-express-v1", None),
        (MODEL, None),
    ],
)
def test_the_body_is_picked_by_model_id(model, kind):
    assert bedrock_embed.family(model) == kind


@pytest.mark.parametrize(
    "body",
    [None, {"embedding": "x"}, {"embedding": [1, True]}, {"inputTextTokenCount": 3}],
)
def test_a_titan_answer_without_a_vector_is_malformed(body):
    with pytest.raises(MalformedResponse):
        bedrock_embed.titan_from_wire(body, "text", "br")


def test_cohere_answers_must_hold_one_vector_per_text():
    with pytest.raises(MalformedResponse):
        bedrock_embed.cohere_from_wire({"embeddings": [[0.1]]}, 2, "br")
    assert bedrock_embed.cohere_from_wire({"embeddings": {"float": [[1, 2]]}}, 1, "br") == [[1.0, 2.0]]


def test_an_absurd_token_count_counts_as_zero():
    assert bedrock_embed.titan_from_wire({"embedding": [0.5], "inputTextTokenCount": -4}, "text", "br") == ([0.5], 0)
