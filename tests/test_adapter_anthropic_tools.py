"""The Anthropic adapter beyond plain text: tools and tool results, images, JSON mode and
the fields Anthropic does not have, as pure translation and end to end against the
fake upstream (which checks tool pairing and image sources as the API does).

Docs: https://platform.claude.com/docs/en/agents-and-tools/tool-use/implement-tool-use,
https://platform.claude.com/docs/en/agents-and-tools/tool-use/handle-tool-calls,
https://platform.claude.com/docs/en/build-with-claude/streaming,
https://platform.claude.com/docs/en/build-with-claude/vision."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from providers.adapters import anthropic as adapter
from providers.adapters.base import (
    CompletionRequest,
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
    Usage,
)
from providers.adapters.chat import tool_calls_from_deltas
from providers.fake_upstream import synth
from tests.fixtures_upstream import adapter_for, assert_matches_spec, collect, sse_events

KEY = "sk-ant-test-0123456789abcdef"
MODEL = "claude-3-5-haiku-20241022"
JSON_TOOL = adapter.JSON_TOOL
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"],
}
WEATHER = Tool("get_weather", "The weather in a city.", WEATHER_SCHEMA)
TIME = Tool("get_time", "The time in a city.", {"type": "object", "properties": {"city": {"type": "string"}}})
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
CALL = ToolCall("toolu_01", "get_weather", '{"city": "Paris", "unit": "c"}')

pytestmark = pytest.mark.usefixtures("http_session")


def wire(req: CompletionRequest, **kwargs) -> dict:
    """to_wire, checked against the official request schema."""
    body = adapter.to_wire(req, MODEL, **kwargs)
    assert_matches_spec("anthropic", "CreateMessageParams", body)
    return body


def ask(text: str = "Weather in Paris?", **fields) -> CompletionRequest:
    return CompletionRequest(messages=[Message("user", text)], **fields)


def provider(upstream, label: str = "an"):
    return adapter_for(upstream, "anthropic", label, KEY, model=MODEL)


def sent(upstream, label: str = "an") -> dict:
    """The body the fake recorded last, checked against the official request schema."""
    body = upstream.last(label).body
    assert_matches_spec("anthropic", "CreateMessageParams", body)
    return body


# --- to_wire -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        (ToolChoice("auto"), {"type": "auto"}),
        (ToolChoice("required"), {"type": "any"}),
        (ToolChoice("function", "get_weather"), {"type": "tool", "name": "get_weather"}),
        (ToolChoice("none"), {"type": "none"}),
    ],
)
def test_tools_carry_their_schema_and_the_choice_uses_anthropic_words(choice, expected):
    body = wire(ask(tools=(WEATHER, Tool("ping")), tool_choice=choice))
    assert body["tools"] == [
        {"name": "get_weather", "description": "The weather in a city.", "input_schema": WEATHER_SCHEMA},
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body.get("tool_choice") == expected


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("required"), {"type": "any", "disable_parallel_tool_use": True}),
        (
            ToolChoice("function", "get_weather"),
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        ),
        (ToolChoice("none"), {"type": "none"}),  # ToolChoiceNone has no such field
    ],
)
def test_parallel_tool_calls_false_disables_parallel_use_inside_the_choice(choice, expected):
    assert wire(ask(tools=(WEATHER,), tool_choice=choice, parallel_tool_calls=False))["tool_choice"] == expected


def test_parallel_tool_calls_true_is_the_default_and_sends_nothing():
    assert "tool_choice" not in wire(ask(tools=(WEATHER,), parallel_tool_calls=True))


def test_calls_become_tool_use_blocks_and_consecutive_results_one_user_turn():
    second = ToolCall("toolu_02", "get_time", '{"city": "Paris"}')
    req = CompletionRequest(
        messages=[
            Message("user", "Weather and time in Paris?"),
            Message("assistant", "Checking.", tool_calls=(CALL, second)),
            Message("tool", "21 degrees", tool_call_id="toolu_01"),
            Message("tool", "10:00", tool_call_id="toolu_02"),
            Message("user", "And tomorrow?"),
        ],
        tools=(WEATHER, TIME),
    )
    assert wire(req)["messages"] == [
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris", "unit": "c"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "21 degrees"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "10:00"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


def test_an_assistant_turn_of_calls_only_has_no_text_block_and_results_come_before_text():
    req = CompletionRequest(
        messages=[
            Message("user", "Weather?"),
            Message("assistant", "", tool_calls=(CALL,)),
            Message("user", "Quickly please."),
            Message("tool", "", tool_call_id="toolu_01"),
        ],
        tools=(WEATHER,),
    )
    turns = wire(req)["messages"]
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris", "unit": "c"}}
    ]
    # Results first (handle-tool-calls); an empty result sends no content at all.
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01"},
        {"type": "text", "text": "Quickly please."},
    ]


def test_arguments_that_are_not_json_still_travel_as_an_object():
    bad = ToolCall("toolu_01", "get_weather", "{city: Paris")
    req = CompletionRequest(
        messages=[Message("user", "x"), Message("assistant", "", tool_calls=(bad,))], tools=(WEATHER,)
    )
    assert wire(req)["messages"][1]["content"][0]["input"] == {"_raw": "{city: Paris"}


def test_a_history_of_calls_without_tools_declares_the_called_tools_as_not_callable():
    # The API refuses tool_use/tool_result blocks in a request that defines no tools.
    req = CompletionRequest(
        messages=[
            Message("user", "Weather?"),
            Message("assistant", "", tool_calls=(CALL,)),
            Message("tool", "21 degrees", tool_call_id="toolu_01"),
        ]
    )
    body = wire(req)
    assert body["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "none"}


def test_images_become_base64_and_url_image_blocks_in_the_client_order():
    parts = (
        TextPart("What differs?"),
        ImagePart(f"data:image/png;base64,{PNG}", detail="high"),
        ImagePart("https://example.com/cat.jpg"),
    )
    body = wire(CompletionRequest(messages=[Message("user", "What differs?", parts=parts)]))
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What differs?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_an_image_data_url_that_is_not_base64_is_refused():
    with pytest.raises(ValueError):
        adapter.to_wire(CompletionRequest(messages=[Message("user", "x", parts=(ImagePart("data:,hi"),))]), MODEL)


def test_json_mode_is_a_forced_tool_taking_any_object():
    body = wire(ask(response_format=ResponseFormat("json_object")))
    assert body["tools"] == [
        {"name": JSON_TOOL, "description": adapter.JSON_TOOL_DESCRIPTION, "input_schema": {"type": "object"}}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": JSON_TOOL, "disable_parallel_tool_use": True}


def test_a_json_schema_is_the_forced_tool_input_schema():
    fmt = ResponseFormat("json_schema", WEATHER_SCHEMA, name="weather", strict=True, description="Today's weather.")
    tool = wire(ask(response_format=fmt))["tools"][0]
    assert tool["input_schema"] == WEATHER_SCHEMA and "strict" not in tool
    assert tool["description"] == f"{adapter.JSON_TOOL_DESCRIPTION} Schema: weather. Today's weather."


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, {"type": "any"}),  # call a tool, or answer through the JSON tool
        (ToolChoice("none"), {"type": "tool", "name": JSON_TOOL, "disable_parallel_tool_use": True}),
        (ToolChoice("required"), {"type": "any"}),  # a call is the answer: no JSON tool
    ],
)
def test_json_mode_with_client_tools_leaves_the_model_a_call_or_a_json_answer(choice, expected):
    body = wire(ask(tools=(WEATHER,), tool_choice=choice, response_format=ResponseFormat("json_object")))
    assert body["tool_choice"] == expected
    names = [t["name"] for t in body["tools"]]
    assert names == (["get_weather"] if choice == ToolChoice("required") else ["get_weather", JSON_TOOL])


def test_the_user_becomes_metadata_and_openai_only_hints_are_dropped():
    req = ask(user="user-42", seed=7, presence_penalty=0.5, frequency_penalty=0.5, logit_bias={"50256": -100})
    body = wire(req)  # assert_matches_spec refuses any field the API does not have
    assert body["metadata"] == {"user_id": "user-42"}
    assert not {"seed", "presence_penalty", "frequency_penalty", "logit_bias", "user"} & set(body)


# --- from_wire -----------------------------------------------------------------------------


def message(content: list, stop: str = "tool_use") -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 4}}  # fmt: skip


def test_from_wire_turns_tool_use_blocks_into_tool_calls():
    response = adapter.from_wire(
        message(
            [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
            ]
        )
    )
    assert response.content == "Checking." and response.finish_reason == "tool_calls"
    assert response.tool_calls == [
        ToolCall("toolu_01", "get_weather", json.dumps({"city": "Paris"})),
        ToolCall("toolu_02", "get_time", "{}"),
    ]
    assert response.usage == Usage(9, 4)


def test_from_wire_gives_the_json_tool_input_as_the_text_and_stops():
    tool_use = {"type": "tool_use", "id": "toolu_01", "name": JSON_TOOL, "input": {"reply": "hi"}}
    response = adapter.from_wire(message([tool_use]))
    assert (response.content, response.finish_reason, response.tool_calls) == ('{"reply": "hi"}', "stop", None)


def test_from_wire_without_tool_use_has_no_tool_calls():
    response = adapter.from_wire(message([{"type": "text", "text": "Hi"}], stop="end_turn"))
    assert (response.content, response.finish_reason, response.tool_calls) == ("Hi", "stop", None)


@pytest.mark.parametrize("block", [{"type": "tool_use", "name": "x", "input": {}}, {"type": "tool_use", "id": "t"}])
def test_from_wire_refuses_a_tool_use_without_id_or_name(block):
    with pytest.raises(MalformedResponse):
        adapter.from_wire(message([block]))


# --- parse_stream ----------------------------------------------------------------------------


def block_start(index: int, block: dict) -> tuple[str, dict]:
    return "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}


def json_delta(index: int, fragment: str) -> tuple[str, dict]:
    delta = {"type": "input_json_delta", "partial_json": fragment}
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def stream_end(stop: str = "tool_use") -> list[tuple[str, dict]]:
    return [
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    ]


async def test_parse_stream_numbers_tool_calls_from_zero_whatever_the_block_index():
    text = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}}
    events = sse_events(
        ("message_start", {"type": "message_start", "message": {"model": MODEL, "usage": {"input_tokens": 9}}}),
        block_start(0, {"type": "text", "text": ""}),
        ("content_block_delta", text),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        block_start(1, {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}),
        json_delta(1, ""),
        json_delta(1, '{"city": '),
        json_delta(1, '"Paris"}'),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        block_start(2, {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}),
        json_delta(2, '{"city": "Rome"}'),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        *stream_end(),
    )
    chunks = await collect(adapter.parse_stream(events))
    deltas = [d for c in chunks for d in c.tool_calls or ()]
    assert deltas == [
        ToolCallDelta(0, "toolu_01", "get_weather", ""),
        ToolCallDelta(0, arguments='{"city": '),
        ToolCallDelta(0, arguments='"Paris"}'),
        ToolCallDelta(1, "toolu_02", "get_time", ""),
        ToolCallDelta(1, arguments='{"city": "Rome"}'),
    ]
    assert "".join(c.delta for c in chunks) == "Checking."
    assert (chunks[-1].finish_reason, chunks[-1].usage) == ("tool_calls", Usage(9, 5))
    assert tool_calls_from_deltas(deltas) == [
        ToolCall("toolu_01", "get_weather", '{"city": "Paris"}'),
        ToolCall("toolu_02", "get_time", '{"city": "Rome"}'),
    ]


async def test_parse_stream_gives_a_call_without_input_empty_object_arguments():
    events = sse_events(
        block_start(0, {"type": "tool_use", "id": "toolu_01", "name": "ping", "input": {}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        *stream_end(),
    )
    deltas = [d for c in await collect(adapter.parse_stream(events)) for d in c.tool_calls or ()]
    assert tool_calls_from_deltas(deltas) == [ToolCall("toolu_01", "ping", "{}")]


async def test_parse_stream_gives_the_json_tool_input_as_text():
    events = sse_events(
        block_start(0, {"type": "tool_use", "id": "toolu_01", "name": JSON_TOOL, "input": {}}),
        json_delta(0, ""),
        json_delta(0, '{"reply": '),
        json_delta(0, '"hi"}'),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        *stream_end(),
    )
    chunks = await collect(adapter.parse_stream(events))
    assert [c.delta for c in chunks] == ['{"reply": ', '"hi"}', ""]
    assert not any(c.tool_calls for c in chunks) and chunks[-1].finish_reason == "stop"


# --- against the fake upstream ---------------------------------------------------------------


async def test_it_offers_tools_and_gets_a_call_back(upstream):
    req = ask(tools=(WEATHER,), tool_choice=ToolChoice("auto"), user="user-42", seed=7)
    response = await provider(upstream).complete(req)
    assert sent(upstream) == adapter.to_wire(req, MODEL)
    arguments = synth.tool_arguments(WEATHER_SCHEMA, "Weather in Paris?")
    assert response.finish_reason == "tool_calls" and response.content == ""
    [call] = response.tool_calls
    assert call.id == synth.call_id("toolu_", "get_weather", 0, "Weather in Paris?") and call.name == "get_weather"
    assert json.loads(call.arguments) == arguments == {"city": "Weather in Paris?", "unit": "c"}


async def test_a_two_turn_tool_conversation(upstream):
    llm = provider(upstream)
    first = ask(tools=(WEATHER,))
    [call] = (await llm.complete(first)).tool_calls
    second = CompletionRequest(
        messages=[*first.messages, Message("assistant", "", tool_calls=(call,)),
                  Message("tool", "21 degrees", tool_call_id=call.id)],
        tools=(WEATHER,),
    )  # fmt: skip
    response = await llm.complete(second)
    assert (response.content, response.finish_reason, response.tool_calls) == ("Tool said: 21 degrees", "stop", None)
    body = sent(upstream)
    assert body == adapter.to_wire(second, MODEL)
    assert body["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": "get_weather",
                                           "input": json.loads(call.arguments)}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 degrees"}]},
    ]  # fmt: skip


async def test_streamed_tool_call_deltas_assemble_into_the_completed_call(upstream):
    llm, req = provider(upstream), ask(tools=(WEATHER,))
    whole = await llm.complete(req)
    chunks = await collect(llm.stream(req))
    assert sent(upstream)["stream"] is True
    deltas = [d for c in chunks for d in c.tool_calls or ()]
    assert deltas[0] == ToolCallDelta(0, whole.tool_calls[0].id, "get_weather", "")
    assert len([d for d in deltas if d.arguments]) >= 2  # the input arrives in fragments
    [call] = tool_calls_from_deltas(deltas)
    assert (call.id, call.name, json.loads(call.arguments)) == (
        whole.tool_calls[0].id, "get_weather", json.loads(whole.tool_calls[0].arguments),
    )  # fmt: skip
    assert (chunks[-1].finish_reason, chunks[-1].usage) == ("tool_calls", whole.usage)


async def test_parallel_calls_and_their_results_merged_into_one_turn(upstream):
    llm, first = provider(upstream), ask("Weather and time in parallel", tools=(WEATHER, TIME))
    calls = (await llm.complete(first)).tool_calls
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    streamed = tool_calls_from_deltas([d for c in await collect(llm.stream(first)) for d in c.tool_calls or ()])
    assert [(c.id, c.name) for c in streamed] == [(c.id, c.name) for c in calls]
    second = CompletionRequest(
        messages=[*first.messages, Message("assistant", "", tool_calls=tuple(calls)),
                  Message("tool", "21 degrees", tool_call_id=calls[0].id),
                  Message("tool", "10:00", tool_call_id=calls[1].id)],
        tools=(WEATHER, TIME),
    )  # fmt: skip
    response = await llm.complete(second)
    assert response.content == "Tool said: 21 degrees\n10:00"
    last = sent(upstream)["messages"][-1]
    assert last == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": calls[0].id, "content": "21 degrees"},
        {"type": "tool_result", "tool_use_id": calls[1].id, "content": "10:00"},
    ]}  # fmt: skip


async def test_disabling_parallel_calls_gets_one_call(upstream):
    req = ask("Weather and time in parallel", tools=(WEATHER, TIME), parallel_tool_calls=False)
    response = await provider(upstream).complete(req)
    assert [c.name for c in response.tool_calls] == ["get_weather"]
    assert sent(upstream)["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


async def test_a_forced_tool_is_the_one_called(upstream):
    response = await provider(upstream).complete(
        ask(tools=(WEATHER, TIME), tool_choice=ToolChoice("function", "get_time"))
    )
    assert [c.name for c in response.tool_calls] == ["get_time"]


async def test_tool_choice_none_gets_text(upstream):
    response = await provider(upstream).complete(ask(tools=(WEATHER,), tool_choice=ToolChoice("none")))
    assert (response.content, response.finish_reason, response.tool_calls) == ("Echo: Weather in Paris?", "stop", None)


async def test_a_later_turn_without_tools_is_still_accepted(upstream):
    req = CompletionRequest(
        messages=[Message("user", "Weather?"), Message("assistant", "", tool_calls=(CALL,)),
                  Message("tool", "21 degrees", tool_call_id=CALL.id)]
    )  # fmt: skip
    assert (await provider(upstream).complete(req)).content == "Tool said: 21 degrees"
    assert sent(upstream)["tool_choice"] == {"type": "none"}


async def test_images_by_data_and_by_url_reach_the_api(upstream):
    parts = (ImagePart(f"data:image/png;base64,{PNG}"), ImagePart("https://example.com/cat.jpg"), TextPart("Same?"))
    req = CompletionRequest(messages=[Message("user", "Same?", parts=parts)])
    response = await provider(upstream).complete(req)
    assert response.content == "Echo: Same?"
    body = sent(upstream)
    assert body == adapter.to_wire(req, MODEL)
    assert body["messages"][0]["content"][:2] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


async def test_an_image_that_is_not_base64_fails_finally_before_any_request(upstream):
    req = CompletionRequest(messages=[Message("user", "x", parts=(ImagePart("data:image/png;base64"),))])
    with pytest.raises(ProviderError) as exc:
        await provider(upstream).complete(req)
    assert not exc.value.retryable and upstream.requests("an") == []


async def test_json_mode_answers_json_text_whole_and_streamed(upstream):
    llm, req = provider(upstream), ask("Say hi", response_format=ResponseFormat("json_object"))
    whole = await llm.complete(req)
    assert json.loads(whole.content) == {"reply": "Echo: Say hi"}
    assert (whole.finish_reason, whole.tool_calls) == ("stop", None)
    chunks = await collect(llm.stream(req))
    assert json.loads("".join(c.delta for c in chunks)) == {"reply": "Echo: Say hi"}
    assert chunks[-1].finish_reason == "stop" and not any(c.tool_calls for c in chunks)
    assert sent(upstream) == adapter.to_wire(req, MODEL, stream=True)


async def test_a_json_schema_answer_follows_the_schema(upstream):
    req = ask("Paris", response_format=ResponseFormat("json_schema", WEATHER_SCHEMA, name="weather"))
    response = await provider(upstream).complete(req)
    assert json.loads(response.content) == synth.value_for(WEATHER_SCHEMA, "Paris") == {"city": "Paris", "unit": "c"}


async def test_json_mode_with_tools_may_still_call_one(upstream):
    response = await provider(upstream).complete(ask(tools=(WEATHER,), response_format=ResponseFormat("json_object")))
    assert [c.name for c in response.tool_calls] == ["get_weather"] and response.finish_reason == "tool_calls"


# --- the fake checks what the API checks -----------------------------------------------------


async def test_the_fake_refuses_a_result_for_a_call_never_made(upstream):
    req = CompletionRequest(
        messages=[Message("user", "Weather?"), Message("assistant", "Let me see."),
                  Message("tool", "21 degrees", tool_call_id="toolu_other")],
        tools=(WEATHER,),
    )  # fmt: skip
    with pytest.raises(ProviderError) as exc:
        await provider(upstream).complete(req)
    assert exc.value.status_code == 400 and not exc.value.retryable
    assert "unexpected `tool_use_id`" in exc.value.message


@pytest.mark.parametrize(
    ("messages", "extra", "problem"),
    [
        ([{"role": "user", "content": "x"}], {"seed": 1}, "seed: Extra inputs are not permitted"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
          {"role": "user", "content": "y"}], {}, "ids were found without `tool_result` blocks"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
          {"role": "user", "content": [{"type": "text", "text": "y"},
                                       {"type": "tool_result", "tool_use_id": "toolu_1"}]}], {},
         "Did not find 1 `tool_result` block(s) at the beginning"),
        ([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp",
                                                                    "data": PNG}}]}], {}, "media_type"),
        ([{"role": "user", "content": "x"}], {"tool_choice": {"type": "tool", "name": "nope"}}, "not found"),
    ],
)  # fmt: skip
def test_the_fake_refuses_what_the_api_refuses(upstream, messages, extra, problem):
    body = {"model": MODEL, "max_tokens": 10, "messages": messages, "tools": [
        {"name": "get_weather", "input_schema": WEATHER_SCHEMA}], **extra}  # fmt: skip
    r = httpx.post(upstream.base_url("an", "anthropic") + "/v1/messages", json=body,
                   headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert problem in r.json()["error"]["message"]


def test_the_official_client_parses_the_fakes_streamed_tool_call(upstream):
    claude = anthropic.Anthropic(api_key=KEY, base_url=upstream.base_url("an", "anthropic"), max_retries=0)
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    with claude.messages.stream(model=MODEL, max_tokens=64, messages=messages, tools=tools) as stream:
        final = stream.get_final_message()
    [block] = final.content
    assert (final.stop_reason, block.type, block.name) == ("tool_use", "tool_use", "get_weather")
    assert block.input == synth.tool_arguments(WEATHER_SCHEMA, "Weather in Paris?")
