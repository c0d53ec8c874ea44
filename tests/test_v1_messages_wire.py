"""The Anthropic-compatible wire format of /v1/messages (routing/v1/messages.py and its
messages_blocks.py, messages_reply.py): pure parsing and rendering, checked against the
official OpenAPI description (CreateMessageParams, Message, ErrorResponse) and the official
`anthropic` SDK itself, which builds the request bodies, parses the answers, assembles the
streams and raises the errors here (its HTTP layer is a MockTransport: nothing leaves the
process)."""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from axonflow_site.errors import (
    AxonFlowError,
    DuplicateProvider,
    Forbidden,
    InvalidConfig,
    LicenseRequired,
    NoHealthyProvider,
    PayloadTooLarge,
    ProviderNotFound,
    RateLimited,
    Unauthorized,
    UpstreamFailed,
    ValidationFailed,
)
from providers.adapters.base import (
    IMAGE_URLS,
    IMAGES,
    JSON_SCHEMA,
    PARALLEL_TOOL_CALLS,
    STREAMING,
    TOOLS,
    Chunk,
    CompletionResponse,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from routing.v1 import messages as wire
from tests.fixtures_upstream import SPEC_DIR, assert_matches_spec

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
HI = [{"role": "user", "content": "Hi"}]


def body(**fields: Any) -> dict:
    data = {"model": "auto", "max_tokens": 256, "messages": HI}
    data.update(fields)
    return {k: v for k, v in data.items() if v is not ...}


def parse(**fields: Any):
    return wire.parse_messages_request(body(**fields))


@lru_cache(maxsize=4)
def _validator(schema: str):
    import jsonschema

    spec = json.loads((SPEC_DIR / "anthropic.json").read_text())
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": spec["components"]})


def spec_errors(data: dict, schema: str = "CreateMessageParams") -> list[str]:
    """What the official schema finds wrong with `data` (empty: it accepts it)."""
    if not (SPEC_DIR / "anthropic.json").exists():
        pytest.skip("provider spec anthropic.json not available")
    return [e.message for e in _validator(schema).iter_errors(data)]


def tool_turns(*results: dict, calls=("toolu_a", "toolu_b"), after: list | None = None) -> list[dict]:
    """User asks, the assistant calls `calls`, the user answers with `results`."""
    uses = [{"type": "tool_use", "id": c, "name": "get_weather", "input": {"city": c}} for c in calls]
    return [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, *uses]},
        {"role": "user", "content": list(results)},
        *(after or []),
    ]


def result(call_id: str, content: Any = "sunny", **extra: Any) -> dict:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content, **extra}


# --- the official SDK over a MockTransport --------------------------------------------------


def sdk(handler) -> anthropic.Anthropic:
    transport = httpx2.MockTransport(handler)
    return anthropic.Anthropic(
        api_key="sk-test", base_url="http://gateway.test", http_client=httpx2.Client(transport=transport), max_retries=0
    )


def answering(status: int, payload: bytes, sent: list | None = None, stream: bool = False) -> anthropic.Anthropic:
    def handler(request):
        if sent is not None:
            sent.append(json.loads(request.content))
        kind = "text/event-stream" if stream else "application/json"
        return httpx2.Response(status, content=payload, headers={"content-type": kind, "request-id": "req_1"})

    return sdk(handler)


PLAIN_ANSWER = wire.message_body(CompletionResponse("Hello!", "m-1", "stop", Usage(3, 2)), "r1", "auto")


def sent_by_sdk(**kwargs: Any) -> dict:
    """The JSON body the SDK sends for messages.create(**kwargs)."""
    sent: list[dict] = []
    answering(200, PLAIN_ANSWER, sent).messages.create(**kwargs)
    return sent[0]


# --- parsing: valid requests ------------------------------------------------------------------


def test_minimal_request():
    request, model, routing = parse()
    assert model == "auto" and routing.model == "auto" and routing.weights == {} and not routing.disable_failover
    assert request.messages == [Message("user", "Hi")]
    assert request.max_tokens == 256 and request.stream is False
    assert (request.system, request.temperature, request.top_p, request.stop, request.user) == (None,) * 5
    assert (request.tools, request.tool_choice, request.parallel_tool_calls, request.response_format) == (None,) * 4
    assert_matches_spec("anthropic", "CreateMessageParams", body())


def test_sampling_fields_metadata_and_our_routing_extensions():
    fields = dict(
        model=" claude-sonnet-4-5 ",
        system="Be terse.",
        temperature=0.5,
        top_p=0.9,
        stop_sequences=["END", "STOP"],
        stream=True,
        metadata={"user_id": "user-42"},
        service_tier="auto",
        thinking={"type": "disabled"},
        cache_control={"type": "ephemeral", "ttl": "1h"},
        container=None,
        inference_geo=None,
    )
    assert not spec_errors(body(**fields))
    request, model, routing = parse(**fields, weights={"openai": 80, "local": 0}, disable_failover=True)
    assert model == "claude-sonnet-4-5" and routing.model == "claude-sonnet-4-5"
    assert routing.weights == {"openai": 80.0, "local": 0.0} and routing.disable_failover is True
    assert request.system == "Be terse." and (request.temperature, request.top_p) == (0.5, 0.9)
    assert request.stop == ["END", "STOP"] and request.stream is True and request.user == "user-42"
    assert STREAMING in request.required_features()


