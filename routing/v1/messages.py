"""The Anthropic-compatible wire format of our /v1 surface, `POST /v1/messages`, so that the
official `anthropic` SDKs work unchanged through the gateway, routed to any provider type.
Pure functions, no I/O: parse a Messages request body into the shared CompletionRequest
(providers/adapters/base.py and chat.py), render the answer as a Message, stream chunks as
Anthropic's server-sent events, and render errors in Anthropic's envelope.

- Request and response: https://docs.anthropic.com/en/api/messages, field by field as the
  official OpenAPI description has them (../shared/provider-specs/served/anthropic.json:
  CreateMessageParams, InputMessage, the Request*Block schemas, Tool, ToolChoice, Message).
- Images: https://docs.anthropic.com/en/docs/build-with-claude/vision (source `base64`
  with media_type image/jpeg|png|gif|webp, or `url`).
- Tool use: https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use
  and https://platform.claude.com/docs/en/agents-and-tools/tool-use/handle-tool-calls: each
  tool_use must be answered by a tool_result in the very next (user) turn, and the
  tool_result blocks come first in that turn (text may follow them, never precede them;
  the API answers 400 otherwise, and so does OpenAI for tool messages out of place).
- Streaming: https://docs.anthropic.com/en/docs/build-with-claude/streaming: `message_start`
  (a Message with empty content), then per content block `content_block_start`, one or more
  `content_block_delta` (`text_delta`, or `input_json_delta` with `partial_json` fragments
  for tool_use) and `content_block_stop`, block indexes sequential from 0; then
  `message_delta` (stop_reason, stop_sequence, cumulative usage) and `message_stop`. Errors
  after the 200 are an `event: error`. anthropic-python assembles the events with
  anthropic/lib/streaming/_messages.py `accumulate_event`, and raises an APIStatusError
  for an `error` event (anthropic/_streaming.py).
- Errors: https://docs.anthropic.com/en/api/errors: `{"type": "error", "error": {"type",
  "message"}, "request_id"}`; 400 invalid_request_error, 401 authentication_error, 403
  permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500
  api_error, 529 overloaded_error. The SDKs pick the exception class by HTTP status.

Choices. Hand-written validation like wire.py (its helpers are reused): everything a client
can get wrong is a ValidationFailed naming `param`; a field we cannot honour is refused by
name rather than dropped, unless ignoring it cannot change the answer.

- `model` means what it means on /v1/chat/completions (a provider name, a model route, a
  model name or "auto"; routing/pool.py resolves it) and goes to RoutingOptions.model, as
  wire.parse_chat does. The answer's `model` is the model that answered (Anthropic too
  answers with the snapshot it served); the name asked for when the provider gave none.
- `max_tokens` is required and at least 1: 0 (only warm Anthropic's prompt cache) means
  nothing to other providers.
- `temperature` (Anthropic's 0..1) and `top_p` go through unchanged: each adapter sends
  them in its provider's own parameter, as it does an OpenAI client's.
- `top_k` is refused: the shared request has no place for it, OpenAI-style APIs have no
  such knob, and newer Claude models refuse it themselves (the spec's deprecation note).
- `cache_control` (top level and on any block) is checked and ignored: prompt caching
  changes cost and latency, never the answer. So is a tool's `eager_input_streaming`
  (how finely its input streams). `service_tier` "auto" (the default) is accepted;
  "standard_only" is refused, since we cannot promise which capacity a provider uses.
- `thinking` is refused unless {"type": "disabled"}; `output_config.format` (json_schema)
  becomes response_format json_schema, `output_config.effort` is refused.
- Refused by name: `container`, `inference_geo`, server tools (a tool with a `type` such
  as web_search_20250305), document / search_result / thinking / server-tool blocks,
  images in assistant turns or inside tool_result (the shared representation carries
  images in user turns only, as OpenAI does), image `file` sources and non-https URLs.
- A tool_result becomes one Message(role="tool", tool_call_id, content text) per block;
  with `is_error` its text is prefixed "Error: ", since no other API has the flag. The
  texts of a message (or of a tool_result) are joined with a blank line, as chat.py says.
- stop_reason: stop -> end_turn (a provider's "stop" does not say which stop sequence
  matched, so `stop_sequence` is always null), length -> max_tokens, tool_calls ->
  tool_use, content_filter -> refusal; "stop" or none with tool calls is tool_use (some
  providers report a plain stop for function calls, and SDK loops test for tool_use).
- usage: our prompt tokens already include cached input (adapters fold cache reads and
  writes in), so `input_tokens` is the whole input and the cache counts are 0.
"""

