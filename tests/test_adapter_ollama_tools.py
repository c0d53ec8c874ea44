"""The Ollama adapter beyond plain text: tools and tool calls (object arguments,
synthesized ids, whole calls in a stream), inline images, `format`, the extra
options and /api/embed, per https://docs.ollama.com/api/chat and
https://docs.ollama.com/api/embed. Every body sent is checked against the served
OpenAPI description."""

from __future__ import annotations

import json

import httpx
import pytest

from providers.adapters import ollama
from providers.adapters.base import (
    CHAT,
    EMBEDDINGS,
    IMAGES,
    JSON_MODE,
    JSON_SCHEMA,
    STREAMING,
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
from providers.fake_upstream import synth
from tests.fixtures_upstream import adapter_for, assert_matches_spec, collect, items

pytestmark = pytest.mark.usefixtures("http_session")

PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER = Tool(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool("get_time")
PROMPT = "What is the weather in Toronto?"


def ask(*messages: Message, **fields) -> CompletionRequest:
    return CompletionRequest(messages=list(messages) or [Message("user", PROMPT)], **fields)


def make(upstream, label: str = "olt", **settings) -> ollama.OllamaProvider:
    return adapter_for(upstream, "ollama", label, model="llama3.2", settings=settings)


# --- to_wire ------------------------------------------------------------------------------


def test_to_wire_sends_tools_images_calls_results_format_and_options():
    call = ToolCall("call_1", "get_weather", '{"city":"Toronto"}')
    request = ask(
        Message("user", "Look.", parts=(TextPart("Look."), ImagePart(f"data:image/png;base64,{PIXEL}"))),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "11 degrees", tool_call_id="call_1", name="get_weather"),
        system="Be brief.",
        tools=(WEATHER, TIME),
        response_format=ResponseFormat("json_object"),
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        temperature=0.1,
    )
    body = ollama.to_wire(request, "llama3.2")
    assert body == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Look.", "images": [PIXEL]},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Toronto"}}}]},
            {"role": "tool", "content": "11 degrees"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": WEATHER.description, "parameters": WEATHER.parameters}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
        ],
        "format": "json",
        "stream": False,
        "options": {"temperature": 0.1, "seed": 42, "presence_penalty": 0.5, "frequency_penalty": 0.25},
    }  # fmt: skip
    assert_matches_spec("ollama", "ChatRequest", body)


def test_a_json_schema_is_the_format_itself():
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    body = ollama.to_wire(ask(response_format=ResponseFormat("json_schema", schema, "person", True)), "llama3.2")
    assert body["format"] == schema
    assert_matches_spec("ollama", "ChatRequest", body)


@pytest.mark.parametrize(
    ("choice", "offered"),
    [
        (None, ["get_weather", "get_time"]),
        (ToolChoice("auto"), ["get_weather", "get_time"]),
        (ToolChoice("required"), ["get_weather", "get_time"]),
        (ToolChoice("function", "get_time"), ["get_time"]),
        (ToolChoice("none"), []),
    ],
)
def test_tool_choice_narrows_what_is_offered(choice, offered):
    body = ollama.to_wire(ask(tools=(WEATHER, TIME), tool_choice=choice), "llama3.2")
    assert [t["function"]["name"] for t in body.get("tools", [])] == offered
    assert_matches_spec("ollama", "ChatRequest", body)


def test_an_image_by_url_is_refused_not_dropped():
    image = Message("user", "x", parts=(TextPart("x"), ImagePart("https://example.com/cat.png")))
    with pytest.raises(ProviderError, match="data: URLs") as exc:
        ollama.to_wire(ask(image), "llama3.2", provider="local")
    assert exc.value.retryable and exc.value.provider == "local"


def test_it_declares_what_ollama_can_do():
    assert ollama.OllamaProvider.features == {CHAT, STREAMING, TOOLS, IMAGES, JSON_MODE, JSON_SCHEMA, EMBEDDINGS}


# --- from_wire and parse_stream ----------------------------------------------------------------


def call_body(*calls: dict, done_reason: str = "stop") -> dict:
    message = {"role": "assistant", "content": "", "tool_calls": list(calls)}
    return {"model": "llama3.2", "message": message, "done": True, "done_reason": done_reason, "eval_count": 9}


def test_from_wire_reads_tool_calls_with_stable_synthesized_ids():
    body = call_body(
        {"function": {"name": "get_weather", "arguments": {"city": "Toronto"}}},
        {"function": {"name": "get_time", "arguments": {}}},
    )
    response = ollama.from_wire(body)
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("get_weather", '{"city": "Toronto"}'),
        ("get_time", "{}"),
    ]
    ids = [c.id for c in response.tool_calls]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 2
    assert [c.id for c in ollama.from_wire(body).tool_calls] == ids
    assert response.finish_reason == "tool_calls" and response.content == ""