def test_temperature_bounds_are_anthropics():
    assert parse(temperature=0)[0].temperature == 0.0
    assert parse(temperature=1)[0].temperature == 1.0


def test_system_text_blocks_are_joined_with_a_blank_line_and_cache_control_is_ignored():
    system = [
        {"type": "text", "text": "You are a weather bot."},
        {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}, "citations": None},
    ]
    assert not spec_errors(body(system=system))
    request, _, _ = parse(system=system)
    assert request.system == "You are a weather bot.\n\nAnswer in French."
    assert parse(system="")[0].system is None and parse(system=[])[0].system is None


def test_text_blocks_join_and_consecutive_messages_stay_in_order():
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]},
        {"role": "user", "content": "Three."},
        {"role": "assistant", "content": [{"type": "text", "text": "Ok."}]},
        {"role": "user", "content": "Go on."},
    ]
    request, _, _ = parse(messages=messages)
    assert request.messages == [
        Message("user", "One.\n\nTwo."),
        Message("user", "Three."),
        Message("assistant", "Ok."),
        Message("user", "Go on."),
    ]


def test_a_final_assistant_message_is_a_prefill_and_may_be_empty():
    for content in ("The answer is (", [], ""):
        messages = [*HI, {"role": "assistant", "content": content}]
        request, _, _ = parse(messages=messages)
        assert request.messages[-1] == Message("assistant", content if isinstance(content, str) else "")


def test_images_become_parts_in_order_base64_as_data_urls():
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "with"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}, "cache_control": None},
    ]
    data = body(messages=[{"role": "user", "content": content}])
    assert not spec_errors(data)
    request, _, _ = wire.parse_messages_request(data)
    (message,) = request.messages
    assert message.content == "Compare\n\nwith"
    assert message.parts == (
        TextPart("Compare"),
        ImagePart(f"data:image/png;base64,{PNG}"),
        TextPart("with"),
        ImagePart("https://example.com/cat.jpg"),
    )
    assert message.parts[1].data() == ("image/png", PNG)
    assert {IMAGES, IMAGE_URLS} <= request.required_features()


def test_an_image_alone_has_empty_text():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": PNG}}
    request, _, _ = parse(messages=[{"role": "user", "content": [image]}])
    assert request.messages[0].content == "" and request.messages[0].parts == (
        ImagePart(f"data:image/webp;base64,{PNG}"),
    )
    assert IMAGE_URLS not in request.required_features()


def test_tools_and_tool_choice():
    tools = [WEATHER, {**TIME, "strict": True, "cache_control": {"type": "ephemeral"}, "type": "custom"}]
    data = body(tools=tools, tool_choice={"type": "auto"})
    assert not spec_errors(data)
    request, _, _ = wire.parse_messages_request(data)
    assert request.tools == (
        Tool("get_weather", "The weather in a city.", WEATHER["input_schema"]),
        Tool("get_time", None, TIME["input_schema"], strict=True),
    )
    assert request.tool_choice == ToolChoice("auto") and request.parallel_tool_calls is None
    assert TOOLS in request.required_features() and PARALLEL_TOOL_CALLS not in request.required_features()


@pytest.mark.parametrize(
    "choice, expected, parallel",
    [
        ({"type": "auto"}, ToolChoice("auto"), None),
        ({"type": "any"}, ToolChoice("required"), None),
        ({"type": "tool", "name": "get_time"}, ToolChoice("function", "get_time"), None),
        ({"type": "none"}, ToolChoice("none"), None),
        ({"type": "auto", "disable_parallel_tool_use": True}, ToolChoice("auto"), False),
        ({"type": "any", "disable_parallel_tool_use": False}, ToolChoice("required"), None),
        (
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            ToolChoice("function", "get_weather"),
            False,
        ),
    ],
)
def test_tool_choice_maps_to_openai_words(choice, expected, parallel):
    data = body(tools=[WEATHER, TIME], tool_choice=choice)
    assert not spec_errors(data)
    request, _, _ = wire.parse_messages_request(data)
    assert (request.tool_choice, request.parallel_tool_calls) == (expected, parallel)
    assert (PARALLEL_TOOL_CALLS in request.required_features()) is (parallel is not None)


def test_tool_choice_auto_or_none_without_tools_changes_nothing():
    for choice in ({"type": "auto"}, {"type": "none"}, {"type": "auto", "disable_parallel_tool_use": True}):
        request, _, _ = parse(tool_choice=choice)
        assert (request.tools, request.tool_choice, request.parallel_tool_calls) == (None, None, None)
    assert parse(tools=[])[0].tools is None


def test_tool_use_and_tool_results_become_tool_calls_and_tool_messages():
    messages = tool_turns(
        result("toolu_a", "18°C, sunny", cache_control={"type": "ephemeral"}),
        result("toolu_b", [{"type": "text", "text": "City"}, {"type": "text", "text": "not found"}], is_error=True),
        {"type": "text", "text": "Now summarise."},
        after=[
            {"role": "assistant", "content": "Paris is sunny."},
            {"role": "user", "content": "Thanks"},
        ],
    )
    data = body(tools=[WEATHER], messages=messages)
    assert not spec_errors(data)
    request, _, _ = wire.parse_messages_request(data)
    assert request.messages == [
        Message("user", "Weather?"),
        Message(
            "assistant",
            "Checking.",
            tool_calls=(
                ToolCall("toolu_a", "get_weather", '{"city": "toolu_a"}'),
                ToolCall("toolu_b", "get_weather", '{"city": "toolu_b"}'),
            ),
        ),
        Message("tool", "18°C, sunny", tool_call_id="toolu_a"),
        Message("tool", "Error: City\n\nnot found", tool_call_id="toolu_b"),
        Message("user", "Now summarise."),
        Message("assistant", "Paris is sunny."),
        Message("user", "Thanks"),
    ]
    assert json.loads(request.messages[1].tool_calls[0].arguments) == {"city": "toolu_a"}


