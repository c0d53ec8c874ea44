"""Ollama wire format for the fake upstream: `POST /api/chat` (JSON with `"stream": false`,
NDJSON otherwise, Ollama's default; tool calls and JSON output as synth.py decides
them), `POST /api/embed` and `GET /api/tags`, as https://docs.ollama.com/api/chat,
https://docs.ollama.com/api/streaming, https://docs.ollama.com/api/embed and
https://docs.ollama.com/api/errors describe them. Ollama checks no key, so neither
does this module.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone

from aiohttp import web

from providers.fake_upstream import synth
from providers.fake_upstream.core import FakeRequest, Route, checked, count_tokens, generate, last_text, text_of

BASE_PATH = ""
MODELS = ("llama3.2", "qwen3:8b", "gemma3")
ROLES = {"system", "user", "assistant", "tool"}


def error_body(status: int, message: str) -> dict:
    return {"error": message}


# What "missing_fields" drops: the chat answer's `message` (on every streamed line too),
# the embeddings and the model list.
REQUIRED_FIELDS = frozenset({"message", "embeddings", "models"})


def is_end(event: str | None, data: object) -> bool:
    # "The final response in the stream has done: true" with the counts
    # (https://docs.ollama.com/api/streaming).
    return isinstance(data, dict) and data.get("done") is True


def stream_error_frame(message: str = "an error was encountered while running the model") -> str:
    # Once streaming started the status stays 200 and the error is one more line
    # (https://docs.ollama.com/api/errors#errors-that-occur-while-streaming).
    return json.dumps({"error": message}, separators=(",", ":")) + "\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _check(req: FakeRequest) -> web.Response | None:
    """The server's first checks, with its messages."""
    body = req.body
    if not isinstance(body, dict):
        return req.error(400, "invalid request body")
    if not body.get("model"):
        return req.error(400, "model is required")
    messages = body.get("messages")
    if not isinstance(messages, list):
        return req.error(400, "messages is required")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return req.error(400, "invalid message role")
        problem = _message_problem(message)
        if problem:
            return req.error(400, problem)
    if "options" in body and not isinstance(body["options"], dict):
        return req.error(400, "options must be an object")
    fmt = body.get("format")
    if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
        return req.error(400, f"invalid format: {json.dumps(fmt)[:60]}")
    tools = body.get("tools") or []
    for tool in tools if isinstance(tools, list) else [None]:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not function.get("name"):
            return req.error(400, "invalid tool: a function with a name is required")
    return None


def _message_problem(message: dict) -> str | None:
    """What Ollama's JSON decoding refuses in a message: images are base64 bytes and
    tool call arguments an object (api.ToolCallFunctionArguments), not JSON text."""
    if not isinstance(message.get("content", ""), str):
        return "json: cannot unmarshal array into Go struct field Message.messages.content of type string"
    for image in message.get("images") or []:
        try:
            base64.b64decode(image, validate=True)
        except (TypeError, ValueError, binascii.Error):
            return "illegal base64 data in messages.images"
    for call in message.get("tool_calls") or []:
        arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
        if not isinstance(arguments, dict):
            return "json: cannot unmarshal string into Go struct field of type api.ToolCallFunctionArguments"
    return None


def reply_text(req: FakeRequest, body: dict) -> str:
    """The text answered: a tool result's echo, JSON for a format, or the reply."""
    messages = body["messages"]
    if messages and messages[-1].get("role") == "tool":
        return synth.tool_result_reply(text_of(messages[-1].get("content")))
    fmt = body.get("format")
    if fmt == "json":
        return synth.json_reply(last_text(messages))
    if isinstance(fmt, dict):
        return synth.json_reply(last_text(messages), fmt)
    return req.reply_for(last_text(messages))