from __future__ import annotations

import json
import re
from typing import Any

from axonflow_site.errors import AxonFlowError, ValidationFailed
from providers.adapters.base import (
    Chunk,
    CompletionRequest,
    CompletionResponse,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from providers.adapters.chat import valid_data_url
from routing.selection import RoutingOptions
from routing.v1.chat import MAX_MESSAGES, MAX_STOP, parse_weights
from routing.v1.chat import fail as _fail
from routing.v1.chat import flag as _flag
from routing.v1.chat import integer as _integer
from routing.v1.chat import number as _number
from routing.v1.wire import dumps

MAX_TOKENS = 1_000_000
MAX_USER_ID = 512  # metadata.user_id, as the spec limits it
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")  # Tool.name
BLOCK_ID = re.compile(r"[a-zA-Z0-9_-]+")  # tool_use.id, tool_result.tool_use_id
MAX_TOOL_USE_NAME = 200  # RequestToolUseBlock.name
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
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
# Content blocks of the API that have no place in the shared representation, and why.
THINKING_BLOCKS = "thinking blocks are not supported (extended thinking is not available through this gateway)"
UNSUPPORTED_BLOCKS = {
    "document": "document blocks (PDF, plain text and content documents) are not supported; send the text itself",
    "search_result": "search_result blocks are not supported",
    "thinking": THINKING_BLOCKS,
    "redacted_thinking": THINKING_BLOCKS,
    "container_upload": "container_upload blocks are not supported (no code execution containers here)",
    "tool_reference": "tool_reference blocks are not supported (no tool search here)",
}
SERVER_TOOL_BLOCKS = "blocks of Anthropic server tools are not supported (only custom tools are)"
# Our error codes (axonflow_site/errors.py, routing/v1/app.py) as Anthropic error types.
ERROR_TYPES = {
    "validation_error": "invalid_request_error",
    "invalid_config": "invalid_request_error",
    "duplicate_provider": "invalid_request_error",
    "method_not_allowed": "invalid_request_error",
    "payload_too_large": "request_too_large",
    "unauthorized": "authentication_error",
    "forbidden": "permission_error",
    "license_required": "permission_error",
    "provider_not_found": "not_found_error",
    "not_found": "not_found_error",
    "rate_limited": "rate_limit_error",
    "upstream_error": "api_error",
    "internal_error": "api_error",
    "no_healthy_provider": "overloaded_error",
}
# Normalized (OpenAI) finish reasons as Anthropic stop reasons.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


# --- parsing -------------------------------------------------------------------------------


def _object(value: Any, param: str, allowed: frozenset[str] | set[str]) -> dict:
    """`value` when it is an object of only `allowed` fields; refuses any other by name."""
    if not isinstance(value, dict):
        raise _fail(param, "must be an object")
    extra = sorted(set(value) - allowed)
    if extra:
        raise _fail(f"{param}.{extra[0]}", "is not supported by this gateway")
    return value


def _bool(value: Any, param: str) -> bool:
    """A flag: true, false or null (false)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(param, "must be true or false")
    return value


def _cache_control(value: Any, param: str) -> None:
    """Checked, then ignored: prompt caching changes cost and latency, not the answer."""
    if value is None:
        return
    _object(value, param, {"type", "ttl"})
    if value.get("type") != "ephemeral":
        raise _fail(f"{param}.type", "must be 'ephemeral'")
    if value.get("ttl") is not None and value["ttl"] not in ("5m", "1h"):
        raise _fail(f"{param}.ttl", "must be '5m' or '1h'")


def _block_type(block: Any, param: str) -> str:
    if not isinstance(block, dict):
        raise _fail(param, "must be a content block object with a type")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _fail(f"{param}.type", "is required")
    return kind


def _refuse_block(kind: str, param: str) -> ValidationFailed:
    if kind in UNSUPPORTED_BLOCKS:
        return _fail(param, UNSUPPORTED_BLOCKS[kind])
    if kind == "server_tool_use" or kind.endswith("_tool_result"):
        return _fail(param, f"'{kind}': {SERVER_TOOL_BLOCKS}")
    return _fail(f"{param}.type", f"'{kind}' is not a content block type this gateway supports")


def _text(block: dict, param: str) -> str:
    """A text block's text. Citations only make sense with documents, refused here."""
    _object(block, param, {"type", "text", "cache_control", "citations"})
    text = block.get("text")
    if not isinstance(text, str) or not text:
        raise _fail(f"{param}.text", "must be a non-empty string")
    if block.get("citations"):
        raise _fail(f"{param}.citations", "citations are not supported (they cite documents, which are not either)")
    _cache_control(block.get("cache_control"), f"{param}.cache_control")
    return text


def _image(block: dict, param: str) -> ImagePart:
    """An image block as chat.py's ImagePart: base64 data as a data URL, or an https URL."""
    _object(block, param, {"type", "source", "cache_control"})
    _cache_control(block.get("cache_control"), f"{param}.cache_control")
    source, where = block.get("source"), f"{param}.source"
    if not isinstance(source, dict):
        raise _fail(where, "must be an object with a type: base64 or url")
    kind = source.get("type")
    if kind == "base64":
        _object(source, where, {"type", "media_type", "data"})
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in IMAGE_MEDIA_TYPES:
            raise _fail(f"{where}.media_type", f"must be one of {', '.join(IMAGE_MEDIA_TYPES)}")
        url = f"data:{media_type};base64,{data}" if isinstance(data, str) else ""
        if not data or not valid_data_url(url):
            raise _fail(f"{where}.data", "must be base64-encoded image data")
        return ImagePart(url)
    if kind == "url":
        _object(source, where, {"type", "url"})
        url = source.get("url")
        if not isinstance(url, str) or not url.lower().startswith("https://") or len(url) <= len("https://"):
            raise _fail(f"{where}.url", "must be an https URL")
        return ImagePart(url)
    if kind == "file":
        raise _fail(f"{where}.type", "images by file_id (Files API) are not supported; send base64 data or a URL")
    raise _fail(f"{where}.type", "must be base64 or url")


def _tool_use(block: dict, param: str) -> ToolCall:
    _object(block, param, {"type", "id", "name", "input", "cache_control", "caller"})
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
    if not isinstance(call_id, str) or not BLOCK_ID.fullmatch(call_id):
        raise _fail(f"{param}.id", "must be a string of letters, digits, '_' and '-'")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_TOOL_USE_NAME:
        raise _fail(f"{param}.name", f"must be a non-empty string of at most {MAX_TOOL_USE_NAME} characters")
    if not isinstance(arguments, dict):
        raise _fail(f"{param}.input", "must be an object")
    caller = block.get("caller")
    if caller is not None and caller != {"type": "direct"}:
        raise _fail(f"{param}.caller", "only direct tool calls are supported (no programmatic tool calling)")
    _cache_control(block.get("cache_control"), f"{param}.cache_control")
    return ToolCall(call_id, name, json.dumps(arguments, ensure_ascii=False))


def _tool_result_text(content: Any, is_error: bool, param: str) -> str:
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, block in enumerate(content):
            where = f"{param}[{k}]"
            kind = _block_type(block, where)
            if kind == "text":
                texts.append(_text(block, where))
            elif kind == "image":
                raise _fail(where, "images inside tool_result are not supported (tool results carry text only)")
            else:
                raise _refuse_block(kind, where)
        text = "\n\n".join(texts)
    else:
        raise _fail(param, "must be a string or a list of text blocks")
    if is_error:
        return f"Error: {text}" if text else "Error"
    return text


class _Turns:
    """The tool_use / tool_result pairing rule across turns (consecutive messages of one
    role are one turn, as the API merges them): every tool_use of an assistant turn is
    answered once, by a tool_result at the start of the next turn, which is a user turn."""

    def __init__(self) -> None:
        self.role: str | None = None
        self.calls: dict[str, int] = {}  # tool_use id -> index of its assistant message
        self.answered: set[str] = set()
        self.results_allowed = False

    def begin(self, role: str) -> None:
        if role == self.role:
            return
        if role == "assistant":
            self.check_answered()
            self.calls, self.answered = {}, set()
        self.results_allowed = role == "user" and bool(self.calls)
        self.role = role

    def check_answered(self) -> None:
        missing = [call_id for call_id in self.calls if call_id not in self.answered]
        if missing:
            raise _fail(
                f"messages[{self.calls[missing[0]]}].content",
                "tool_use ids were found without tool_result blocks immediately after: "
                f"{', '.join(missing)}. Each tool_use block must have a corresponding tool_result block "
                "at the start of the next message.",
            )

    def result(self, call_id: str, param: str) -> None:
        if not self.results_allowed:
            if self.calls:
                raise _fail(param, "tool_result blocks must come first in their message, before any other content")
            raise _fail(param, "a tool_result must answer a tool_use of the immediately preceding assistant message")
        if call_id not in self.calls:
            raise _fail(f"{param}.tool_use_id", f"'{call_id}' is not a tool_use id of the preceding assistant message")
        if call_id in self.answered:
            raise _fail(f"{param}.tool_use_id", f"'{call_id}' is answered more than once")
        self.answered.add(call_id)


def _user_message(i: int, blocks: list, turns: _Turns) -> list[Message]:
    """The tool messages for the tool_result blocks (which come first), then the rest of
    the message as one user message, if there is any rest."""
    out: list[Message] = []
    parts: list[Part] = []
    for k, block in enumerate(blocks):
        param = f"messages[{i}].content[{k}]"
        kind = _block_type(block, param)
        if kind == "tool_result":
            _object(block, param, {"type", "tool_use_id", "content", "is_error", "cache_control"})
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str) or not BLOCK_ID.fullmatch(call_id):
                raise _fail(f"{param}.tool_use_id", "must be a string of letters, digits, '_' and '-'")
            turns.result(call_id, param)
            _cache_control(block.get("cache_control"), f"{param}.cache_control")
            is_error = _bool(block.get("is_error"), f"{param}.is_error")
            text = _tool_result_text(block.get("content"), is_error, f"{param}.content")
            out.append(Message("tool", text, tool_call_id=call_id))
            continue
        turns.results_allowed = False
        if kind == "text":
            parts.append(TextPart(_text(block, param)))
        elif kind == "image":
            parts.append(_image(block, param))
        elif kind == "tool_use":
            raise _fail(param, "tool_use blocks belong in assistant messages")
        else:
            raise _refuse_block(kind, param)
    if parts:
        text = "\n\n".join(p.text for p in parts if isinstance(p, TextPart))
        images = any(isinstance(p, ImagePart) for p in parts)
        out.append(Message("user", text, parts=tuple(parts) if images else None))
    return out