def test_tool_results_may_be_spread_over_consecutive_user_messages():
    """Consecutive user messages are one turn: its leading tool_result blocks answer the calls."""
    messages = tool_turns(result("toolu_b", None), after=[{"role": "user", "content": [result("toolu_a", [])]}])
    request, _, _ = parse(messages=messages)
    assert [(m.role, m.tool_call_id, m.content) for m in request.messages[2:]] == [
        ("tool", "toolu_b", ""),
        ("tool", "toolu_a", ""),
    ]


def test_tool_use_with_unicode_input_and_an_error_without_text():
    messages = [
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t-1", "name": "say", "input": {"w": "Zürich"}}]},
        {"role": "user", "content": [result("t-1", "", is_error=True)]},
    ]
    request, _, _ = parse(messages=messages)
    assert request.messages[1] == Message("assistant", "", tool_calls=(ToolCall("t-1", "say", '{"w": "Zürich"}'),))
    assert request.messages[2] == Message("tool", "Error", tool_call_id="t-1")


def test_output_config_json_schema_becomes_response_format():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    data = body(output_config={"format": {"type": "json_schema", "schema": schema}, "effort": None})
    assert not spec_errors(data)
    request, _, _ = wire.parse_messages_request(data)
    assert request.response_format == ResponseFormat("json_schema", schema=schema)
    assert JSON_SCHEMA in request.required_features()
    assert parse(output_config={})[0].response_format is None


def test_bodies_the_official_sdk_builds_parse():
    """What anthropic-python actually sends, with every feature we accept at once."""
    sent = sent_by_sdk(
        model="claude-sonnet-4-5",
        max_tokens=512,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "text", "text": "Where is this, and what is the weather there?"},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Oslo"}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "-3°C"}]},
        ],
        tools=[WEATHER],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        stop_sequences=["\n\nHuman:"],
        metadata={"user_id": "u-1"},
        extra_body={"temperature": 0.2},  # deprecated: this SDK has no argument for it any more
    )
    assert not spec_errors(sent)
    request, model, _ = wire.parse_messages_request(sent)
    assert model == "claude-sonnet-4-5" and request.system == "Be brief." and request.user == "u-1"
    assert [m.role for m in request.messages] == ["user", "assistant", "tool"]
    assert request.messages[0].parts[0] == ImagePart(f"data:image/png;base64,{PNG}")
    assert request.messages[2] == Message("tool", "-3°C", tool_call_id="toolu_01")
    assert request.parallel_tool_calls is False and request.stop == ["\n\nHuman:"] and request.temperature == 0.2


def test_an_answer_echoed_back_by_the_sdk_parses():
    """The usual tool loop: `messages.append({"role": "assistant", "content": response.content})`."""
    answer = CompletionResponse(
        "Let me look.",
        "m-1",
        "tool_calls",
        Usage(9, 4),
        tool_calls=[ToolCall("call_1", "get_weather", '{"city":"Rome"}')],
    )
    client = answering(200, wire.message_body(answer, "r1", "auto"))
    response = client.messages.create(model="auto", max_tokens=64, messages=HI, tools=[WEATHER])
    sent = sent_by_sdk(
        model="auto",
        max_tokens=64,
        tools=[WEATHER],
        messages=[
            *HI,
            {"role": "assistant", "content": response.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": response.content[1].id, "content": "hot"}],
            },
        ],
    )
    assert not spec_errors(sent)
    request, _, _ = wire.parse_messages_request(sent)
    assert request.messages[1] == Message(
        "assistant", "Let me look.", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Rome"}'),)
    )


# --- parsing: refusals --------------------------------------------------------------------------

