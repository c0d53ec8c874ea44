"""The Anthropic-compatible wire format of our /v1 surface, `POST /v1/messages`, so the
official `anthropic` SDKs work unchanged through the gateway, routed to any provider type.
Pure functions, no I/O. This module parses a Messages request into the shared
CompletionRequest (providers/adapters/base.py and chat.py); messages_blocks.py parses its
content blocks, and messages_reply.py renders the Message, the stream and the errors.

- Request: https://docs.anthropic.com/en/api/messages, field by field as the official
  OpenAPI description has them (../shared/provider-specs/served/anthropic.json:
  CreateMessageParams, Tool, ToolChoice).

Choices. Hand-written validation like chat.py (its helpers are reused): everything a client
can get wrong is a ValidationFailed naming `param`; a field we cannot honour is refused by
name rather than dropped, unless ignoring it cannot change the answer.

- `model` means what it means on /v1/chat/completions (a provider name, a model route, a
  model name or "auto"; routing/pool.py resolves it) and goes to RoutingOptions.model.
- `max_tokens` is required and at least 1: 0 (only warm Anthropic's prompt cache) means
  nothing to other providers.
- `temperature` (Anthropic's 0..1) and `top_p` pass through; each adapter sends them in its
  provider's own parameter.
- `top_k` is refused: the shared request has no place for it, OpenAI-style APIs have no
  such knob, and newer Claude models refuse it themselves (the spec's deprecation note).
- `cache_control` and a tool's `eager_input_streaming` are checked and ignored: they change
  cost, latency or streaming granularity, never the answer. `service_tier` "auto" (the
  default) is accepted; "standard_only" is refused (we cannot promise a provider's capacity).
- `thinking` is refused unless {"type": "disabled"}; `output_config.format` (json_schema)
  becomes response_format json_schema, `output_config.effort` is refused.
- Refused by name: `container`, `inference_geo`, server tools (a tool with a `type` such
  as web_search_20250305).
"""

from __future__ import annotations

import re
from typing import Any

from providers.adapters.base import CompletionRequest, ResponseFormat, Tool, ToolChoice
from routing.selection import RoutingOptions
from routing.v1.chat import MAX_STOP, parse_weights
from routing.v1.chat import fail as _fail
from routing.v1.chat import flag as _flag
from routing.v1.chat import integer as _integer
from routing.v1.chat import number as _number
from routing.v1.messages_blocks import boolean as _bool
from routing.v1.messages_blocks import check_cache_control as _cache_control
from routing.v1.messages_blocks import parse_conversation, parse_system
from routing.v1.messages_blocks import strict_object as _object

# The answer side, re-exported for routing/v1/app.py and the tests.
from routing.v1.messages_reply import PING_EVENT, MessageStream, error_body, error_event, message_body

__all__ = [
    "PING_EVENT",
    "MessageStream",
    "error_body",
    "error_event",
    "message_body",
    "parse_messages_request",
]

MAX_TOKENS = 1_000_000
MAX_USER_ID = 512  # metadata.user_id, as the spec limits it
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")  # Tool.name
# CreateMessageParams' fields we handle (honour, check and ignore, or refuse with a reason
# below), and our routing extensions. Any other field is refused by name.
KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature", "top_p",
        "top_k", "tools", "tool_choice", "metadata", "thinking", "output_config", "service_tier",
        "cache_control", "container", "inference_geo", "weights", "disable_failover",
    }
)  # fmt: skip
REFUSED_FIELDS = {
    "top_k": "is not supported: most providers have no top-k sampling (and newer Claude models refuse it); omit it",
    "container": "is not supported: code execution containers exist only on Anthropic's own servers",
    "inference_geo": "is not supported: the gateway cannot pin the region of whichever provider answers",
}
TOOL_FIELDS = frozenset(
    {
        "type", "name", "description", "input_schema", "cache_control", "strict", "eager_input_streaming",
        "allowed_callers", "defer_loading", "input_examples",
    }
)  # fmt: skip


