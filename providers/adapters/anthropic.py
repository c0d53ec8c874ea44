"""Anthropic Messages API.

- Messages: https://docs.anthropic.com/en/api/messages (`system` is a top-level field,
  `max_tokens` is required, turns alternate; `metadata.user_id`)
- Versioning: https://docs.anthropic.com/en/api/versioning (`anthropic-version: 2023-06-01`)
- Streaming: https://platform.claude.com/docs/en/build-with-claude/streaming (message_start,
  content_block_start/delta/stop, message_delta, message_stop, ping, `error` mid-stream;
  a tool_use block's input comes as `input_json_delta` fragments)
- Tools: https://platform.claude.com/docs/en/agents-and-tools/tool-use/implement-tool-use
  (`tools`, `tool_choice` auto | any | tool | none, `disable_parallel_tool_use`) and
  https://platform.claude.com/docs/en/agents-and-tools/tool-use/handle-tool-calls
  (`tool_result` blocks answer `tool_use` ids in the next user turn, before any text)
- Images: https://platform.claude.com/docs/en/build-with-claude/vision (`base64` or `url`)
- JSON: https://docs.anthropic.com/en/docs/build-with-claude/tool-use#json-mode ("use tools
  anytime you want the model to return JSON output that follows a provided schema")
- Errors: https://docs.anthropic.com/en/api/errors (`{"type": "error", "error": {...}}`)
- Models: https://docs.anthropic.com/en/api/models-list (the health probe)

JSON mode and structured output are a forced tool (JSON_TOOL) whose input schema is the
requested one; its input comes back as the text. Not the native structured outputs
(`output_config.format`, https://platform.claude.com/docs/en/build-with-claude/structured-outputs):
only recent models take them, and json_object mode has no schema to give. Neither is
`strict` sent, for the same models' sake.

Dropped, as the API has no such fields and all of them are sampling hints that change no
answer's shape: seed, presence_penalty, frequency_penalty, logit_bias (and a message's
`name`, an image's `detail`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from providers.adapters import chat
from providers.adapters.base import (
    Chunk,
    CompletionRequest,
    CompletionResponse,
    HealthProbe,
    MalformedResponse,
    Message,
    ProviderError,
    Usage,
    classify,
    invalid_setting,
    positive_int_setting,
    present,
    token_count,
)
from providers.adapters.http import BaseProvider, Call, check_setting_names, error_message, json_object, sse_events

if TYPE_CHECKING:
    from providers.models import ProviderConfig

DEFAULT_BASE_URL = "https://api.anthropic.com"
MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
# The normalized finish reasons follow OpenAI's vocabulary (the /v1 surface returns them).
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                  "pause_turn": "stop", "refusal": "content_filter"}  # fmt: skip
# OpenAI's tool_choice modes in Anthropic's words.
TOOL_CHOICE_TYPES = {"auto": "auto", "required": "any", "function": "tool", "none": "none"}
# The forced tool that carries JSON mode (module docstring); the prefix keeps it apart
# from any tool a client could name.
JSON_TOOL = "axonflow_json_response"
JSON_TOOL_DESCRIPTION = "Give your answer to the user through this tool: its input is the whole answer."
# The object each stream event carries (the SDK's Raw*Event types require it): without
# it the event is meaningless, and skipping it would shorten the answer silently.
EVENT_PARTS = {"message_start": "message", "content_block_start": "content_block",
               "content_block_delta": "delta", "message_delta": "delta"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Settings:
    """`config.settings` for anthropic: `anthropic_version`, `beta` (list of
    anthropic-beta flags) and `max_tokens` (sent when a request gives none)."""

    anthropic_version: str = API_VERSION
    beta: tuple[str, ...] = ()
    max_tokens: int = DEFAULT_MAX_TOKENS

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        """Raises InvalidConfig naming the bad field (or a key it does not know)."""
        check_setting_names(raw, {f.name for f in fields(cls)})
        version = raw.get("anthropic_version")
        version = API_VERSION if version is None else version
        if not isinstance(version, str) or not version.replace("-", "").isdigit():
            raise invalid_setting("settings.anthropic_version must look like 2023-06-01.")
        beta = raw.get("beta")
        beta = [] if beta is None else beta
        if isinstance(beta, str):
            beta = [beta]
        if not isinstance(beta, list) or not all(isinstance(b, str) and b and "," not in b for b in beta):
            raise invalid_setting("settings.beta must be a list of beta flag names.")
        max_tokens = positive_int_setting(raw.get("max_tokens", DEFAULT_MAX_TOKENS), "max_tokens")
        return cls(anthropic_version=version, beta=tuple(beta), max_tokens=max_tokens)


# --- request ---------------------------------------------------------------------------


def _image_block(part: chat.ImagePart) -> dict:
    """Raises ValueError for a data URL that is not base64 (ImagePart.data)."""
    if part.is_data:
        media_type, data = part.data()
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _blocks(message: Message) -> list[dict]:
    """The content blocks of a user or assistant message. Empty texts are left out: the
    API refuses empty text blocks."""
    if message.role == "tool":
        result = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
        return [{**result, "content": message.content} if message.content else result]
    blocks = [
        _image_block(part) if isinstance(part, chat.ImagePart) else {"type": "text", "text": part.text}
        for part in message.content_parts()
        if isinstance(part, chat.ImagePart) or part.text
    ]
    if message.role == "assistant":
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.input()} for c in message.tool_calls or ()
        ]
    return blocks


def _turns(req: CompletionRequest) -> tuple[list[dict], list[str]]:
    """(alternating turns, system texts). System messages join the system prompt; tool
    results are blocks of a user turn; consecutive messages of one role make one turn
    (as the API itself would), so tool results and the user text after them do too."""
    system = [req.system] if req.system else []
    turns: list[tuple[str, list[dict]]] = []
    for message in req.messages:
        if message.role == "system":
            system.append(message.content)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        if not turns or turns[-1][0] != role:
            turns.append((role, []))
        turn = turns[-1][1]
        for block in _blocks(message):
            # In a user turn, tool_result blocks come before any text (handle-tool-calls).
            results = sum(b["type"] == "tool_result" for b in turn)
            turn.insert(results if block["type"] == "tool_result" else len(turn), block)
    wire = [{"role": role, "content": _content(blocks)} for role, blocks in turns]
    return wire, system


def _content(blocks: list[dict]) -> str | list[dict]:
    """A turn of one text block stays a plain string."""
    return blocks[0]["text"] if len(blocks) == 1 and blocks[0]["type"] == "text" else blocks or ""


def _tool(tool: chat.Tool) -> dict:
    return {"name": tool.name, **({"description": tool.description} if tool.description else {}),
            "input_schema": tool.schema()}  # fmt: skip


def _tool_choice(choice: chat.ToolChoice | None, parallel: bool | None) -> dict | None:
    """The wire tool_choice; None when the client left the default (auto) alone."""
    mode = choice.mode if choice else "auto"
    wire: dict[str, Any] = {"type": TOOL_CHOICE_TYPES.get(mode, "auto")}
    if mode == "function":
        wire["name"] = choice.name
    if parallel is False and mode != "none":  # ToolChoiceNone has no disable_parallel_tool_use
        wire["disable_parallel_tool_use"] = True
    return wire if choice is not None or len(wire) > 1 else None


def _json_tool(fmt: chat.ResponseFormat) -> dict:
    """The tool whose input is the answer: the client's schema, or any object (json_object
    mode asks for an object and nothing more)."""
    schema = fmt.schema if fmt.type == "json_schema" and fmt.schema else {"type": "object"}
    about = " ".join(s for s in (fmt.name and f"Schema: {fmt.name}.", fmt.description) if s)
    return {"name": JSON_TOOL, "description": f"{JSON_TOOL_DESCRIPTION} {about}".strip(), "input_schema": schema}


def _placeholder_tools(req: CompletionRequest) -> list[dict]:
    # "Requests which include tool_use or tool_result blocks must define tools"
    # (https://github.com/anthropics/anthropic-sdk-python/issues/494), while an OpenAI
    # client may drop `tools` once it has its answers: declare the tools it called.
    names = dict.fromkeys(c.name for m in req.messages if m.role == "assistant" for c in m.tool_calls or ())
    return [{"name": name, "input_schema": {"type": "object"}} for name in names]


def _tool_fields(req: CompletionRequest) -> dict[str, Any]:
    """`tools` and `tool_choice` for the request, JSON mode included."""
    tools = [_tool(t) for t in req.tools or ()]
    choice = _tool_choice(req.tool_choice, req.parallel_tool_calls) if tools else None
    if not tools and (tools := _placeholder_tools(req)):
        choice = {"type": "none"}
    if req.response_format is not None and (choice is None or choice["type"] in ("auto", "none")):
        # A forced tool leaves no room for text, so JSON mode is: call a client tool if
        # one may be called (any), else answer through JSON_TOOL (forced, exactly once).
        may_call = bool(tools) and (choice is None or choice["type"] == "auto")
        tools = [*tools, _json_tool(req.response_format)]
        if may_call:
            choice = {**(choice or {}), "type": "any"}
        else:
            choice = {"type": "tool", "name": JSON_TOOL, "disable_parallel_tool_use": True}
    if not tools:
        return {}
    return {"tools": tools, **({"tool_choice": choice} if choice else {})}


def to_wire(req: CompletionRequest, model: str, settings: Settings | None = None, *, stream: bool = False) -> dict:
    """The Messages API body for `req`. Raises ValueError for an image data URL that is
    not base64 (the API layer refuses those first)."""
    settings = settings or Settings()
    turns, system = _turns(req)
    body: dict[str, Any] = {"model": model, "max_tokens": req.max_tokens or settings.max_tokens, "messages": turns}
    body |= present(
        system="\n\n".join(system) or None,
        # Anthropic's range is 0..1 where OpenAI's is 0..2.
        temperature=None if req.temperature is None else min(1.0, max(0.0, req.temperature)),
        top_p=req.top_p,
        stop_sequences=list(req.stop) if req.stop else None,
    )
    body |= _tool_fields(req)
    return body | present(metadata={"user_id": req.user} if req.user else None, stream=stream or None)


# --- response ----------------------------------------------------------------------------


def usage_from(data: Any) -> Usage:
    """Prompt tokens include cache writes and reads: all of them are billed input."""
    if not isinstance(data, dict):
        return Usage()
    inputs = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    prompt = sum(token_count(data.get(k), k) for k in inputs)
    return Usage(prompt, token_count(data.get("output_tokens"), "output_tokens"))


def _tool_call(block: Mapping[str, Any], provider: str) -> chat.ToolCall:
    """A tool_use block as a ToolCall, its input object as JSON text."""
    call_id, name, value = block.get("id"), block.get("name"), block.get("input")
    if not (isinstance(call_id, str) and call_id and isinstance(name, str) and name):
        raise MalformedResponse(provider, "a tool_use block has no id or name", 200)
    return chat.ToolCall(call_id, name, json.dumps(value if isinstance(value, dict) else {}))


def _finish(stop: Any, called: bool) -> str | None:
    # A JSON_TOOL answer ends in tool_use too, but it is the answer, not a call.
    if stop == "tool_use" and not called:
        return "stop"
    return FINISH_REASONS.get(stop, stop)


def from_wire(body: Any, provider: str = "anthropic") -> CompletionResponse:
    """The normalized response for a `message` object: text blocks joined, tool_use
    blocks as tool calls, a JSON_TOOL call as the text. Raises MalformedResponse."""
    if not isinstance(body, dict):
        raise MalformedResponse(provider, "response is not a JSON object")
    if body.get("type") == "error":
        raise _stream_error(body, provider)
    content = body.get("content")
    if body.get("type") != "message":
        raise MalformedResponse(provider, "response is not a message")
    if not isinstance(content, list):
        raise MalformedResponse(provider, "response message has no content list")
    blocks = [b for b in content if isinstance(b, dict)]
    text = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
    calls = [_tool_call(b, provider) for b in blocks if b.get("type") == "tool_use"]
    answers = [c.arguments for c in calls if c.name == JSON_TOOL]
    calls = [c for c in calls if c.name != JSON_TOOL]
    return CompletionResponse(
        content=answers[0] if answers else text,
        model=str(body.get("model") or ""),
        finish_reason=_finish(body.get("stop_reason"), bool(calls)),
        usage=usage_from(body.get("usage")),
        id=body.get("id"),
        tool_calls=calls or None,
    )


def _stream_error(obj: Mapping[str, Any], provider: str) -> ProviderError:
    # Errors after the 200 (overloaded_error, api_error) arrive as an `error` event; the
    # attempt failed upstream, so the router may try elsewhere if nothing was sent yet.
    err = obj.get("error") if isinstance(obj.get("error"), dict) else {}
    return ProviderError(provider, None, f"{err.get('type', 'error')}: {err.get('message', '')}", retryable=True)


class _Blocks:
    """The tool_use blocks of one streamed message, by their Anthropic index. Client calls
    are numbered 0, 1, ... (OpenAI's `index`, not the block index, which counts text
    blocks too); JSON_TOOL's input streams as text."""

    def __init__(self) -> None:
        self.tools: dict[Any, int | None] = {}  # block index -> call number (None: JSON_TOOL)
        self.empty: set[Any] = set()  # blocks without input so far

    @property
    def calls(self) -> int:
        return sum(k is not None for k in self.tools.values())

    def chunk(self, kind: str, obj: Mapping[str, Any], model: str | None) -> Chunk | None:
        """The chunk for a content_block_start, _delta or _stop event, if any."""
        index, block, delta = obj.get("index"), obj.get("content_block") or {}, obj.get("delta") or {}
        if kind == "content_block_start" and block.get("type") == "tool_use":
            self.empty.add(index)
            if block.get("name") == JSON_TOOL:
                self.tools[index] = None
                return None
            self.tools[index] = k = self.calls
            return Chunk(model=model, tool_calls=[chat.ToolCallDelta(k, block.get("id"), block.get("name"), "")])
        if kind == "content_block_delta" and delta.get("type") == "text_delta" and delta.get("text"):
            return Chunk(delta=delta["text"], model=model)
        if kind == "content_block_delta" and delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            return self.tool_input(index, delta["partial_json"], model)
        if kind == "content_block_stop" and index in self.empty:
            return self.tool_input(index, "{}", model)  # a call without parameters may stream no input
        return None

    def tool_input(self, index: Any, fragment: str, model: str | None) -> Chunk | None:
        self.empty.discard(index)
        if index not in self.tools:
            return None
        if (k := self.tools[index]) is None:
            return Chunk(delta=fragment, model=model)
        return Chunk(model=model, tool_calls=[chat.ToolCallDelta(k, arguments=fragment)])


