"""The Chat Completions request of our OpenAI-compatible /v1, parsed into the shared
representation (providers/adapters/chat.py) with nothing dropped: content parts,
tools and tool calls, tool results, structured output and sampling parameters.

- Request: https://platform.openai.com/docs/api-reference/chat/create
- Tools: https://platform.openai.com/docs/guides/function-calling
- Images: https://platform.openai.com/docs/guides/images-vision (`image_url.url` is an
  https URL or a base64 data URL)
- Structured output: https://platform.openai.com/docs/guides/structured-outputs

Hand-written validation (this is the hot path): everything a client can get wrong is a
ValidationFailed naming `param`, as OpenAI's errors do; a field we do not support is
refused by name rather than dropped.
"""

from __future__ import annotations

import math
import re
from typing import Any

from axonflow_site.errors import ValidationFailed
from providers.adapters.base import (
    CompletionRequest,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from providers.adapters.chat import valid_data_url
from routing.selection import RoutingOptions

MAX_MESSAGES = 2048
MAX_STOP = 16
MAX_TOOLS = 128
MAX_LOGIT_BIAS = 300
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TEXT_JOIN = "\n\n"  # text parts become one text with a blank line between (chat.py)
# Accepted and honoured, or harmless (`n` may only be 1; `store` and `metadata` concern
# OpenAI's own dashboard). Anything else is refused by name rather than dropped.
KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
        "stream", "stream_options", "n", "user", "weights", "disable_failover", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "seed", "presence_penalty", "frequency_penalty",
        "logit_bias", "store", "metadata",
    }
)  # fmt: skip
PLAIN = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
ROLE_FIELDS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "refusal"},
    "tool": {"role", "content", "tool_call_id"},
}