TOOLS_AB = [{"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}]
ASKED = {"role": "user", "content": "Go"}
CALLED = {"role": "assistant", "content": TOOLS_AB}
IMAGE_B64 = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}


def msgs(*content_or_messages: Any) -> list:
    """A user message per content argument (dicts with a role are messages as they are)."""
    return [m if isinstance(m, dict) and "role" in m else {"role": "user", "content": m} for m in content_or_messages]


# (fields to set, the `param` we name, whether the official schema refuses the body too).
# Ellipsis removes a field. False in the last column: a deliberate refusal of something
# the API accepts (a feature we cannot honour across providers), named in the message.
BAD = [
    ({"model": ...}, "model", True),
    ({"model": ""}, "model", False),
    ({"model": "  "}, "model", False),
    ({"model": 5}, "model", True),
    ({"max_tokens": ...}, "max_tokens", True),
    ({"max_tokens": 0}, "max_tokens", False),
    ({"max_tokens": -1}, "max_tokens", True),
    ({"max_tokens": "100"}, "max_tokens", True),
    ({"max_tokens": True}, "max_tokens", True),
    ({"max_tokens": 1.5}, "max_tokens", True),
    ({"max_tokens": 10_000_001}, "max_tokens", False),
    ({"messages": ...}, "messages", True),
    ({"messages": []}, "messages", False),
    ({"messages": "Hi"}, "messages", True),
    ({"messages": ["Hi"]}, "messages[0]", True),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role", True),
    ({"messages": [{"role": "user"}]}, "messages[0].content", True),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", True),
    ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages[0].name", True),
    ({"messages": msgs("")}, "messages[0].content", False),
    ({"messages": msgs([])}, "messages[0].content", False),
    ({"messages": [{"role": "assistant", "content": ""}, ASKED]}, "messages[0].content", False),
    ({"messages": msgs([{"type": "text", "text": ""}])}, "messages[0].content[0].text", True),
    ({"messages": msgs([{"type": "text", "text": 5}])}, "messages[0].content[0].text", True),
    ({"messages": msgs([{"type": "text", "text": "x", "extra": 1}])}, "messages[0].content[0].extra", True),
    ({"messages": msgs(["x"])}, "messages[0].content[0]", True),
    ({"messages": msgs([{"text": "x"}])}, "messages[0].content[0].type", True),
    ({"messages": msgs([{"type": "video", "url": "x"}])}, "messages[0].content[0].type", True),
    (
        {"messages": msgs([{"type": "text", "text": "x", "cache_control": {"type": "persistent"}}])},
        "messages[0].content[0].cache_control.type",
        True,
    ),
    (
        {"messages": msgs([{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "2h"}}])},
        "messages[0].content[0].cache_control.ttl",
        True,
    ),
    (
        {"messages": msgs([{"type": "text", "text": "x", "citations": [{"type": "char_location"}]}])},
        "messages[0].content[0].citations",
        True,
    ),
    (
        {"messages": msgs([{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}])},
        "messages[0].content[0]",
        False,
    ),
    (
        {
            "messages": [
                ASKED,
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "h", "signature": "s"}]},
            ]
        },
        "messages[1].content[0]",
        False,
    ),
    (
        {"messages": [ASKED, {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]}]},
        "messages[1].content[0]",
        False,
    ),
    (
        {
            "messages": [
                ASKED,
                {
                    "role": "assistant",
                    "content": [{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}],
                },
            ]
        },
        "messages[1].content[0]",
        False,
    ),
    (
        {"messages": msgs([{"type": "search_result", "source": "s", "title": "t", "content": []}])},
        "messages[0].content[0]",
        False,
    ),
    # images
    (
        {"messages": msgs([{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": PNG}}])},
        "messages[0].content[0].source.media_type",
        True,
    ),
    (
        {"messages": msgs([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%"}}])},
        "messages[0].content[0].source.data",
        False,
    ),
    (
        {"messages": msgs([{"type": "image", "source": {"type": "base64", "media_type": "image/png"}}])},
        "messages[0].content[0].source.data",
        True,
    ),
    (
        {"messages": msgs([{"type": "image", "source": {"type": "url", "url": "http://example.com/a.png"}}])},
        "messages[0].content[0].source.url",
        False,
    ),
    (
        {"messages": msgs([{"type": "image", "source": {"type": "url", "url": "file:///etc/passwd"}}])},
        "messages[0].content[0].source.url",
        False,
    ),
    (
        {"messages": msgs([{"type": "image", "source": {"type": "file", "file_id": "file_1"}}])},
        "messages[0].content[0].source.type",
        True,
    ),
    ({"messages": msgs([{"type": "image"}])}, "messages[0].content[0].source", True),
    ({"messages": [ASKED, {"role": "assistant", "content": [IMAGE_B64]}]}, "messages[1].content[0]", False),
    # tool_use and tool_result
    ({"messages": msgs([{"type": "tool_use", "id": "t1", "name": "f", "input": {}}])}, "messages[0].content[0]", False),
    ({"messages": [ASKED, {"role": "assistant", "content": [result("t1")]}]}, "messages[1].content[0]", False),
    ({"messages": msgs([result("toolu_a")])}, "messages[0].content[0]", False),
    ({"messages": [ASKED, CALLED, *msgs([result("toolu_x")])]}, "messages[2].content[0].tool_use_id", False),
    (
        {"messages": [ASKED, CALLED, *msgs([{"type": "text", "text": "Here:"}, result("toolu_a")])]},
        "messages[2].content[1]",
        False,
    ),
    ({"messages": [ASKED, CALLED, *msgs("Never mind.")]}, "messages[1].content", False),
    ({"messages": [ASKED, CALLED]}, "messages[1].content", False),
    (
        {"messages": [ASKED, CALLED, *msgs([result("toolu_a"), result("toolu_a")])]},
        "messages[2].content[1].tool_use_id",
        False,
    ),
    (
        {
            "messages": [
                ASKED,
                CALLED,
                *msgs([result("toolu_a")]),
                {"role": "assistant", "content": "Ok"},
                *msgs([result("toolu_a")]),
            ]
        },
        "messages[4].content[0]",
        False,
    ),
    (
        {"messages": [ASKED, {"role": "assistant", "content": TOOLS_AB + TOOLS_AB}, *msgs([result("toolu_a")])]},
        "messages[1].content[1].id",
        False,
    ),
    (
        {
            "messages": [
                ASKED,
                {"role": "assistant", "content": [{"type": "tool_use", "id": "a b", "name": "f", "input": {}}]},
            ]
        },
        "messages[1].content[0].id",
        True,
    ),
    (
        {
            "messages": [
                ASKED,
                {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "", "input": {}}]},
            ]
        },
        "messages[1].content[0].name",
        True,
    ),
    (
        {
            "messages": [
                ASKED,
                {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": "{}"}]},
            ]
        },
        "messages[1].content[0].input",
        True,
    ),
    (
        {
            "messages": [
                ASKED,
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "a",
                            "name": "f",
                            "input": {},
                            "caller": {"type": "code_execution_20250825", "tool_id": "srvtoolu_1"},
                        }
                    ],
                },
            ]
        },
        "messages[1].content[0].caller",
        False,
    ),
    (
        {"messages": [ASKED, CALLED, *msgs([result("toolu_a", [IMAGE_B64])])]},
        "messages[2].content[0].content[0]",
        False,
    ),
    (
        {
            "messages": [
                ASKED,
                CALLED,
                *msgs([result("toolu_a", [{"type": "search_result", "source": "s", "title": "t", "content": []}])]),
            ]
        },
        "messages[2].content[0].content[0]",
        False,
    ),
    ({"messages": [ASKED, CALLED, *msgs([result("toolu_a", 5)])]}, "messages[2].content[0].content", True),
    (
        {"messages": [ASKED, CALLED, *msgs([result("toolu_a", is_error="yes")])]},
        "messages[2].content[0].is_error",
        True,
    ),
    ({"messages": [ASKED, CALLED, *msgs([{"type": "tool_result"}])]}, "messages[2].content[0].tool_use_id", True),
    # system
    ({"system": 5}, "system", True),
    ({"system": [{"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]}, "system[0].type", True),
    ({"system": [{"type": "text", "text": ""}]}, "system[0].text", True),
    ({"system": ["Be terse."]}, "system[0]", True),
    # sampling
    ({"temperature": 1.5}, "temperature", True),
    ({"temperature": -0.1}, "temperature", True),
    ({"temperature": "hot"}, "temperature", True),
    ({"top_p": 2}, "top_p", True),
    ({"top_k": 5}, "top_k", False),
    ({"stop_sequences": "END"}, "stop_sequences", True),
    ({"stop_sequences": [1]}, "stop_sequences", True),
    ({"stop_sequences": [""]}, "stop_sequences", False),
    ({"stop_sequences": [f"s{i}" for i in range(17)]}, "stop_sequences", False),
    ({"stream": "yes"}, "stream", True),
    # tools
    ({"tools": {"name": "f"}}, "tools", True),
    ({"tools": ["f"]}, "tools[0]", True),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}, "tools[0].type", False),
    ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0].type", False),
    ({"tools": [{"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}]}, "tools[0].type", False),
    ({"tools": [{**WEATHER, "type": 5}]}, "tools[0].type", True),
    ({"tools": [{"input_schema": {"type": "object"}}]}, "tools[0].name", True),
    ({"tools": [{**WEATHER, "name": "get weather"}]}, "tools[0].name", True),
    ({"tools": [{**WEATHER, "name": "x" * 129}]}, "tools[0].name", True),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].name", False),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema", True),
    ({"tools": [{"name": "f", "input_schema": {"type": "array"}}]}, "tools[0].input_schema", True),
    ({"tools": [{**WEATHER, "description": 5}]}, "tools[0].description", True),
    ({"tools": [{**WEATHER, "parameters": {}}]}, "tools[0].parameters", True),
    ({"tools": [{**WEATHER, "strict": "yes"}]}, "tools[0].strict", True),
    ({"tools": [{**WEATHER, "defer_loading": True}]}, "tools[0].defer_loading", False),
    ({"tools": [{**WEATHER, "allowed_callers": ["code_execution_20250825"]}]}, "tools[0].allowed_callers", False),
    ({"tools": [{**WEATHER, "input_examples": [{"city": "Oslo"}]}]}, "tools[0].input_examples", False),
    ({"tools": [{**WEATHER, "cache_control": {"type": "forever"}}]}, "tools[0].cache_control.type", True),
    # tool_choice
    ({"tools": [WEATHER], "tool_choice": "auto"}, "tool_choice", True),
    ({"tools": [WEATHER], "tool_choice": {"type": "required"}}, "tool_choice.type", True),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool"}}, "tool_choice.name", True),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name", False),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "none", "disable_parallel_tool_use": True}},
        "tool_choice.disable_parallel_tool_use",
        True,
    ),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "auto", "disable_parallel_tool_use": "yes"}},
        "tool_choice.disable_parallel_tool_use",
        True,
    ),
    ({"tools": [WEATHER], "tool_choice": {"type": "auto", "name": "get_weather"}}, "tool_choice.name", True),
    ({"tool_choice": {"type": "any"}}, "tool_choice", False),
    ({"tool_choice": {"type": "tool", "name": "get_weather"}}, "tool_choice", False),
    # metadata, thinking, output_config, service tier and the rest
    ({"metadata": "u"}, "metadata", True),
    ({"metadata": {"user": "u"}}, "metadata.user", True),
    ({"metadata": {"user_id": 5}}, "metadata.user_id", True),
    ({"metadata": {"user_id": "u" * 513}}, "metadata.user_id", True),
    ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking", False),
    ({"thinking": {"type": "adaptive"}}, "thinking", False),
    ({"output_config": {"effort": "high"}}, "output_config.effort", False),
    ({"output_config": {"format": {"type": "text"}}}, "output_config.format.type", True),
    ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema", True),
    ({"output_config": {"verbosity": "low"}}, "output_config.verbosity", True),
    ({"service_tier": "standard_only"}, "service_tier", False),
    ({"service_tier": "priority"}, "service_tier", True),
    ({"cache_control": {"type": "ephemeral", "ttl": "1d"}}, "cache_control.ttl", True),
    ({"container": "container_1"}, "container", False),
    ({"inference_geo": "us"}, "inference_geo", False),
    ({"mcp_servers": []}, "mcp_servers", True),
    ({"context_management": {}}, "context_management", True),
    ({"stop": ["x"]}, "stop", True),
    ({"weights": [1]}, "weights", True),
    ({"disable_failover": "yes"}, "disable_failover", True),
]


