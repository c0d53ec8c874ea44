"""Anthropic wire format for the fake upstream: the Messages API (JSON and SSE) and the
model list, as https://docs.anthropic.com/en/api/messages and
https://docs.anthropic.com/en/docs/build-with-claude/streaming describe them,
faithful enough for the official `anthropic` package to parse.

Beyond text it checks what the API checks of tools, tool results and images
(https://platform.claude.com/docs/en/agents-and-tools/tool-use/handle-tool-calls,
https://platform.claude.com/docs/en/build-with-claude/vision), calls tools as synth.py
describes (a tool_use block, stop_reason tool_use, its input streamed as
input_json_delta fragments) and answers tool results with synth.tool_result_reply.
A tool whose input schema is an open object (no properties) is how a JSON answer is
asked of Claude (https://docs.anthropic.com/en/docs/build-with-claude/tool-use#json-mode):
its input is synth's JSON-mode reply (synth.json_tool_input).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from typing import Any

from aiohttp import web

from providers.fake_upstream import synth
from providers.fake_upstream.core import (
    FakeRequest,
    Route,
    checked,
    count_tokens,
    generate,
    last_text,
    split_chunks,
    text_of,
)

BASE_PATH = ""
TEXT_BLOCK = {"type": "text", "text": ""}
MODELS = (
    ("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z"),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z"),
)
# CreateMessageParams has additionalProperties: false; an OpenAI field (seed, user…) is a 400.
FIELDS = frozenset({
    "model", "messages", "cache_control", "container", "inference_geo", "max_tokens", "metadata", "output_config",
    "service_tier", "stop_sequences", "stream", "system", "temperature", "thinking", "tool_choice", "tools", "top_k",
    "top_p",
})  # fmt: skip
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
TOOL_CHOICES = ("auto", "any", "tool", "none")

# https://docs.anthropic.com/en/api/errors
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict:
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake0001"}


# What "missing_fields" drops: a message's `content`, the `message` of message_start, the
# `content_block` of content_block_start, the `delta` of the delta events and the model
# list's `data` (the SDK's Raw*Event types require each).
REQUIRED_FIELDS = frozenset({"content", "message", "content_block", "delta", "data"})


def is_end(event: str | None, data: object) -> bool:
    # "A final message_stop event" ends every stream
    # (https://docs.anthropic.com/en/docs/build-with-claude/streaming#event-types).
    return event == "message_stop"


def stream_error_frame(message: str = "Overloaded") -> str:
    # "We may occasionally send errors in the event stream", e.g. overloaded_error
    # (https://docs.anthropic.com/en/docs/build-with-claude/streaming#error-events).
    data = {"type": "error", "error": {"type": "overloaded_error", "message": message}}
    return f"event: error\ndata: {json.dumps(data)}\n\n"


def _unauthenticated(req: FakeRequest) -> bool:
    # x-api-key is the documented header; newer SDKs send the key as a bearer token.
    bearer = req.headers.get("Authorization", "").startswith("Bearer ")
    return req.behaviour.require_auth and not (req.headers.get("x-api-key") or bearer)


# --- the API's checks ----------------------------------------------------------------------


def _check(req: FakeRequest) -> web.Response | None:
    """The API's first checks: a key, anthropic-version, then the body's fields, its
    tools and its messages."""
    if _unauthenticated(req):
        return req.error(401, "x-api-key header is required")
    if not req.headers.get("anthropic-version"):
        return req.error(400, "anthropic-version: header is required")
    body = req.body
    if not isinstance(body, dict):
        return req.error(400, "There was an issue with your request body: invalid JSON")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return req.error(400, f"{name}: Field required")
    extra = sorted(set(body) - FIELDS)
    problem = (
        f"{extra[0]}: Extra inputs are not permitted" if extra else _tools_problem(body) or _messages_problem(body)
    )
    return req.error(400, problem) if problem else None


def _tools_problem(body: dict) -> str | None:
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        return "tools: Input should be a valid list"
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not TOOL_NAME.fullmatch(str(tool.get("name"))):
            return f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{i}.input_schema.type: Input should be 'object'"
    choice = body.get("tool_choice")
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in TOOL_CHOICES:
        return f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the expected tags: " + (
            ", ".join(f"'{c}'" for c in TOOL_CHOICES)
        )
    if kind == "none" and len(choice) > 1:
        return f"tool_choice.none.{sorted(set(choice) - {'type'})[0]}: Extra inputs are not permitted"
    if kind == "tool" and choice.get("name") not in [t["name"] for t in tools]:
        return f"tool_choice.name: Tool '{choice.get('name')}' not found in the provided tools"
    return None


def _turns(messages: list) -> tuple[list[tuple[str, list]], str | None]:
    """((role, blocks) turns, a problem). "Consecutive user or assistant turns in your
    request will be combined into a single turn" (CreateMessageParams.messages)."""
    turns: list[tuple[str, list]] = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            return [], (
                f'messages: Unexpected role "{role}". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.'
            )
        content = m.get("content")
        if not isinstance(content, (str, list)):
            return [], f"messages.{i}.content: Input should be a valid string or list"
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for j, block in enumerate(content if isinstance(content, list) else []):
            if problem := _block_problem(block, f"messages.{i}.content.{j}"):
                return [], problem
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, list(blocks)))
    return turns, None


