"""Content blocks of an Anthropic Messages request (routing/v1/messages.py) as the shared
messages: text, image, tool_use and tool_result blocks, the turn pairing rule, and `system`.

- Blocks: https://docs.anthropic.com/en/api/messages (InputMessage and the Request*Block
  schemas of ../shared/provider-specs/served/anthropic.json).
- Images: https://docs.anthropic.com/en/docs/build-with-claude/vision (source `base64`
  with media_type image/jpeg|png|gif|webp, or `url`).
- Tool use: https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use
  and https://platform.claude.com/docs/en/agents-and-tools/tool-use/handle-tool-calls: each
  tool_use is answered by a tool_result in the very next (user) turn, tool_result blocks
  first (the API answers 400 otherwise, as OpenAI does for tool messages out of place).

Choices:
- Refused by name: document / search_result / thinking / server-tool blocks, images in
  assistant turns or inside tool_result (the shared representation carries images in user
  turns only, as OpenAI does), image `file` sources and non-https URLs.
- `cache_control` on any block is checked and ignored (it changes cost, not the answer).
- A tool_result becomes one Message(role="tool", tool_call_id, text); with `is_error` its
  text is prefixed "Error: ", since no other API has the flag. The texts of a message (or
  of a tool_result) are joined with a blank line, as chat.py does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from axonflow_site.errors import ValidationFailed
from providers.adapters.base import ImagePart, Message, Part, TextPart, ToolCall
from providers.adapters.chat import valid_data_url
from routing.v1.chat import MAX_MESSAGES
from routing.v1.chat import fail as _fail

BLOCK_ID = re.compile(r"[a-zA-Z0-9_-]+")  # tool_use.id, tool_result.tool_use_id
MAX_TOOL_USE_NAME = 200  # RequestToolUseBlock.name
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
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


def strict_object(value: Any, param: str, allowed: frozenset[str] | set[str]) -> dict:
    """`value` when it is an object of only `allowed` fields; refuses any other by name."""
    if not isinstance(value, dict):
        raise _fail(param, "must be an object")
    extra = sorted(set(value) - allowed)
    if extra:
        raise _fail(f"{param}.{extra[0]}", "is not supported by this gateway")
    return value


def boolean(value: Any, param: str) -> bool:
    """A flag: true, false or null (false)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(param, "must be true or false")
    return value


def check_cache_control(value: Any, param: str) -> None:
    """Checked, then ignored: prompt caching changes cost and latency, not the answer."""
    if value is None:
        return
    strict_object(value, param, {"type", "ttl"})
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
    strict_object(block, param, {"type", "text", "cache_control", "citations"})
    text = block.get("text")
    if not isinstance(text, str) or not text:
        raise _fail(f"{param}.text", "must be a non-empty string")
    if block.get("citations"):
        raise _fail(f"{param}.citations", "citations are not supported (they cite documents, which are not either)")
    check_cache_control(block.get("cache_control"), f"{param}.cache_control")
    return text


def _image(block: dict, param: str) -> ImagePart:
    """An image block as chat.py's ImagePart: base64 data as a data URL, or an https URL."""
    strict_object(block, param, {"type", "source", "cache_control"})
    check_cache_control(block.get("cache_control"), f"{param}.cache_control")
    source, where = block.get("source"), f"{param}.source"
    if not isinstance(source, dict):
        raise _fail(where, "must be an object with a type: base64 or url")
    kind = source.get("type")
    if kind == "base64":
        strict_object(source, where, {"type", "media_type", "data"})
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in IMAGE_MEDIA_TYPES:
            raise _fail(f"{where}.media_type", f"must be one of {', '.join(IMAGE_MEDIA_TYPES)}")
        url = f"data:{media_type};base64,{data}" if isinstance(data, str) else ""
        if not data or not valid_data_url(url):
            raise _fail(f"{where}.data", "must be base64-encoded image data")
        return ImagePart(url)
    if kind == "url":
        strict_object(source, where, {"type", "url"})
        url = source.get("url")
        if not isinstance(url, str) or not url.lower().startswith("https://") or len(url) <= len("https://"):
            raise _fail(f"{where}.url", "must be an https URL")
        return ImagePart(url)
    if kind == "file":
        raise _fail(f"{where}.type", "images by file_id (Files API) are not supported; send base64 data or a URL")
    raise _fail(f"{where}.type", "must be base64 or url")


def _tool_use(block: dict, param: str) -> ToolCall:
    strict_object(block, param, {"type", "id", "name", "input", "cache_control", "caller"})
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
    check_cache_control(block.get("cache_control"), f"{param}.cache_control")
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
    """The tool_use / tool_result pairing rule. Consecutive messages of one role are one
    turn (the API merges them); each tool_use of an assistant turn is answered exactly once,
    by a tool_result at the start of the next (user) turn."""

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
            strict_object(block, param, {"type", "tool_use_id", "content", "is_error", "cache_control"})
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str) or not BLOCK_ID.fullmatch(call_id):
                raise _fail(f"{param}.tool_use_id", "must be a string of letters, digits, '_' and '-'")
            turns.result(call_id, param)
            check_cache_control(block.get("cache_control"), f"{param}.cache_control")
            is_error = boolean(block.get("is_error"), f"{param}.is_error")
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
        strict_object(item, param, {"role", "content"})
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