def _assistant_message(i: int, blocks: list, turns: _Turns) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for k, block in enumerate(blocks):
        param = f"messages[{i}].content[{k}]"
        kind = _block_type(block, param)
        if kind == "text":
            texts.append(_text(block, param))
        elif kind == "tool_use":
            call = _tool_use(block, param)
            if call.id in turns.calls:
                raise _fail(f"{param}.id", f"'{call.id}' is used twice")
            turns.calls[call.id] = i
            calls.append(call)
        elif kind == "image":
            raise _fail(param, "images are supported in user messages only")
        elif kind == "tool_result":
            raise _fail(param, "tool_result blocks belong in user messages")
        else:
            raise _refuse_block(kind, param)
    return Message("assistant", "\n\n".join(texts), tool_calls=tuple(calls) or None)


def parse_conversation(raw: Any) -> list[Message]:
    """The shared messages for Anthropic's `messages`: user turns (text and images, and
    one tool message per tool_result) and assistant turns (text and tool calls)."""
    if not isinstance(raw, list) or not raw:
        raise _fail("messages", "must be a non-empty list")
    if len(raw) > MAX_MESSAGES:
        raise _fail("messages", f"at most {MAX_MESSAGES} messages")
    turns = _Turns()
    messages: list[Message] = []
    for i, item in enumerate(raw):
        param = f"messages[{i}]"
        _object(item, param, {"role", "content"})
        role, content = item.get("role"), item.get("content")
        if role not in ("user", "assistant"):
            raise _fail(f"{param}.role", "must be user or assistant (the system prompt is the top-level `system`)")
        if isinstance(content, str):
            blocks: list = [{"type": "text", "text": content}] if content else []
        elif isinstance(content, list):
            blocks = content
        else:
            raise _fail(f"{param}.content", "must be a string or a list of content blocks")
        if not blocks and not (role == "assistant" and i == len(raw) - 1):
            raise _fail(f"{param}.content", "must not be empty (only a final assistant message may be)")
        turns.begin(role)
        if role == "user":
            messages += _user_message(i, blocks, turns)
        else:
            messages.append(_assistant_message(i, blocks, turns))
    turns.check_answered()  # a tool_use in the last turn, or one the last user turn left unanswered
    return messages