async def parse_stream(events: AsyncIterator[tuple[str, str]], provider: str = "anthropic") -> AsyncIterator[Chunk]:
    """Chunks from the SSE events of a streamed message: text deltas and tool-call
    deltas (a call's first with its id and name, then its argument fragments), then one
    final chunk with finish reason and usage at message_stop. Unknown event types are
    skipped (the docs reserve the right to add them); a known event without its
    object (EVENT_PARTS) or a stream ending before message_stop, its end marker,
    raises MalformedResponse."""
    model: str | None = None
    usage = Usage()
    stop: str | None = None
    blocks = _Blocks()
    async for event, data in events:
        if event == "ping":
            continue
        obj = json_object(data, provider, f"stream event {event!r}")
        kind = obj.get("type", event)
        if kind == "error":
            raise _stream_error(obj, provider)
        part = EVENT_PARTS.get(kind)
        if part and not isinstance(obj.get(part), dict):
            raise MalformedResponse(provider, f"stream event {kind} has no {part}")
        if kind == "message_start":
            message = obj["message"]
            model = message.get("model") or model
            usage = usage_from(message.get("usage"))
        elif kind in ("content_block_start", "content_block_delta", "content_block_stop"):
            if chunk := blocks.chunk(kind, obj, model):
                yield chunk
        elif kind == "message_delta":
            stop = (obj.get("delta") or {}).get("stop_reason") or stop
            # message_delta's output_tokens is cumulative for the whole message.
            delta_usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
            usage = Usage(usage.prompt_tokens, token_count(delta_usage.get("output_tokens"), "output_tokens"))
        elif kind == "message_stop":
            yield Chunk(finish_reason=_finish(stop or "end_turn", blocks.calls > 0), usage=usage, model=model)
            return
    raise MalformedResponse(provider, "stream ended before message_stop")