def tool_calls(body: dict) -> list[dict]:
    """The calls the fake model makes (synth.py rules; Ollama has no tool_choice and
    no parallel switch), with object arguments and no id, as Ollama answers them."""
    messages = body["messages"]
    functions = [t["function"] for t in body.get("tools") or []]
    if not functions or (messages and messages[-1].get("role") == "tool"):
        return []
    prompt = last_text(messages)
    schemas = {f["name"]: f.get("parameters") for f in functions}
    return [
        {"function": {"name": name, "arguments": synth.tool_arguments(schemas[name], prompt)}}
        for name in synth.pick_tools(list(schemas), None, prompt)
    ]


def answer(req: FakeRequest, body: dict, calls: list[dict]) -> tuple[list[str], str, dict]:
    """(reply pieces, done_reason, token counts) honouring options.num_predict and stop.
    With tool calls there is no text, and Ollama still says "stop"."""
    messages = body["messages"]
    options = body.get("options") or {}
    if calls:
        pieces, reason, completion = [""], "stop", json.dumps([c["function"] for c in calls])
    else:
        reply = generate(reply_text(req, body), options.get("stop"), options.get("num_predict"))
        pieces, reason = reply.pieces, "length" if reply.truncated else "stop"
        completion = "".join(pieces)
    prompt = "\n".join(text_of(m.get("content")) for m in messages)
    prompt_count, eval_count, _total = req.counts(count_tokens(prompt), count_tokens(completion))
    counts = {
        "total_duration": 174560334,
        "load_duration": 101397084,
        "prompt_eval_count": prompt_count,
        "prompt_eval_duration": 13074791,
        "eval_count": eval_count,
        "eval_duration": 52479709,
    }
    return pieces, reason, counts


@checked(_check)
async def chat(req: FakeRequest) -> web.StreamResponse:
    body = req.body
    calls = tool_calls(body)
    pieces, reason, counts = answer(req, body, calls)
    model = body["model"]
    extra = {"tool_calls": calls} if calls else {}
    if body.get("stream") is False:
        message = {"role": "assistant", "content": "".join(pieces), **extra}
        return await req.json(
            {"model": model, "created_at": _now(), "message": message, "done": True, "done_reason": reason, **counts}
        )
    # Tool calls arrive whole, in one line of their own, before the final line.
    lines = [
        {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": piece}, "done": False}
        for piece in ([] if calls else pieces)
    ]
    if calls:
        message = {"role": "assistant", "content": "", **extra}
        lines.append({"model": model, "created_at": _now(), "message": message, "done": False})
    final = {"role": "assistant", "content": ""}
    lines.append({"model": model, "created_at": _now(), "message": final, "done": True, "done_reason": reason})
    lines[-1].update(counts)
    return await req.ndjson(lines)


def _embed_check(req: FakeRequest) -> web.Response | None:
    body = req.body
    if not isinstance(body, dict):
        return req.error(400, "invalid request body")
    if not body.get("model"):
        return req.error(400, "model is required")
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        return req.error(400, "invalid input type")
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        return req.error(400, "dimensions must be a positive integer")
    return None


@checked(_embed_check)
async def embed(req: FakeRequest) -> web.StreamResponse:
    body = req.body
    inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
    vectors = [synth.embedding(text, body.get("dimensions")) for text in inputs]
    tokens, _completion, _total = req.counts(sum(count_tokens(t) for t in inputs), 0)
    answer = {"model": body["model"], "embeddings": vectors, "total_duration": 14143917, "load_duration": 1019500}
    return await req.json({**answer, "prompt_eval_count": tokens})


async def tags(req: FakeRequest) -> web.StreamResponse:
    details = {"format": "gguf", "family": "llama", "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}
    models = [
        {
            "name": name,
            "model": name,
            "modified_at": "2025-10-03T23:34:03.409490317-07:00",
            "size": 2019393189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": details,
        }
        for name in MODELS
    ]
    return await req.json({"models": models})


ROUTES = [
    Route("POST", "/api/chat", chat, kind="chat"),
    Route("POST", "/api/embed", embed, kind="embeddings"),
    Route("GET", "/api/tags", tags, kind="probe"),
]