def parse_tools(raw: Any) -> tuple[Tool, ...] | None:
    """Custom tools ({name, description, input_schema}); server tools are refused by name."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _fail("tools", "must be a list of tools")
    tools: list[Tool] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        param = f"tools[{i}]"
        if not isinstance(item, dict):
            raise _fail(param, "must be an object with name and input_schema")
        kind = item.get("type")
        if isinstance(kind, str) and kind != "custom":
            raise _fail(
                f"{param}.type",
                f"'{kind}' is an Anthropic server tool, which this gateway does not run; "
                "only custom tools (name, description, input_schema) are supported",
            )
        if kind is not None and kind != "custom":
            raise _fail(f"{param}.type", "must be 'custom' or omitted")
        _object(item, param, TOOL_FIELDS)
        name, description, schema = item.get("name"), item.get("description"), item.get("input_schema")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise _fail(f"{param}.name", "must be 1 to 128 letters, digits, '_' or '-'")
        if name in names:
            raise _fail(f"{param}.name", f"'{name}' is defined twice; tool names must be unique")
        names.add(name)
        if description is not None and not isinstance(description, str):
            raise _fail(f"{param}.description", "must be a string")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise _fail(f"{param}.input_schema", "must be a JSON Schema object with type 'object'")
        strict = item.get("strict")
        _bool(strict, f"{param}.strict")
        # Checked and ignored: it only changes how finely the input streams.
        _bool(item.get("eager_input_streaming"), f"{param}.eager_input_streaming")
        if item.get("allowed_callers") not in (None, ["direct"]):
            raise _fail(f"{param}.allowed_callers", "only ['direct'] is supported (no programmatic tool calling)")
        if _bool(item.get("defer_loading"), f"{param}.defer_loading"):
            raise _fail(f"{param}.defer_loading", "is not supported (no tool search here)")
        if item.get("input_examples"):
            raise _fail(f"{param}.input_examples", "is not supported by this gateway")
        _cache_control(item.get("cache_control"), f"{param}.cache_control")
        tools.append(Tool(name, description, schema, strict))
    return tuple(tools) or None


def parse_tool_choice(raw: Any, tools: tuple[Tool, ...] | None) -> tuple[ToolChoice | None, bool | None]:
    """(tool choice, parallel_tool_calls): auto, any -> required, tool -> function with its
    name, none; `disable_parallel_tool_use` -> parallel_tool_calls False. Without tools,
    auto and none change nothing and are dropped; any and tool are refused."""
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise _fail("tool_choice", "must be an object with a type: auto, any, tool or none")
    kind = raw.get("type")
    allowed = {"auto": {"type", "disable_parallel_tool_use"}, "any": {"type", "disable_parallel_tool_use"},
               "tool": {"type", "name", "disable_parallel_tool_use"}, "none": {"type"}}.get(kind)  # fmt: skip
    if allowed is None:
        raise _fail("tool_choice.type", "must be auto, any, tool or none")
    _object(raw, "tool_choice", allowed)
    disable = _bool(raw.get("disable_parallel_tool_use"), "tool_choice.disable_parallel_tool_use")
    if not tools:
        if kind in ("auto", "none"):
            return None, None
        raise _fail("tool_choice", f"type '{kind}' needs `tools`")
    if kind == "tool":
        name = raw.get("name")
        if not isinstance(name, str) or name not in {tool.name for tool in tools}:
            raise _fail("tool_choice.name", "must be the name of one of the `tools`")
        choice = ToolChoice("function", name)
    else:
        choice = ToolChoice({"auto": "auto", "any": "required", "none": "none"}[kind])
    return choice, (False if disable else None)


def parse_output_config(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    _object(raw, "output_config", {"format", "effort"})
    if raw.get("effort") is not None:
        raise _fail("output_config.effort", "is not supported by this gateway")
    fmt = raw.get("format")
    if fmt is None:
        return None
    _object(fmt, "output_config.format", {"type", "schema"})
    if fmt.get("type") != "json_schema":
        raise _fail("output_config.format.type", "must be json_schema")
    if not isinstance(fmt.get("schema"), dict):
        raise _fail("output_config.format.schema", "must be a JSON Schema object")
    return ResponseFormat("json_schema", schema=fmt["schema"])


def _user(raw: Any) -> str | None:
    if raw is None:
        return None
    _object(raw, "metadata", {"user_id"})
    user = raw.get("user_id")
    if user is not None and (not isinstance(user, str) or len(user) > MAX_USER_ID):
        raise _fail("metadata.user_id", f"must be a string of at most {MAX_USER_ID} characters")
    return user


def parse_stop_sequences(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list) and len(value) <= MAX_STOP and all(isinstance(s, str) and s for s in value):
        return value or None
    raise _fail("stop_sequences", f"must be a list of at most {MAX_STOP} non-empty strings")


def parse_messages_request(data: dict) -> tuple[CompletionRequest, str, RoutingOptions]:
    """(request, the `model` asked for, routing options) from a Messages request body (a
    dict: wire.parse_body reads the bytes). Resolving `model` is the router's job
    (routing/pool.py). Raises ValidationFailed naming the bad `param`."""
    unknown = sorted(set(data) - KNOWN_FIELDS)
    if unknown:
        raise _fail(unknown[0], "is not supported by this gateway")
    for name, reason in REFUSED_FIELDS.items():
        if data.get(name) is not None:
            raise _fail(name, reason)
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _fail("model", "is required: a model, a model route, a provider name, or 'auto'")
    if "max_tokens" not in data or data["max_tokens"] is None:
        raise _fail("max_tokens", "is required")
    if type(data["max_tokens"]) is int and data["max_tokens"] == 0:
        raise _fail("max_tokens", "must be at least 1 (0, to only warm a prompt cache, is not supported)")
    max_tokens = _integer(data, "max_tokens", 1, MAX_TOKENS)
    messages = parse_conversation(data.get("messages"))
    thinking = data.get("thinking")
    if thinking is not None and thinking != {"type": "disabled"}:
        raise _fail("thinking", "extended thinking is not supported by this gateway; omit it or disable it")
    tier = data.get("service_tier")
    if tier is not None and tier != "auto":
        if tier == "standard_only":
            raise _fail("service_tier", "'standard_only' is not supported: no promise of a provider's capacity")
        raise _fail("service_tier", "must be auto or standard_only")
    _cache_control(data.get("cache_control"), "cache_control")
    tools = parse_tools(data.get("tools"))
    tool_choice, parallel = parse_tool_choice(data.get("tool_choice"), tools)
    request = CompletionRequest(
        messages=messages,
        system=parse_system(data.get("system")),
        max_tokens=max_tokens,
        temperature=_number(data, "temperature", 0, 1),
        top_p=_number(data, "top_p", 0, 1),
        stop=parse_stop_sequences(data.get("stop_sequences")),
        stream=_flag(data, "stream"),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        response_format=parse_output_config(data.get("output_config")),
        user=_user(data.get("metadata")),
    )
    model = model.strip()
    routing = RoutingOptions(
        weights=parse_weights(data.get("weights")),
        disable_failover=_flag(data, "disable_failover"),
        model=model,
    )
    return request, model, routing