def test_from_wire_keeps_an_id_ollama_gave():
    body = call_body({"id": "call_abc", "function": {"name": "get_time", "arguments": {}}})
    assert ollama.from_wire(body).tool_calls == [ToolCall("call_abc", "get_time", "{}")]


@pytest.mark.parametrize("calls", ["x", [5], [{"function": {"arguments": {}}}], [{"name": "f"}]])
def test_from_wire_rejects_malformed_tool_calls(calls):
    body = {"message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": True}
    with pytest.raises(MalformedResponse):
        ollama.from_wire(body)


async def test_parse_stream_makes_one_whole_delta_per_call_with_indexes_counting_on():
    chunks = await collect(ollama.parse_stream(items(
        {"message": {"content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "X"}}}]},
         "done": False},
        {"message": {"content": "", "tool_calls": [{"function": {"name": "get_time", "arguments": {}}}]}, "done": False},
        {"message": {"content": ""}, "done": True, "done_reason": "stop", "prompt_eval_count": 5, "eval_count": 3},
    )))  # fmt: skip
    deltas = [d for c in chunks for d in c.tool_calls or []]
    whole = ollama.tool_calls_from(
        [{"function": {"name": "get_weather", "arguments": {"city": "X"}}}, {"function": {"name": "get_time"}}]
    )
    assert deltas == [ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(whole)]
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage.completion_tokens == 3


def test_embed_to_wire_sends_dimensions_and_keep_alive_as_a_duration():
    settings = ollama.Settings.parse({"keep_alive": 300})
    body = ollama.embed_to_wire(EmbeddingRequest(["a", "b"], dimensions=64), "nomic-embed-text", settings)
    assert body == {"model": "nomic-embed-text", "input": ["a", "b"], "dimensions": 64, "keep_alive": "300s"}
    assert_matches_spec("ollama", "EmbedRequest", body)


@pytest.mark.parametrize("body", [[], {"embeddings": "x"}, {"embeddings": [["a"]]}, {"embeddings": []}])
def test_embed_answers_that_are_not_one_vector_per_input_are_malformed(body):
    with pytest.raises(MalformedResponse):
        ollama.embed_from_wire(body, expected=1)


@pytest.mark.parametrize("raw", [{"embedding_model": 5}, {"embedding_model": "a\nb"}])
def test_a_bad_embedding_model_setting_is_invalid_config(raw):
    from axonflow_site.errors import InvalidConfig

    with pytest.raises(InvalidConfig):
        ollama.Settings.parse(raw)


# --- against the fake upstream ----------------------------------------------------------------


def expected_arguments(tool: Tool, prompt: str = PROMPT) -> str:
    return json.dumps(synth.tool_arguments(tool.parameters, prompt))


async def test_it_sends_tools_and_reads_the_tool_call(upstream):
    request = ask(tools=(WEATHER,))
    response = await make(upstream).complete(request)

    sent = upstream.last("olt")
    assert (sent.method, sent.path) == ("POST", "/olt/api/chat")
    assert sent.body == ollama.to_wire(request, "llama3.2")
    assert_matches_spec("ollama", "ChatRequest", sent.body)
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("get_weather", expected_arguments(WEATHER))]
    assert response.tool_calls[0].id.startswith("call_") and response.finish_reason == "tool_calls"


async def test_a_second_turn_with_the_tool_result_gets_the_answer(upstream):
    provider = make(upstream)
    first = await provider.complete(ask(tools=(WEATHER,)))
    second = ask(
        Message("user", PROMPT),
        Message("assistant", "", tool_calls=tuple(first.tool_calls)),
        Message("tool", "11 degrees, cloudy", tool_call_id=first.tool_calls[0].id),
        tools=(WEATHER,),
    )
    response = await provider.complete(second)

    sent = upstream.last("olt")
    assert sent.body["messages"][1:] == [
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": PROMPT}}}]},
        {"role": "tool", "content": "11 degrees, cloudy"},
    ]  # fmt: skip
    assert_matches_spec("ollama", "ChatRequest", sent.body)
    assert (response.content, response.tool_calls, response.finish_reason) == (
        "Tool said: 11 degrees, cloudy",
        None,
        "stop",
    )


async def test_a_streamed_tool_call_is_the_completed_one(upstream):
    provider = make(upstream)
    request = ask(Message("user", "Weather and time in parallel"), tools=(WEATHER, TIME))
    whole = await provider.complete(request)
    chunks = await collect(provider.stream(request))

    assert_matches_spec("ollama", "ChatRequest", upstream.last("olt").body)
    deltas = [d for c in chunks for d in c.tool_calls or []]
    assert [(d.index, d.name) for d in deltas] == [(0, "get_weather"), (1, "get_time")]
    assert tool_calls_from_deltas(deltas) == whole.tool_calls
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage == whole.usage