def parse_system(raw: Any) -> str | None:
    """`system`: a string, or text blocks (joined with a blank line)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw or None
    if isinstance(raw, list):
        texts = []
        for k, block in enumerate(raw):
            if _block_type(block, f"system[{k}]") != "text":
                raise _fail(f"system[{k}].type", "must be text")
            texts.append(_text(block, f"system[{k}]"))
        return "\n\n".join(texts) or None
    raise _fail("system", "must be a string or a list of text blocks")


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
        raise _fail("model", "is required: a provider name, or 'auto'")
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


# --- rendering -----------------------------------------------------------------------------


def stop_reason(finish_reason: str | None, called_tools: bool) -> str:
    """Anthropic's stop_reason for a normalized finish reason."""
    if called_tools and finish_reason in (None, "stop", "tool_calls"):
        return "tool_use"
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def usage_dict(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Message.usage with every field the spec lists; cached input is in input_tokens."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": None,
        "inference_geo": None,
        "server_tool_use": None,
        "service_tier": None,
    }


def _message(request_id: str, model: str, content: list, stop: str | None, usage: dict) -> dict[str, Any]:
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "stop_details": None,
        "container": None,
        "usage": usage,
    }


def _tool_id(call_id: str | None, request_id: str, n: int) -> str:
    return call_id or f"toolu_{request_id}_{n}"


