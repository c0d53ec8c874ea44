"""The OpenAI-compatible wire format of our /v1 surface: parse a Chat Completions request
body into a CompletionRequest, render the response, stream chunks and errors as the
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

import json
import math
import time
from typing import Any

from axonflow_site.errors import AxonFlowError, ValidationFailed
from providers.adapters.base import Chunk, CompletionRequest, Message
from routing.api.parsers import MAX_JSON_DEPTH, nested_too_deeply
from routing.router import RouteResult
from routing.selection import RoutingOptions

AUTO = "auto"
MAX_MESSAGES = 2048
MAX_STOP = 16
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Accepted and honoured, or harmless to ignore (`user` is an end-user id for abuse
# monitoring; `n` may only be 1). Anything else is refused by name rather than dropped.
KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
        "stream", "stream_options", "n", "user", "weights", "disable_failover",
    }
)  # fmt: skip
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


def _fail(param: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{param}: {message}", {"field": param, "param": param})


def _number(data: dict, name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(name, "must be a number")
    if not low <= value <= high:
        raise _fail(name, f"must be between {low:g} and {high:g}")
    return float(value)


def _integer(data: dict, name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, "must be an integer")
    if not low <= value <= high:
        raise _fail(name, f"must be between {low} and {high}")
    return value


def _flag(data: dict, name: str) -> bool:
    value = data.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(name, "must be true or false")
    return value


def _content(index: int, content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text is supported
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _fail(f"messages[{index}].content", "only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise _fail(f"messages[{index}].content", "must be a string or a list of text parts")


def parse_messages(raw: Any) -> tuple[str | None, list[Message]]:
    """(joined system prompt, the other messages in order)."""
    if not isinstance(raw, list) or not raw:
        raise _fail("messages", "must be a non-empty list")
    if len(raw) > MAX_MESSAGES:
        raise _fail("messages", f"at most {MAX_MESSAGES} messages")
    system: list[str] = []
    messages: list[Message] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _fail(f"messages[{i}]", "must be an object with role and content")
        extra = set(item) - {"role", "content", "name"}
        if extra:
            raise _fail(f"messages[{i}]", f"unsupported field(s): {', '.join(sorted(extra))}")
        role = ROLES.get(item.get("role")) if isinstance(item.get("role"), str) else None
        if role is None:
            raise _fail(f"messages[{i}].role", "must be system, developer, user or assistant")
        text = _content(i, item.get("content"))
        if role == "system":
            system.append(text)
        else:
            messages.append(Message(role, text))
    if not messages:
        raise _fail("messages", "needs at least one user or assistant message")
    return ("\n\n".join(system) if system else None), messages


def parse_stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and len(value) <= MAX_STOP and all(isinstance(s, str) for s in value):
        return value or None
    raise _fail("stop", f"must be a string or a list of at most {MAX_STOP} strings")


def parse_weights(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail("weights", "must be an object of provider name to number")
    for name, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise _fail("weights", f"weight of '{name}' must be a number")
        if not 0 <= weight <= 100:
            raise _fail("weights", f"weight of '{name}' must be between 0 and 100")
    return {name: float(weight) for name, weight in value.items()}


def parse_body(raw: bytes) -> dict:
    if nested_too_deeply(raw):
        raise ValidationFailed(f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.", {"param": None})
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("The request body is not valid JSON.", {"param": None}) from None
    except RecursionError:
        raise ValidationFailed("The request body is nested too deeply.", {"param": None}) from None
    if not isinstance(data, dict):
        raise ValidationFailed("The request body must be a JSON object.", {"param": None})
    return data


def parse_chat(data: dict) -> tuple[CompletionRequest, RoutingOptions, str, bool]:
    """(request, routing options, the `model` asked for, include_usage) from a Chat
    Completions body. `model` is a provider name or "auto"; resolving it is the caller's job."""
    unknown = sorted(set(data) - KNOWN_FIELDS)
    if unknown:
        raise _fail(unknown[0], "is not supported by this gateway")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _fail("model", "is required: a provider name, or 'auto'")
    system, messages = parse_messages(data.get("messages"))
    _integer(data, "n", 1, 1)
    stream = _flag(data, "stream")
    options = data.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise _fail("stream_options", "only include_usage is supported")
    include_usage = _flag(options or {}, "include_usage")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise _fail("user", "must be a string")
    max_tokens = _integer(data, "max_completion_tokens", 1, 1_000_000)
    if max_tokens is None:
        max_tokens = _integer(data, "max_tokens", 1, 1_000_000)
    request = CompletionRequest(
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=_number(data, "temperature", 0, 2),
        top_p=_number(data, "top_p", 0, 1),
        stop=parse_stop(data.get("stop")),
        stream=stream,
    )
    model = model.strip()
    routing = RoutingOptions(
        weights=parse_weights(data.get("weights")),
        disable_failover=_flag(data, "disable_failover"),
        model=model,
    )
    return request, routing, model, include_usage


# --- rendering -----------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def error_body(error: AxonFlowError) -> bytes:
    body = error.envelope()
    body["error"]["type"] = ERROR_TYPES.get(error.code, "api_error")
    body["error"]["param"] = error.details.get("param") if isinstance(error.details, dict) else None
    return dumps(body)


def usage_dict(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(result: RouteResult, request_id: str) -> bytes:
    response = result.response
    return dumps(
        {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": response.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": response.content, "refusal": None},
                    "finish_reason": response.finish_reason or "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage_dict(response.usage.prompt_tokens, response.usage.completion_tokens),
            "system_fingerprint": None,
        }
    )


def chunk_event(request_id: str, created: int, model: str, chunk: Chunk, first: bool) -> bytes:
    delta: dict[str, Any] = {"role": "assistant", "content": chunk.delta} if first else {"content": chunk.delta}
    if chunk.finish_reason and not chunk.delta and not first:
        delta = {}
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