def _block_problem(block: Any, where: str) -> str | None:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str):
        return f"{where}.type: Field required"
    if kind == "text" and not (isinstance(block.get("text"), str) and block["text"]):
        return f"{where}: text content blocks must be non-empty"
    if kind == "image":
        return _image_problem(block.get("source"), where)
    if kind == "tool_use" and not (
        TOOL_ID.fullmatch(str(block.get("id")))
        and isinstance(block.get("name"), str)
        and isinstance(block.get("input"), dict)
    ):
        return f"{where}.tool_use: id, name and input (an object) are required"
    if kind == "tool_result":
        if not TOOL_ID.fullmatch(str(block.get("tool_use_id"))):
            return f"{where}.tool_result.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'"
        content = block.get("content", "")
        inner = content if isinstance(content, list) else []
        if not isinstance(content, (str, list)):
            return f"{where}.tool_result.content: Input should be a valid string or list"
        return next((p for k, b in enumerate(inner) if (p := _block_problem(b, f"{where}.content.{k}"))), None)
    return None


def _image_problem(source: Any, where: str) -> str | None:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "url":
        ok = isinstance(source.get("url"), str) and source["url"].startswith(("https://", "http://"))
        return None if ok else f"{where}.image.source.url: Input should be a valid URL"
    if kind != "base64":
        return f"{where}.image.source: Input tag '{kind}' found using 'type' does not match 'base64', 'url'"
    if source.get("media_type") not in IMAGE_TYPES:
        return f"{where}.image.source.base64.media_type: Input should be " + ", ".join(f"'{t}'" for t in IMAGE_TYPES)
    try:
        base64.b64decode(str(source.get("data")), validate=True)
    except (binascii.Error, ValueError):
        return f"{where}.image.source.base64.data: The image data is not valid base64"
    return None


def _messages_problem(body: dict) -> str | None:
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    turns, problem = _turns(messages)
    if problem:
        return problem
    if not body.get("tools") and any(b.get("type") in ("tool_use", "tool_result") for _, bs in turns for b in bs):
        return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    return _pairing_problem(turns)


def _ids(blocks: list, kind: str, key: str) -> list:
    return [b.get(key) for b in blocks if b.get("type") == kind]