def message_body(response: CompletionResponse, request_id: str, model_asked: str) -> bytes:
    """The Message for a complete answer: a text block (when there is text), then one
    tool_use block per tool call, its arguments as an object."""
    content: list[dict[str, Any]] = []
    if response.content:
        content.append({"type": "text", "text": response.content, "citations": None})
    calls = response.tool_calls or []
    for n, call in enumerate(calls):
        block_id = _tool_id(call.id, request_id, n)
        content.append({"type": "tool_use", "id": block_id, "name": call.name, "input": call.input(),
                        "caller": {"type": "direct"}})  # fmt: skip
    usage = usage_dict(response.usage.prompt_tokens, response.usage.completion_tokens)
    stop = stop_reason(response.finish_reason, bool(calls))
    return dumps(_message(request_id, response.model or model_asked, content, stop, usage))


def sse(event: str, body: dict[str, Any]) -> bytes:
    """One server-sent event: its name, and the JSON data whose `type` repeats it."""
    return b"event: " + event.encode() + b"\ndata: " + dumps(body) + b"\n\n"


PING_EVENT = sse("ping", {"type": "ping"})  # a keep-alive the SDKs skip


class MessageStream:
    """Chunks in, Anthropic's stream events out, as bytes to send.

    `start()` gives message_start (sent by the first `events()` if not called before),
    `events(chunk)` the block events for one chunk, `finish()` closes the open block and
    gives message_delta and message_stop. Text opens a text block; each tool call (a new
    ToolCallDelta.index) closes the open block and opens a tool_use block, whose argument
    fragments are input_json_delta events. Indexes are sequential from 0; one block is
    open at a time. Every provider streams the pieces of one tool call contiguously (as
    OpenAI does); a fragment for a call whose block was closed cannot be sent and raises
    ValueError."""

    def __init__(self, request_id: str, model: str, input_tokens: int = 0):
        self.request_id = request_id
        self.model = model
        self.input_tokens = input_tokens
        self.started = False
        self.finished = False
        self.open: str | None = None  # the open block's type: "text", "tool_use" or None
        self.blocks = 0  # blocks started so far: the open one is blocks - 1
        self.tools: dict[int, int] = {}  # ToolCallDelta.index -> its block's index
        self.finish_reason: str | None = None
        self.output_tokens: int | None = None

    def start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        message = _message(self.request_id, self.model, [], None, usage_dict(self.input_tokens, 0))
        return sse("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.blocks - 1})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.open = kind
        self.blocks += 1
        return out + sse("content_block_start", {"type": "content_block_start", "index": self.blocks - 1,
                                                 "content_block": block})  # fmt: skip

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def events(self, chunk: Chunk) -> bytes:
        if self.finished:
            raise RuntimeError("the stream is finished")
        if not self.started and chunk.model:
            self.model = chunk.model
        out = [self.start()]
        if chunk.delta:
            if self.open != "text":
                out.append(self._open("text", {"type": "text", "text": ""}))
            out.append(self._delta(self.blocks - 1, {"type": "text_delta", "text": chunk.delta}))
        for piece in chunk.tool_calls or ():
            index = self.tools.get(piece.index)
            if index is None:
                block_id = _tool_id(piece.id, self.request_id, len(self.tools))
                out.append(self._open("tool_use", {"type": "tool_use", "id": block_id, "name": piece.name or "",
                                                   "input": {}}))  # fmt: skip
                index = self.tools[piece.index] = self.blocks - 1
            elif index != self.blocks - 1 or self.open != "tool_use":
                raise ValueError(f"a fragment of tool call {piece.index} arrived after its block was closed")
            if piece.arguments:
                out.append(self._delta(index, {"type": "input_json_delta", "partial_json": piece.arguments}))
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.input_tokens = chunk.usage.prompt_tokens
            self.output_tokens = chunk.usage.completion_tokens
        return b"".join(out)

    def finish(self) -> bytes:
        if self.finished:
            return b""
        out = self.start() + self._close()
        self.finished = True
        usage: dict[str, int] = {"output_tokens": self.output_tokens or 0}
        if self.output_tokens is not None:  # cumulative: the SDK replaces message_start's count
            usage["input_tokens"] = self.input_tokens
        delta = {"stop_reason": stop_reason(self.finish_reason, bool(self.tools)), "stop_sequence": None}
        out += sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        return out + sse("message_stop", {"type": "message_stop"})


# --- errors --------------------------------------------------------------------------------


def error_type(error: AxonFlowError) -> str:
    """Anthropic's error type for one of our errors (by code, else by HTTP status)."""
    kind = ERROR_TYPES.get(error.code)
    if kind is None:
        kind = "api_error" if error.http_status >= 500 else "invalid_request_error"
    return kind


def _envelope(error: AxonFlowError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(error), "message": error.message}}


def error_body(error: AxonFlowError, request_id: str | None = None) -> bytes:
    """Anthropic's error envelope; the HTTP status stays the error's own."""
    return dumps({**_envelope(error), "request_id": request_id})


def error_event(error: AxonFlowError) -> bytes:
    """An error after the 200: `event: error`, as Anthropic sends overloaded_error mid-stream."""
    return sse("error", _envelope(error))