def fail(param: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{param}: {message}", {"field": param, "param": param})


def number(data: dict, name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(name, "must be a number")
    if not low <= value <= high:
        raise fail(name, f"must be between {low:g} and {high:g}")
    return float(value)


def integer(data: dict, name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(name, "must be an integer")
    if not low <= value <= high:
        raise fail(name, f"must be between {low} and {high}")
    return value


def flag(data: dict, name: str) -> bool:
    value = data.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise fail(name, "must be true or false")
    return value


def _string(value: Any, param: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise fail(param, "must be a string")
    return value


# --- messages ------------------------------------------------------------------------------


def _image(part: dict, param: str) -> ImagePart:
    image = part.get("image_url")
    if isinstance(image, str):  # some clients send the URL itself
        image = {"url": image}
    if not isinstance(image, dict) or not isinstance(image.get("url"), str) or set(image) - {"url", "detail"}:
        raise fail(f"{param}.image_url", "must be an object with url and an optional detail")
    url, detail = image["url"], image.get("detail")
    if detail is not None and detail not in ("auto", "low", "high"):
        raise fail(f"{param}.image_url.detail", "must be auto, low or high")
    if url.startswith("data:"):
        if not valid_data_url(url):
            raise fail(f"{param}.image_url.url", "must be a base64 data URL of an image (data:image/png;base64,…)")
    elif not url.startswith("https://") or len(url) > 8192:
        raise fail(f"{param}.image_url.url", "must be an https URL or a base64 data URL")
    return ImagePart(url, detail)


def _content(value: Any, param: str, *, images: bool) -> tuple[str, tuple | None]:
    """(text, parts or None): parts are kept only when there is an image among them."""
    if isinstance(value, str):
        return value, None
    if not isinstance(value, list):
        raise fail(param, "must be a string or a list of content parts")
    parts: list = []
    for i, part in enumerate(value):
        where = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str) and set(part) <= {"type", "text"}:
            parts.append(TextPart(part["text"]))
        elif kind == "image_url" and images and set(part) <= {"type", "image_url"}:
            parts.append(_image(part, where))
        elif kind == "refusal" and not images and isinstance(part.get("refusal"), str):
            parts.append(TextPart(part["refusal"]))
        elif kind in ("input_audio", "file", "image_url"):
            raise fail(where, f"{kind} content parts are not supported here")
        else:
            raise fail(where, "must be a text part" + (" or an image_url part" if images else ""))
    text = TEXT_JOIN.join(p.text for p in parts if isinstance(p, TextPart))
    has_image = any(isinstance(p, ImagePart) for p in parts)
    return text, (tuple(parts) if has_image else None)


def _tool_calls(value: Any, param: str) -> tuple[ToolCall, ...]:
    if not isinstance(value, list) or not value:
        raise fail(param, "must be a non-empty list")
    calls = []
    for i, call in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise fail(where, "must be a function tool call")
        function = call.get("function")
        if not isinstance(call.get("id"), str) or not call["id"] or not isinstance(function, dict):
            raise fail(where, "needs an id and a function")
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(name, str) or not name or not isinstance(arguments, str):
            raise fail(f"{where}.function", "needs a name and arguments (a JSON string)")
        calls.append(ToolCall(call["id"], name, arguments))
    return tuple(calls)


def _message(item: Any, i: int) -> Message:
    param = f"messages[{i}]"
    if not isinstance(item, dict):
        raise fail(param, "must be an object with role and content")
    role = item.get("role")
    if role not in ROLE_FIELDS:
        raise fail(f"{param}.role", "must be system, developer, user, assistant or tool")
    extra = sorted(set(item) - ROLE_FIELDS[role])
    if extra:
        raise fail(f"{param}.{extra[0]}", "is not supported on a " + role + " message")
    name = _string(item.get("name"), f"{param}.name", optional=True)
    if role == "assistant":
        calls = _tool_calls(item["tool_calls"], f"{param}.tool_calls") if item.get("tool_calls") is not None else None
        if item.get("content") is None:
            if calls is None:
                raise fail(f"{param}.content", "is required unless the message has tool_calls")
            return Message("assistant", "", tool_calls=calls, name=name)
        text, _ = _content(item["content"], f"{param}.content", images=False)
        return Message("assistant", text, tool_calls=calls, name=name)
    if role == "tool":
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise fail(f"{param}.tool_call_id", "is required on a tool message")
        text, _ = _content(item.get("content"), f"{param}.content", images=False)
        return Message("tool", text, tool_call_id=call_id)
    text, parts = _content(item.get("content"), f"{param}.content", images=role == "user")
    return Message("system" if role == "developer" else role, text, parts=parts, name=name)


def parse_messages(raw: Any) -> tuple[str | None, list[Message]]:
    """(joined system prompt, the other messages in order). Each tool message must
    answer a call of an earlier assistant message (every provider refuses otherwise)."""
    if not isinstance(raw, list) or not raw:
        raise fail("messages", "must be a non-empty list")
    if len(raw) > MAX_MESSAGES:
        raise fail("messages", f"at most {MAX_MESSAGES} messages")
    system: list[str] = []
    messages: list[Message] = []
    called: set[str] = set()
    for i, item in enumerate(raw):
        # The common message, {"role": "user", "content": "text"}, without the general checks.
        if type(item) is dict and len(item) == 2 and type(item.get("content")) is str and item.get("role") in PLAIN:
            message = Message(PLAIN[item["role"]], item["content"])
        else:
            message = _message(item, i)
        if message.role == "system":
            system.append(message.content)
            continue
        if message.tool_calls:
            called.update(call.id for call in message.tool_calls)
        if message.role == "tool" and message.tool_call_id not in called:
            raise fail(f"messages[{i}].tool_call_id", "does not answer a tool call of an earlier assistant message")
        messages.append(message)
    if not messages:
        raise fail("messages", "needs at least one user or assistant message")
    return (TEXT_JOIN.join(system) if system else None), messages


# --- tools and output ----------------------------------------------------------------------


def parse_tools(raw: Any) -> tuple[Tool, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
        raise fail("tools", f"must be a list of at most {MAX_TOOLS} tools")
    tools, names = [], set()
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or set(tool) - {"type", "function"}:
            raise fail(where, "must be {type: function, function: {...}}; other tool types are not supported")
        function = tool.get("function")
        if not isinstance(function, dict) or set(function) - {"name", "description", "parameters", "strict"}:
            raise fail(f"{where}.function", "must be an object with name, description, parameters and strict")
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise fail(f"{where}.function.name", "must be 1-64 letters, digits, '_' or '-'")
        if name in names:
            raise fail(f"{where}.function.name", f"'{name}' is defined twice")
        names.add(name)
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise fail(f"{where}.function.parameters", "must be a JSON Schema object")
        strict = function.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise fail(f"{where}.function.strict", "must be true or false")
        description = _string(function.get("description"), f"{where}.function.description", optional=True)
        tools.append(Tool(name, description, parameters, strict))
    return tuple(tools) or None


def parse_tool_choice(raw: Any, tools: tuple[Tool, ...] | None) -> ToolChoice | None:
    if raw is None:
        return None
    if raw in ("auto", "none", "required"):
        choice = ToolChoice(raw)
    elif isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("function"), dict):
        name = raw["function"].get("name")
        if not isinstance(name, str) or not any(t.name == name for t in tools or ()):
            raise fail("tool_choice", "must name one of the tools")
        choice = ToolChoice("function", name)
    else:
        raise fail("tool_choice", "must be none, auto, required or {type: function, function: {name}}")
    if choice.mode in ("required", "function") and not tools:
        raise fail("tool_choice", f"'{choice.mode}' needs tools")
    return choice


def parse_response_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text" and set(raw) == {"type"}:
        return None
    if kind == "json_object" and set(raw) == {"type"}:
        return ResponseFormat("json_object")
    if kind == "json_schema" and set(raw) <= {"type", "json_schema"}:
        spec = raw.get("json_schema")
        if not isinstance(spec, dict) or set(spec) - {"name", "schema", "strict", "description"}:
            raise fail("response_format.json_schema", "must be an object with name, schema, strict, description")
        name, schema, strict = spec.get("name"), spec.get("schema"), spec.get("strict")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise fail("response_format.json_schema.name", "must be 1-64 letters, digits, '_' or '-'")
        if schema is not None and not isinstance(schema, dict):
            raise fail("response_format.json_schema.schema", "must be a JSON Schema object")
        if strict is not None and not isinstance(strict, bool):
            raise fail("response_format.json_schema.strict", "must be true or false")
        description = _string(spec.get("description"), "response_format.json_schema.description", optional=True)
        return ResponseFormat("json_schema", schema, name, strict, description)
    raise fail("response_format", "must be {type: text}, {type: json_object} or {type: json_schema, json_schema}")


def parse_logit_bias(raw: Any) -> dict[str, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) > MAX_LOGIT_BIAS:
        raise fail("logit_bias", f"must be an object of at most {MAX_LOGIT_BIAS} token ids to numbers")
    for token, bias in raw.items():
        if not token.isdigit():
            raise fail("logit_bias", f"'{token[:20]}' is not a token id")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
            raise fail("logit_bias", f"the bias of token {token} must be a number from -100 to 100")
    return dict(raw) or None


def parse_stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and len(value) <= MAX_STOP and all(isinstance(s, str) for s in value):
        return value or None
    raise fail("stop", f"must be a string or a list of at most {MAX_STOP} strings")


def parse_weights(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail("weights", "must be an object of provider name to number")
    for name, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise fail("weights", f"weight of '{name}' must be a number")
        if not 0 <= weight <= 100:
            raise fail("weights", f"weight of '{name}' must be between 0 and 100")
    return {name: float(weight) for name, weight in value.items()}


BARE_FIELDS = frozenset({"model", "messages", "stream"})


def _plain(data: dict) -> bool:
    """Whether the body holds only the plain-text fields (the hot path's fast check)."""
    return not ("tools" in data or "tool_choice" in data or "response_format" in data or "logit_bias" in data)


def parse_chat(data: dict) -> tuple[CompletionRequest, RoutingOptions, str, bool]:
    """(request, routing options, the `model` asked for, include_usage) from a Chat
    Completions body. Resolving `model` is the router's job (routing/pool.py)."""
    if not data.keys() <= KNOWN_FIELDS:
        raise fail(sorted(set(data) - KNOWN_FIELDS)[0], "is not supported by this gateway")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise fail("model", "is required: a model, a model route, a provider name, or 'auto'")
    system, messages = parse_messages(data.get("messages"))
    if data.keys() <= BARE_FIELDS:  # the commonest body: nothing else to read or check
        model = model.strip()
        request = CompletionRequest(messages=messages, system=system, stream=flag(data, "stream"))
        return request, RoutingOptions(model=model), model, False
    integer(data, "n", 1, 1)
    stream = flag(data, "stream")
    options = data.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise fail("stream_options", "only include_usage is supported")
    include_usage = flag(options or {}, "include_usage")
    user = _string(data.get("user"), "user", optional=True)
    if data.get("metadata") is not None and not isinstance(data["metadata"], dict):
        raise fail("metadata", "must be an object")
    flag(data, "store")  # accepted (it concerns OpenAI's own dashboard), but typed
    max_tokens = integer(data, "max_completion_tokens", 1, 1_000_000)
    if max_tokens is None:
        max_tokens = integer(data, "max_tokens", 1, 1_000_000)
    request = CompletionRequest(
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=number(data, "temperature", 0, 2),
        top_p=number(data, "top_p", 0, 1),
        stop=parse_stop(data.get("stop")),
        stream=stream,
        seed=integer(data, "seed", -(2**63), 2**63 - 1),
        presence_penalty=number(data, "presence_penalty", -2, 2),
        frequency_penalty=number(data, "frequency_penalty", -2, 2),
        user=user,
    )
    if data.get("parallel_tool_calls") is not None:
        request.parallel_tool_calls = flag(data, "parallel_tool_calls")
    if not _plain(data):
        request.tools = parse_tools(data.get("tools"))
        request.tool_choice = parse_tool_choice(data.get("tool_choice"), request.tools)
        request.response_format = parse_response_format(data.get("response_format"))
        request.logit_bias = parse_logit_bias(data.get("logit_bias"))
    routing = RoutingOptions(
        weights=parse_weights(data.get("weights")),
        disable_failover=flag(data, "disable_failover"),
        model=model.strip(),
    )
    return request, routing, model.strip(), include_usage

