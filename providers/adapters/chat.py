"""The parts of a chat request and answer beyond plain text: content parts, tools and
tool calls, structured output, and embeddings. A leaf like base.py (which re-exports
these), so that every wire module translates one shared representation.

The representation follows OpenAI Chat Completions, the richest of the formats we speak
(https://platform.openai.com/docs/api-reference/chat/create), so nothing an OpenAI
client sends is lost on the way to any provider:

- `Message.content` is always the message's text (text parts joined with a blank
  line); `Message.parts` keeps the parts in order when the client sent any image.
- Tool arguments stay JSON *text*, as OpenAI carries them: a provider that wants an
  object gets `ToolCall.input()`; one that gives an object gets `json.dumps` of it.
- Features a request needs (`required_features`) are matched against what an adapter
  declares (`Capabilities.features`) before it becomes a routing candidate.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

# Capability names: what an adapter may declare and a request may need.
CHAT, STREAMING, TOOLS, PARALLEL_TOOL_CALLS = "chat", "streaming", "tools", "parallel_tool_calls"
IMAGES, JSON_MODE, JSON_SCHEMA, EMBEDDINGS = "images", "json_mode", "json_schema", "embeddings"
# Images by https URL, not only inline data: the provider fetches them itself. APIs that
# take only inline bytes (Gemini inline_data, Bedrock, Ollama) lack it, and we do not
# fetch client-given URLs on their behalf (that would be a request-forgery path).
IMAGE_URLS = "image_urls"
ALL_FEATURES = frozenset(
    {CHAT, STREAMING, TOOLS, PARALLEL_TOOL_CALLS, IMAGES, IMAGE_URLS, JSON_MODE, JSON_SCHEMA, EMBEDDINGS}
)
# What each feature is called when refused (the 400 names it).
FEATURE_LABELS = {
    CHAT: "chat completions",
    STREAMING: "streaming",
    TOOLS: "tools (function calling)",
    PARALLEL_TOOL_CALLS: "parallel_tool_calls control",
    IMAGES: "image input",
    IMAGE_URLS: "images by URL (send them as data: URLs)",
    JSON_MODE: "JSON mode (response_format json_object)",
    JSON_SCHEMA: "structured output (response_format json_schema)",
    EMBEDDINGS: "embeddings",
}


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image: an https URL or a `data:<media type>;base64,<data>` URL (OpenAI's
    `image_url.url`), with OpenAI's optional `detail`."""

    url: str
    detail: str | None = None

    @property
    def is_data(self) -> bool:
        return self.url.startswith("data:")

    def data(self) -> tuple[str, str]:
        """(media type, base64 data) of a data URL. Raises ValueError for any other URL."""
        head, sep, payload = self.url.partition(",")
        if not self.is_data or not sep or not head.endswith(";base64"):
            raise ValueError("not a base64 data URL")
        return head[len("data:") : -len(";base64")] or "application/octet-stream", payload


Part = TextPart | ImagePart


def valid_data_url(url: str) -> bool:
    """Whether `url` is a well-formed base64 `data:image/...` URL."""
    try:
        media_type, payload = ImagePart(url).data()
        base64.b64decode(payload, validate=True)
    except (ValueError, binascii.Error):
        return False
    return media_type.startswith("image/")


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: `parameters` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def schema(self) -> dict[str, Any]:
        """The parameters schema, `{"type": "object"}` when none was given (providers
        that require one, Anthropic's `input_schema`, get a valid empty object)."""
        return self.parameters if self.parameters is not None else {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """`mode` is auto, none or required (OpenAI's words), or function with `name`."""

    mode: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text

    def input(self) -> dict[str, Any]:
        """The arguments as an object (providers that take one). A model that produced
        invalid JSON still gets its text back, under `_raw`, rather than a crash."""
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError:
            return {"_raw": self.arguments}
        return value if isinstance(value, dict) else {"_value": value}


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One piece of a streamed tool call, as OpenAI streams them: the first piece of a
    call carries `index`, `id` and `name` (arguments may be empty); later pieces carry
    the same `index` and a fragment of `arguments`."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """`type` is json_object or json_schema (text is no format at all: None)."""

    type: str
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None
    description: str | None = None


@dataclass(slots=True)
class EmbeddingRequest:
    inputs: list[str]
    model: str | None = None  # the upstream model; the config's when None
    dimensions: int | None = None
    user: str | None = None


@dataclass(slots=True)
class EmbeddingResponse:
    vectors: list[list[float]]
    model: str
    prompt_tokens: int = 0


def tool_calls_from_deltas(deltas: list[ToolCallDelta]) -> list[ToolCall]:
    """The whole calls a stream's deltas add up to (for usage and for /v1/messages)."""
    calls: dict[int, list[str]] = {}
    for delta in deltas:
        call = calls.setdefault(delta.index, ["", "", ""])
        call[0] = delta.id or call[0]
        call[1] = delta.name or call[1]
        call[2] += delta.arguments
    return [ToolCall(i, n, a) for i, n, a in (calls[k] for k in sorted(calls))]