class AnthropicCall(Call):
    def error_for(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        # https://docs.anthropic.com/en/api/errors: keep the error type next to the
        # message (overloaded_error, rate_limit_error…); 529 is retryable like any 5xx.
        try:
            kind = (json.loads(body).get("error") or {}).get("type")
        except (ValueError, AttributeError):
            kind = None
        message = error_message(body)
        return classify(self.provider, status, f"{kind}: {message}" if kind else message, headers)


class AnthropicProvider(BaseProvider):
    """Adapter for the Anthropic API."""

    type = "anthropic"
    # No embeddings: Anthropic has no embeddings API.
    features = frozenset({chat.CHAT, chat.STREAMING, chat.TOOLS, chat.PARALLEL_TOOL_CALLS, chat.IMAGES,
                          chat.IMAGE_URLS, chat.JSON_MODE, chat.JSON_SCHEMA})  # fmt: skip
    settings_class = Settings
    call_class = AnthropicCall

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        self.base_url = self.base_url_or(DEFAULT_BASE_URL)

    def headers(self, accept: str = "application/json") -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": accept, "x-api-key": self.api_key,
                   "anthropic-version": self.settings.anthropic_version}  # fmt: skip
        if self.settings.beta:
            headers["anthropic-beta"] = ",".join(self.settings.beta)
        return headers

    def body(self, request: CompletionRequest, *, stream: bool = False) -> dict:
        """to_wire for this config. Raises a final ProviderError for a request no
        upstream can take (an image data URL that is not base64)."""
        try:
            return to_wire(request, self.model_for(request), self.settings, stream=stream)
        except ValueError as exc:
            raise ProviderError(self.name, None, f"invalid request: {exc}", retryable=False) from None

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        body = self.body(request)
        return await self.post_json(self.base_url + MESSAGES_PATH, self.headers(), body, from_wire, body["model"])

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        body = self.body(request, stream=True)
        lines = await self.open_lines(self.base_url + MESSAGES_PATH, self.headers("text/event-stream"), body)
        async for chunk in parse_stream(sse_events(lines), self.name):
            yield chunk

    async def health_check(self) -> HealthProbe:
        """GET /v1/models?limit=1: authenticated, generates nothing, costs nothing."""
        url = f"{self.base_url}{MODELS_PATH}?limit=1"
        return await self.probe_list(url, self.headers(), "data", "the model list is not a list")