@pytest.mark.parametrize("fields, param, spec_refuses", BAD, ids=[f"{i}-{p}" for i, (_, p, _) in enumerate(BAD)])
def test_bad_requests_name_the_param(fields, param, spec_refuses):
    data = body(**fields)
    with pytest.raises(ValidationFailed) as caught:
        wire.parse_messages_request(data)
    assert caught.value.details == {"field": param, "param": param}
    assert caught.value.message.startswith(f"{param}: ")
    # Our extensions are not in the official schema: check the rest of the body.
    official = {k: v for k, v in data.items() if k not in ("weights", "disable_failover")}
    if param not in ("weights", "disable_failover"):
        assert bool(spec_errors(official)) is spec_refuses, spec_errors(official)


@pytest.mark.parametrize(
    "fields, words",
    [
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "'web_search_20250305' is an Anthropic server tool",
        ),
        (
            {
                "messages": msgs(
                    [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]
                )
            },
            "document blocks",
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "extended thinking is not supported"),
        ({"top_k": 5}, "top_k: is not supported"),
        ({"max_tokens": 0}, "0, to only warm a prompt cache"),
        (
            {"messages": [ASKED, CALLED, *msgs("Never mind.")]},
            "tool_use ids were found without tool_result blocks immediately after: toolu_a",
        ),
        (
            {"messages": [ASKED, CALLED, *msgs([{"type": "text", "text": "Here:"}, result("toolu_a")])]},
            "must come first",
        ),
        ({"unknown_field": 1}, "unknown_field: is not supported by this gateway"),
    ],
)
def test_refusals_say_what_is_not_supported(fields, words):
    with pytest.raises(ValidationFailed, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse(**fields)


# --- the non-streamed answer --------------------------------------------------------------------


def test_message_body_text_only():
    data = json.loads(PLAIN_ANSWER)
    assert data == {
        "id": "msg_r1",
        "type": "message",
        "role": "assistant",
        "model": "m-1",
        "content": [{"type": "text", "text": "Hello!", "citations": None}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "stop_details": None,
        "container": None,
        "usage": {
            "input_tokens": 3,
            "output_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": None,
            "inference_geo": None,
            "server_tool_use": None,
            "service_tier": None,
        },
    }
    assert not spec_errors(data, "Message")


def test_message_body_with_tool_calls():
    answer = CompletionResponse(
        "",
        "gpt-4o",
        "stop",  # some providers say stop for a function call: SDK loops test for tool_use
        Usage(12, 7),
        tool_calls=[
            ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
            ToolCall("", "get_time", ""),
            ToolCall("call_3", "get_weather", "not json"),
        ],
    )
    data = json.loads(wire.message_body(answer, "r2", "auto"))
    assert data["content"] == [
        {
            "type": "tool_use",
            "id": "call_1",
            "name": "get_weather",
            "input": {"city": "Paris"},
            "caller": {"type": "direct"},
        },
        {"type": "tool_use", "id": "toolu_r2_1", "name": "get_time", "input": {}, "caller": {"type": "direct"}},
        {
            "type": "tool_use",
            "id": "call_3",
            "name": "get_weather",
            "input": {"_raw": "not json"},
            "caller": {"type": "direct"},
        },
    ]
    assert data["stop_reason"] == "tool_use" and data["usage"]["input_tokens"] == 12
    assert not spec_errors(data, "Message")


@pytest.mark.parametrize(
    "finish, tools, expected",
    [
        ("stop", False, "end_turn"),
        (None, False, "end_turn"),
        ("length", False, "max_tokens"),
        ("length", True, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("content_filter", False, "refusal"),
        ("something_new", False, "end_turn"),
        (None, True, "tool_use"),
    ],
)
def test_stop_reasons(finish, tools, expected):
    calls = [ToolCall("c1", "f", "{}")] if tools else None
    data = json.loads(wire.message_body(CompletionResponse("x", "m", finish, tool_calls=calls), "r", "auto"))
    assert data["stop_reason"] == expected


def test_message_body_names_the_model_asked_when_the_provider_gave_none():
    data = json.loads(wire.message_body(CompletionResponse("x", ""), "r", "claude-sonnet-4-5"))
    assert data["model"] == "claude-sonnet-4-5"


def test_the_sdk_reads_the_answer():
    answer = CompletionResponse(
        "Let me check.",
        "gpt-4o",
        "tool_calls",
        Usage(10, 5),
        tool_calls=[ToolCall("call_9", "get_weather", '{"city":"Oslo"}')],
    )
    message = answering(200, wire.message_body(answer, "r9", "auto")).messages.create(
        model="auto", max_tokens=64, messages=HI, tools=[WEATHER]
    )
    assert isinstance(message, anthropic.types.Message) and message.id == "msg_r9" and message.model == "gpt-4o"
    text, use = message.content
    assert (text.type, text.text) == ("text", "Let me check.")
    assert (use.type, use.id, use.name, use.input) == ("tool_use", "call_9", "get_weather", {"city": "Oslo"})
    assert message.stop_reason == "tool_use" and (message.usage.input_tokens, message.usage.output_tokens) == (10, 5)


# --- the stream ---------------------------------------------------------------------------------


def events_of(stream_bytes: bytes) -> list[tuple[str, dict]]:
    """(event name, data) per server-sent event; every data's `type` is its event name."""
    out = []
    for frame in stream_bytes.decode().split("\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        name, data = event_line[len("event: ") :], json.loads(data_line[len("data: ") :])
        assert data["type"] == name
        out.append((name, data))
    return out


def run(stream: wire.MessageStream, chunks: list[Chunk]) -> bytes:
    return b"".join(stream.events(chunk) for chunk in chunks) + stream.finish()


TOOL_STREAM = [
    Chunk(delta="Let me ", model="gpt-4o"),
    Chunk(delta="check."),
    Chunk(tool_calls=[ToolCallDelta(0, "call_1", "get_weather", "")]),
    Chunk(tool_calls=[ToolCallDelta(0, arguments='{"ci')]),
    Chunk(tool_calls=[ToolCallDelta(0, arguments='ty": "Par')]),
    Chunk(tool_calls=[ToolCallDelta(0, arguments='is"}')]),
    Chunk(tool_calls=[ToolCallDelta(1, "call_2", "get_time", '{"tz": "CET"}')]),
    Chunk(finish_reason="tool_calls"),
    Chunk(usage=Usage(21, 9)),
]


def test_stream_event_sequence_for_text_then_tool_calls():
    produced = run(wire.MessageStream("r5", "fallback-model"), TOOL_STREAM)
    events = events_of(produced)
    assert [(name, data.get("index")) for name, data in events] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    start = events[0][1]["message"]
    assert start["id"] == "msg_r5" and start["model"] == "gpt-4o" and start["content"] == []
    assert start["stop_reason"] is None and start["usage"]["input_tokens"] == 0
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "Let me "}
    assert events[5][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    assert [e[1]["delta"] for e in events[6:9]] == [
        {"type": "input_json_delta", "partial_json": '{"ci'},
        {"type": "input_json_delta", "partial_json": 'ty": "Par'},
        {"type": "input_json_delta", "partial_json": 'is"}'},
    ]
    assert events[13][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 9, "input_tokens": 21},
    }
    # Every event is one the SDK's own types accept, field for field.
    adapter = TypeAdapter(RawMessageStreamEvent)
    for _, data in events:
        adapter.validate_python(data)


def test_the_sdk_accumulates_the_stream_into_the_final_message():
    snapshot, bufs = None, {}
    for _, data in events_of(run(wire.MessageStream("r5", "m"), TOOL_STREAM)):
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    assert snapshot.id == "msg_r5" and snapshot.stop_reason == "tool_use"
    text, weather, time = snapshot.content
    assert (text.type, text.text) == ("text", "Let me check.")
    assert (weather.type, weather.id, weather.name, weather.input) == (
        "tool_use",
        "call_1",
        "get_weather",
        {"city": "Paris"},
    )
    assert (time.id, time.name, time.input) == ("call_2", "get_time", {"tz": "CET"})
    assert (snapshot.usage.input_tokens, snapshot.usage.output_tokens) == (21, 9)


def test_the_sdk_streams_through_a_mock_transport():
    produced = run(wire.MessageStream("r6", "m"), TOOL_STREAM)
    client = answering(200, produced, stream=True)
    with client.messages.stream(model="auto", max_tokens=64, messages=HI, tools=[WEATHER]) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Let me check."
    assert [block.type for block in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[1].input == {"city": "Paris"} and final.stop_reason == "tool_use"
    raw = client.messages.create(model="auto", max_tokens=64, messages=HI, stream=True)
    assert [event.type for event in raw][:2] == ["message_start", "content_block_start"]


def test_text_after_a_tool_call_opens_a_new_text_block():
    chunks = [
        Chunk(tool_calls=[ToolCallDelta(0, "c1", "f", "{}")]),
        Chunk(delta="Done."),
        Chunk(delta="", finish_reason="stop", usage=Usage(1, 2)),
    ]
    events = events_of(run(wire.MessageStream("r", "m"), chunks))
    starts = [(d["index"], d["content_block"]["type"]) for n, d in events if n == "content_block_start"]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert starts == [(0, "tool_use"), (1, "text")] and stops == [0, 1]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"  # a plain stop with a tool call


def test_a_tool_call_without_id_gets_one():
    events = events_of(run(wire.MessageStream("r7", "m"), [Chunk(tool_calls=[ToolCallDelta(3, None, "f", "")])]))
    assert events[1][1]["content_block"]["id"] == "toolu_r7_0"
    assert [n for n, _ in events].count("content_block_delta") == 0  # empty fragments send nothing


def test_an_empty_answer_is_start_delta_and_stop():
    events = events_of(run(wire.MessageStream("r", "m", input_tokens=4), [Chunk(finish_reason="length")]))
    assert [n for n, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"]["input_tokens"] == 4
    assert events[1][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[1][1]["usage"] == {"output_tokens": 0}  # no usage reported: input stays message_start's


def test_start_is_sent_once_whether_called_or_not():
    stream = wire.MessageStream("r", "m")
    first = stream.start()
    assert events_of(first)[0][0] == "message_start" and stream.start() == b""
    rest = run(stream, [Chunk(delta="x", model="other")])
    assert b"message_start" not in rest
    assert stream.finish() == b""  # finished: nothing more
    with pytest.raises(RuntimeError):
        stream.events(Chunk(delta="late"))


def test_finish_alone_is_a_whole_stream():
    assert [n for n, _ in events_of(wire.MessageStream("r", "m").finish())] == [
        "message_start",
        "message_delta",
        "message_stop",
    ]


def test_an_interleaved_tool_call_fragment_is_refused():
    stream = wire.MessageStream("r", "m")
    stream.events(Chunk(tool_calls=[ToolCallDelta(0, "a", "f", "{")]))
    stream.events(Chunk(tool_calls=[ToolCallDelta(1, "b", "g", "{}")]))
    with pytest.raises(ValueError, match="after its block was closed"):
        stream.events(Chunk(tool_calls=[ToolCallDelta(0, arguments="}")]))


def test_an_error_mid_stream_raises_in_the_sdk():
    stream = wire.MessageStream("r", "m")
    produced = stream.events(Chunk(delta="Hel")) + wire.error_event(NoHealthyProvider("All providers failed."))
    assert events_of(produced)[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "All providers failed."}},
    )
    client = answering(200, produced, stream=True)
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="auto", max_tokens=64, messages=HI) as sdk_stream:
            sdk_stream.get_final_message()
    assert caught.value.type == "overloaded_error" and caught.value.api_message == "All providers failed."


def test_ping_is_an_event_the_sdk_skips():
    assert events_of(wire.PING_EVENT) == [("ping", {"type": "ping"})]
    stream = wire.MessageStream("r", "m")
    produced = stream.start() + wire.PING_EVENT + stream.events(Chunk(delta="ok")) + stream.finish()
    with answering(200, produced, stream=True).messages.stream(model="auto", max_tokens=8, messages=HI) as s:
        assert s.get_final_message().content[0].text == "ok"


# --- errors -------------------------------------------------------------------------------------


class NotFound(AxonFlowError):  # as routing/v1/app.py defines them
    code, http_status = "not_found", 404


class MethodNotAllowed(AxonFlowError):
    code, http_status = "method_not_allowed", 405


class Teapot(AxonFlowError):
    code, http_status = "teapot", 418


ERRORS = [
    (
        ValidationFailed("messages: must be a non-empty list", {"param": "messages"}),
        "invalid_request_error",
        anthropic.BadRequestError,
    ),
    (InvalidConfig("bad settings"), "invalid_request_error", anthropic.BadRequestError),
    (PayloadTooLarge("too big"), "request_too_large", anthropic.APIStatusError),
    (Unauthorized("Invalid token."), "authentication_error", anthropic.AuthenticationError),
    (Forbidden("No."), "permission_error", anthropic.PermissionDeniedError),
    (LicenseRequired("Upgrade."), "permission_error", anthropic.PermissionDeniedError),
    (ProviderNotFound("No model 'x'."), "not_found_error", anthropic.NotFoundError),
    (NotFound("No such endpoint."), "not_found_error", anthropic.NotFoundError),
    (MethodNotAllowed("Use POST."), "invalid_request_error", anthropic.APIStatusError),
    (DuplicateProvider("Taken."), "invalid_request_error", anthropic.APIStatusError),
    (RateLimited("Slow down.", headers={"Retry-After": "1"}), "rate_limit_error", anthropic.RateLimitError),
    (UpstreamFailed("Upstream said no."), "api_error", anthropic.InternalServerError),
    (NoHealthyProvider("No provider is healthy."), "overloaded_error", anthropic.InternalServerError),
    (AxonFlowError("Internal error; see the server log."), "api_error", anthropic.InternalServerError),
    (Teapot("?"), "invalid_request_error", anthropic.APIStatusError),
]


@pytest.mark.parametrize("error, kind, sdk_error", ERRORS, ids=[e.code for e, _, _ in ERRORS])
def test_error_bodies_in_anthropics_envelope(error, kind, sdk_error):
    data = json.loads(wire.error_body(error, "req_9"))
    assert data == {"type": "error", "error": {"type": kind, "message": error.message}, "request_id": "req_9"}
    if kind != "request_too_large":  # in the errors guide, not among the spec's error schemas
        assert not spec_errors(data, "ErrorResponse")
    with pytest.raises(sdk_error) as caught:
        answering(error.http_status, wire.error_body(error)).messages.create(model="auto", max_tokens=8, messages=HI)
    assert caught.value.status_code == error.http_status
    assert (caught.value.type, caught.value.api_message) == (kind, error.message)


def test_error_body_without_a_request_id():
    assert json.loads(wire.error_body(Unauthorized("x")))["request_id"] is None
