"""The OpenAI-compatible wire format of our /v1 surface: read the body (the Chat
Completions request itself is parsed in routing/v1/chat.py), render the response
with its tool calls, stream chunks (tool-call deltas included) and errors as the
official clients expect them.

- Request and response: https://platform.openai.com/docs/api-reference/chat/create
- Stream chunks: https://platform.openai.com/docs/api-reference/chat-streaming (each
  `data:` line is a `chat.completion.chunk`; the stream ends with `data: [DONE]`; with
  `stream_options.include_usage` a last chunk with empty `choices` carries the usage)
- Errors: https://platform.openai.com/docs/guides/error-codes. Our envelope keeps its
  `code`, `message` and `details` and adds OpenAI's `type` and `param`. openai-python
  raises APIStatusError subclasses by HTTP status, and inside a stream raises APIError
  for any `data:` payload holding an `error` key (openai/_streaming.py).

Hand-written validation rather than a DRF serializer: this is the hot path, and the
checks are few. Everything a client can get wrong is a ValidationFailed naming `param`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from axonflow_site.errors import AxonFlowError, ValidationFailed
from providers.adapters.base import Chunk, ToolCall
from routing.api.parsers import MAX_JSON_DEPTH, nested_too_deeply
from routing.router import RouteResult
from routing.v1.chat import parse_chat  # noqa: F401 (the request side; the face calls wire.parse_chat)

ERROR_TYPES = {
    "validation_error": "invalid_request_error",
    "payload_too_large": "invalid_request_error",
    "invalid_config": "invalid_request_error",
    "unauthorized": "authentication_error",
    "forbidden": "permission_error",
    "license_required": "permission_error",
    "provider_not_found": "invalid_request_error",
    "not_found": "invalid_request_error",
    "method_not_allowed": "invalid_request_error",
    "rate_limited": "rate_limit_error",
    "upstream_error": "api_error",
    "no_healthy_provider": "api_error",
}


def parse_body(raw: bytes) -> dict:
    if nested_too_deeply(raw):
        raise ValidationFailed(f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.", {"param": None})
    try:
        data = orjson.loads(raw)  # a third of json.loads's time; refuses NaN and lone surrogates too
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("The request body is not valid JSON.", {"param": None}) from None
    except RecursionError:
        raise ValidationFailed("The request body is nested too deeply.", {"param": None}) from None
    if not isinstance(data, dict):
        raise ValidationFailed("The request body must be a JSON object.", {"param": None})
    return data


# --- rendering -----------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as json.dumps(separators=(",", ":"), ensure_ascii=False) gives."""
    return orjson.dumps(obj)


def error_body(error: AxonFlowError) -> bytes:
    body = error.envelope()
    body["error"]["type"] = ERROR_TYPES.get(error.code, "api_error")
    body["error"]["param"] = error.details.get("param") if isinstance(error.details, dict) else None
    return dumps(body)


def usage_dict(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def tool_calls_json(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}} for c in calls
    ]


def completion_body(result: RouteResult, request_id: str) -> bytes:
    response = result.response
    message: dict[str, Any] = {"role": "assistant", "content": response.content, "refusal": None}
    if response.tool_calls:
        message["tool_calls"] = tool_calls_json(response.tool_calls)
        message["content"] = response.content or None
    return dumps(
        {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": response.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": response.finish_reason or "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage_dict(response.usage.prompt_tokens, response.usage.completion_tokens),
            "system_fingerprint": None,
        }
    )


def _tool_call_deltas(chunk: Chunk) -> list[dict[str, Any]]:
    """OpenAI's streamed tool-call pieces: the first of a call carries its id, type and
    name; later ones only the index and an arguments fragment (openai-python's stream
    helpers assemble them by index)."""
    deltas = []
    for d in chunk.tool_calls or ():
        if d.id is not None or d.name is not None:
            deltas.append(
                {"index": d.index, "id": d.id, "type": "function", "function": {"name": d.name, "arguments": d.arguments}}
            )
        else:
            deltas.append({"index": d.index, "function": {"arguments": d.arguments}})
    return deltas


def chunk_event(request_id: str, created: int, model: str, chunk: Chunk, first: bool) -> bytes:
    delta: dict[str, Any] = {"role": "assistant"} if first else {}
    if chunk.delta or (first and not chunk.tool_calls):
        delta["content"] = chunk.delta
    elif first:
        delta["content"] = None  # as OpenAI starts a tool-call-only answer
    if chunk.tool_calls:
        delta["tool_calls"] = _tool_call_deltas(chunk)
    elif not delta and not chunk.finish_reason:
        delta["content"] = ""
    body = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": chunk.model or model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": chunk.finish_reason, "logprobs": None}],
    }
    return b"data: " + dumps(body) + b"\n\n"


def usage_event(request_id: str, created: int, model: str, prompt: int, completion: int) -> bytes:
    body = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_dict(prompt, completion),
    }
    return b"data: " + dumps(body) + b"\n\n"


def error_event(error: AxonFlowError) -> bytes:
    return b"data: " + error_body(error) + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"


def models_body(names: list[tuple[str, str]]) -> bytes:
    """The model list: every (name, owner) a client may ask for (routing/pool.names)."""
    created = int(time.time())
    data = [{"id": name, "object": "model", "created": created, "owned_by": owner} for name, owner in names]
    return dumps({"object": "list", "data": data})