def _pairing_problem(turns: list[tuple[str, list]]) -> str | None:
    """Each tool_use is answered by a tool_result at the start of the next (user) turn,
    and each tool_result answers a tool_use of the turn before."""
    for t, (role, blocks) in enumerate(turns):
        if role == "user":
            asked = _ids(turns[t - 1][1], "tool_use", "id") if t else []
            stray = [i for i in _ids(blocks, "tool_result", "tool_use_id") if i not in asked]
            if stray:
                return (f"messages.{t}: unexpected `tool_use_id` found in `tool_result` blocks: {stray[0]}. Each "
                        "`tool_result` block must have a corresponding `tool_use` block in the previous message.")  # fmt: skip
            continue
        asked = _ids(blocks, "tool_use", "id")
        following = turns[t + 1][1] if t + 1 < len(turns) else []
        leading = [b.get("tool_use_id") for b in following[: len(asked)] if b.get("type") == "tool_result"]
        missing = [i for i in asked if i not in leading]
        if missing and set(missing) <= set(_ids(following, "tool_result", "tool_use_id")):
            return (f"messages.{t + 1}: Did not find {len(asked)} `tool_result` block(s) at the beginning of this "
                    "message. Messages following `tool_use` blocks must begin with a matching number of "
                    "`tool_result` blocks.")  # fmt: skip
        if missing:
            return (f"messages.{t}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                    "in the next message.")  # fmt: skip
    return None


# --- the answer ----------------------------------------------------------------------------


def _fragments(text: str) -> list[str]:
    """input_json_delta pieces: an empty one first, as the API sends, then 2 or more."""
    pieces = split_chunks(text)
    return ["", *(pieces if len(pieces) > 1 else [text[: len(text) // 2], text[len(text) // 2 :]])]


def _tool_calls(body: dict, prompt: str) -> list[tuple[dict, list[str]]]:
    """The tool_use blocks (with their input fragments) the model answers, or []."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none":
        return []
    forced = choice.get("name") if choice.get("type") == "tool" else None
    schemas = {t["name"]: t.get("input_schema") for t in tools}
    names = synth.pick_tools(list(schemas), forced, prompt, not choice.get("disable_parallel_tool_use"))
    calls = []
    for i, name in enumerate(names):
        value = synth.json_tool_input(schemas.get(name), prompt)
        block = {"type": "tool_use", "id": synth.call_id("toolu_", name, i, prompt), "name": name, "input": value}
        calls.append((block, _fragments(json.dumps(value))))
    return calls


def answer(req: FakeRequest, body: dict) -> tuple[list[tuple[dict, list[str]]], str, str | None, int, int]:
    """(content blocks with their stream pieces, stop_reason, stop_sequence, input_tokens,
    output_tokens): the reply to tool results, else tool calls, else the echo."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    prompt = last_text(messages)
    turns, _ = _turns(messages)
    last = turns[-1][1] if turns and turns[-1][0] == "user" else []
    results = [b for b in last if b.get("type") == "tool_result"]
    blocks = [] if results else _tool_calls(body, prompt)
    stop_reason, stop_sequence = "tool_use", None
    if not blocks:
        said = "\n".join(text_of(r.get("content")) for r in results)
        reply = generate(synth.tool_result_reply(said) if results else req.reply_for(prompt),
                         body.get("stop_sequences"), body.get("max_tokens"))  # fmt: skip
        stop_sequence = reply.stop
        stop_reason = "max_tokens" if reply.truncated else "stop_sequence" if stop_sequence else "end_turn"
        blocks = [({"type": "text", "text": "".join(reply.pieces)}, reply.pieces)]
    output = "".join(json.dumps(b["input"]) if b["type"] == "tool_use" else b["text"] for b, _ in blocks)
    prompt_text = text_of(body.get("system")) + "".join(text_of(m.get("content")) for m in messages)
    input_tokens, output_tokens, _total = req.counts(count_tokens(prompt_text), count_tokens(output))
    return blocks, stop_reason, stop_sequence, input_tokens, output_tokens


def _block_events(index: int, block: dict, pieces: list[str]) -> list[tuple[str, dict]]:
    if block["type"] == "tool_use":
        start = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    else:
        start, deltas = TEXT_BLOCK, [{"type": "text_delta", "text": p} for p in pieces]
    events = [("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})]
    events += [("ping", {"type": "ping"})] if index == 0 else []
    events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
    return events + [("content_block_stop", {"type": "content_block_stop", "index": index})]


@checked(_check)
async def messages(req: FakeRequest) -> web.StreamResponse:
    body = req.body
    blocks, stop_reason, stop_sequence, input_tokens, output_tokens = answer(req, body)
    msg_id = f"msg_{zlib.crc32(repr(body.get('messages')).encode()):08x}fake"
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    head = {"id": msg_id, "type": "message", "role": "assistant", "model": body["model"]}
    if not body.get("stream"):
        content = [block for block, _ in blocks]
        return await req.json(
            {**head, "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage}
        )
    start = {**head, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
    events = [("message_start", {"type": "message_start", "message": start})]
    for index, (block, pieces) in enumerate(blocks):
        events += _block_events(index, block, pieces)
    delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    events += [
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return await req.sse(events, headers={"request-id": "req_fake0001"})


async def list_models(req: FakeRequest) -> web.StreamResponse:
    if _unauthenticated(req):
        return req.error(401, "x-api-key header is required")
    data = [{"type": "model", "id": i, "display_name": n, "created_at": c} for i, n, c in MODELS]
    return await req.json({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})


# Both Anthropic and OpenAI serve GET /v1/models; Anthropic's callers always send
# anthropic-version, which tells the two apart.
ROUTES = [
    Route("POST", "/v1/messages", messages, kind="chat"),
    Route("GET", "/v1/models", list_models, kind="probe", header="anthropic-version"),
]
