"""Ollama wire format for the fake upstream: `POST /api/chat` (JSON with `"stream": false`,
NDJSON otherwise, Ollama's default) and `GET /api/tags`, as
https://docs.ollama.com/api/chat, https://docs.ollama.com/api/streaming and
https://docs.ollama.com/api/errors describe them. Ollama checks no key, so neither
does this module.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from aiohttp import web

from providers.fake_upstream.core import FakeRequest, Route, checked, count_tokens, generate, last_text, text_of

BASE_PATH = ""
MODELS = ("llama3.2", "qwen3:8b", "gemma3")
ROLES = {"system", "user", "assistant", "tool"}


def error_body(status: int, message: str) -> dict:
    return {"error": message}


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
    if "options" in body and not isinstance(body["options"], dict):
        return req.error(400, "options must be an object")
    return None


def answer(req: FakeRequest, body: dict) -> tuple[list[str], str, dict]:
    """(reply pieces, done_reason, token counts) honouring options.num_predict and stop."""
    messages = body["messages"]
    options = body.get("options") or {}
    reply = generate(req.reply_for(last_text(messages)), options.get("stop"), options.get("num_predict"))
    pieces, reason = reply.pieces, "length" if reply.truncated else "stop"
    prompt = "\n".join(text_of(m.get("content")) for m in messages)
    prompt_count, eval_count, _total = req.counts(count_tokens(prompt), count_tokens("".join(pieces)))
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
    pieces, reason, counts = answer(req, body)
    model = body["model"]
    if body.get("stream") is False:
        message = {"role": "assistant", "content": "".join(pieces)}
        return await req.json(
            {"model": model, "created_at": _now(), "message": message, "done": True, "done_reason": reason, **counts}
        )
    lines = [
        {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": piece}, "done": False}
        for piece in pieces
    ]
    final = {"role": "assistant", "content": ""}
    lines.append({"model": model, "created_at": _now(), "message": final, "done": True, "done_reason": reason})
    lines[-1].update(counts)
    return await req.ndjson(lines)


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
    Route("GET", "/api/tags", tags, kind="probe"),
]