async def test_tool_choice_none_sends_no_tools_and_gets_text(upstream):
    response = await make(upstream).complete(ask(tools=(WEATHER,), tool_choice=ToolChoice("none")))
    assert "tools" not in upstream.last("olt").body
    assert (response.content, response.tool_calls) == (f"Echo: {PROMPT}", None)


async def test_an_image_part_goes_inline_as_base64(upstream):
    parts = (TextPart("What is this?"), ImagePart(f"data:image/png;base64,{PIXEL}"))
    response = await make(upstream).complete(ask(Message("user", "What is this?", parts=parts)))

    sent = upstream.last("olt")
    assert sent.body["messages"] == [{"role": "user", "content": "What is this?", "images": [PIXEL]}]
    assert_matches_spec("ollama", "ChatRequest", sent.body)
    assert response.content == "Echo: What is this?"


async def test_json_mode_and_a_json_schema_answer_json(upstream):
    provider = make(upstream)
    json_mode = await provider.complete(ask(response_format=ResponseFormat("json_object"), seed=1))
    sent = upstream.last("olt")
    assert (sent.body["format"], sent.body["options"]) == ("json", {"seed": 1})
    assert_matches_spec("ollama", "ChatRequest", sent.body)
    assert json.loads(json_mode.content) == {"reply": f"Echo: {PROMPT}"}

    schema = {"type": "object", "properties": {"city": {"type": "string"}, "rain": {"type": "boolean"}}}
    structured = await provider.complete(ask(response_format=ResponseFormat("json_schema", schema)))
    assert upstream.last("olt").body["format"] == schema
    assert json.loads(structured.content) == {"city": PROMPT, "rain": True}


async def test_embeddings_send_the_documented_request(upstream):
    response = await make(upstream).embed(EmbeddingRequest(["first text", "second text"], dimensions=32))

    sent = upstream.last("olt")
    assert (sent.method, sent.path) == ("POST", "/olt/api/embed")
    assert sent.body == {"model": "nomic-embed-text", "input": ["first text", "second text"], "dimensions": 32}
    assert_matches_spec("ollama", "EmbedRequest", sent.body)
    assert response.vectors == [synth.embedding("first text", 32), synth.embedding("second text", 32)]
    assert (response.model, response.prompt_tokens) == ("nomic-embed-text", 4)
    assert upstream.counts("olt") == {"embeddings": 1, "total": 1}


async def test_the_embedding_model_comes_from_the_request_then_the_settings(upstream):
    provider = make(upstream, embedding_model="mxbai-embed-large")
    await provider.embed(EmbeddingRequest(["x"]))
    assert upstream.last("olt").body["model"] == "mxbai-embed-large"
    response = await provider.embed(EmbeddingRequest(["x"], model="all-minilm"))
    assert upstream.last("olt").body["model"] == response.model == "all-minilm"


@pytest.mark.parametrize(("kind", "retryable"), [("500", True), ("404", False)])
async def test_embedding_errors_are_retryable_or_final(upstream, kind, retryable):
    upstream.configure("olt", failure_kind=kind, fail_next=1, error_message='model "nomic-embed-text" not found')
    with pytest.raises(ProviderError) as exc:
        await make(upstream).embed(EmbeddingRequest(["x"]))
    assert (exc.value.status_code, exc.value.retryable) == (int(kind), retryable)
    assert "not found" in exc.value.message


# --- the fake answers as Ollama does -------------------------------------------------------------


def test_the_fake_answers_match_the_spec(upstream):
    url = upstream.base_url("spec", "ollama")
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "tools": tools, "stream": False}
    answer = httpx.post(f"{url}/api/chat", json=body).json()
    assert answer["message"]["tool_calls"] == [{"function": {"name": "get_time", "arguments": {}}}]
    assert_matches_spec("ollama", "ChatResponse", answer)
    lines = httpx.post(f"{url}/api/chat", json={**body, "stream": True}).text.splitlines()
    # The served ChatStreamEvent has no done_reason nor counts: the last line is a ChatResponse.
    for line in lines[:-1]:
        assert_matches_spec("ollama", "ChatStreamEvent", json.loads(line))
    assert_matches_spec("ollama", "ChatResponse", json.loads(lines[-1]))
    assert_matches_spec(
        "ollama", "EmbedResponse", httpx.post(f"{url}/api/embed", json={"model": "m", "input": "x"}).json()
    )


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": "x", "images": ["data:image/png;base64,AAAA"]},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]},
        {"role": "user", "content": [{"type": "text", "text": "x"}]},
    ],
)
def test_the_fake_refuses_what_ollama_cannot_decode(upstream, message):
    body = {"model": "llama3.2", "messages": [message], "stream": False}
    r = httpx.post(f"{upstream.base_url('spec', 'ollama')}/api/chat", json=body)
    assert r.status_code == 400 and r.json()["error"]
