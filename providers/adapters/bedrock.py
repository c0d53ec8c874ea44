"""Amazon Bedrock through the Converse API, signed with SigV4 by botocore.

- Converse: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
  (`POST /model/{modelId}/converse`; messages, system, inferenceConfig, toolConfig;
  output.message, stopReason, usage)
- ConverseStream: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html
  and .../API_runtime_ConverseStreamOutput.html (an `application/vnd.amazon.eventstream`
  body: messageStart, contentBlockStart, contentBlockDelta, contentBlockStop, messageStop,
  metadata, and exception events such as throttlingException or modelStreamErrorException)
- Tool use: https://docs.aws.amazon.com/bedrock/latest/userguide/tool-use-inference-call.html
  with .../APIReference/API_runtime_ToolConfiguration.html (`tools`, at least one, and
  `toolChoice`: auto, the default, | any | tool), API_runtime_ToolUseBlock.html
  (`{toolUseId, name, input}`), API_runtime_ToolResultBlock.html (`{toolUseId, content:
  [{text} | {json}], status?}` in a user turn) and, streamed, API_runtime_ToolUseBlockStart.html
  (contentBlockStart `start.toolUse {toolUseId, name}`) and API_runtime_ToolUseBlockDelta.html
  (contentBlockDelta `delta.toolUse.input`, a fragment of the input's JSON text)
- Images: .../API_runtime_ImageBlock.html and API_runtime_ImageSource.html (`{image:
  {format: png|jpeg|gif|webp, source: {bytes}}}`; over REST the bytes are base64 text)
- JSON output: Converse has no JSON-mode flag; a forced tool whose input schema is the
  wanted JSON is the documented way to get it (the ToolChoice reference and
  https://community.aws/content/2hWA16FSt2bIzKs0Z1fgJBwu589/generating-json-with-the-amazon-bedrock-converse-api).
  `outputConfig.textFormat` (https://docs.aws.amazon.com/bedrock/latest/userguide/structured-output.html)
  serves only a few newer models, so it is not used.
- Event stream framing: https://docs.aws.amazon.com/transcribe/latest/dg/event-stream.html
  (decoded here with botocore.eventstream.EventStreamBuffer)
- Errors: https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html
  (JSON `{"message"}` with the exception name in the `x-amzn-ErrorType` header)
- Health: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_ListFoundationModels.html
- Embeddings (InvokeModel, Titan and Cohere): providers/adapters/bedrock_embed.py

Not sent, because Converse has no field for them: `seed`, `presence_penalty`,
`frequency_penalty`, `logit_bias` and `user`; `parallel_tool_calls` (Converse cannot turn
parallel calls off, so the feature is not declared); an image's `detail`; a tool's
`strict` (strict tool use is refused by the models without it, while an ordinary tool
works on all); a tool result's `status` (OpenAI tool messages carry no error flag).

Credentials: explicit keys, `settings.aws_access_key_id` plus the secret access key as
the config's (encrypted) api_key or secret_ref; or, without them, the server's own AWS
chain (environment, shared config, container or instance role) via botocore, resolved
once per process and refreshed by botocore before expiry, for the tenants named in
AXONFLOW_AMBIENT_AWS_TENANTS only (refused when saved and when used, for any other).
Tenants cannot pick a profile. Every secret is registered with secrets.scrub().
Credentials, signing and event-stream decoding live in providers/adapters/aws.py.

botocore is optional (`pip install axonflow[bedrock]`); without it, building this
provider raises InvalidConfig.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import yarl

from axonflow_site.errors import InvalidConfig
from providers import secrets
from providers.adapters import aws, bedrock_embed
from providers.adapters.base import (
    CHAT,
    EMBEDDINGS,
    IMAGES,
    JSON_MODE,
    JSON_SCHEMA,
    STREAMING,
    TOOLS,
    Chunk,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    HealthProbe,
    ImagePart,
    MalformedResponse,
    Message,
    ProviderError,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    classify,
    invalid_setting,
    present,
    require_list,
    timed_probe,
    token_count,
)
from providers.adapters.http import BaseProvider, Call, check_setting_names, error_message, json_object

if TYPE_CHECKING:
    from providers.models import ProviderConfig

RUNTIME_URL = "https://bedrock-runtime.{region}.amazonaws.com"
CONTROL_URL = "https://bedrock.{region}.amazonaws.com"
CONVERSE = "/model/{model}/converse"
CONVERSE_STREAM = "/model/{model}/converse-stream"
LIST_MODELS = "/foundation-models?byOutputModality=TEXT"
SERVICE = "bedrock"  # the SigV4 signing name for both bedrock and bedrock-runtime hosts
EVENTSTREAM = "application/vnd.amazon.eventstream"
FEATURES = frozenset({CHAT, STREAMING, TOOLS, IMAGES, JSON_MODE, JSON_SCHEMA, EMBEDDINGS})
# Exception names (x-amzn-ErrorType, or :exception-type in a stream, lower camel case)
# that another provider could well succeed on.
RETRYABLE = {
    "throttlingexception", "serviceunavailableexception", "internalserverexception",
    "modelstreamerrorexception", "modelnotreadyexception", "modeltimeoutexception",
    "modelerrorexception", "serviceunavailable", "internalfailure",
}  # fmt: skip
FINAL = {"validationexception", "accessdeniedexception", "resourcenotfoundexception"}
# HTTP statuses the ConverseStreamOutput reference gives each in-stream exception.
STREAM_STATUS = {
    "throttlingexception": 429, "validationexception": 400, "serviceunavailableexception": 503,
    "internalserverexception": 500, "modelstreamerrorexception": 424,
}  # fmt: skip
STALE_CREDENTIALS = {"expiredtokenexception", "unrecognizedclientexception"}
# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseResponse.html
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
HEALTH_PROBES = ("list_models", "converse")
DEFAULT_EMBEDDING_MODEL = "amazon.titan-embed-text-v2:0"
# ImageBlock.format, by the media type of a data URL.
IMAGE_FORMATS = {
    "image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp",
}  # fmt: skip
# The tool that carries a JSON answer (response_format), unless the schema's own name fits.
JSON_TOOL = "json_response"
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # ToolSpecification.name
# ToolResultBlock.toolUseId allows [a-zA-Z0-9_-]{1,64}; ids minted elsewhere may not fit.
NOT_IN_TOOL_USE_ID = re.compile(r"[^a-zA-Z0-9_-]")
FREE_FORM_OBJECT = {"type": "object"}  # the input schema of JSON mode: any object


@dataclass(frozen=True, slots=True)
class Settings:
    """`config.settings` for bedrock: `aws_access_key_id` (with the secret as api_key),
    `health_probe` ("list_models", the default, or "converse": a one-token Converse
    call, for roles allowed to invoke models but not to list them) and
    `embedding_model` (a Titan Text Embeddings or Cohere Embed model id, for embeddings
    requests that name no model). There is no `profile`: the server's credential chain
    is the operator's, not a tenant's to pick."""

    aws_access_key_id: str = ""
    health_probe: str = "list_models"
    embedding_model: str = DEFAULT_EMBEDDING_MODEL

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        """Raises InvalidConfig naming the bad field (or a key it does not know)."""
        if "profile" in raw:
            raise InvalidConfig(
                "settings.profile is not supported: tenants cannot pick AWS profiles. Give "
                "settings.aws_access_key_id and the secret access key as the API key.",
                {"field": "settings", "setting": "profile"},
            )
        check_setting_names(raw, {f.name for f in fields(cls)})
        values = {f.name: raw.get(f.name, f.default) for f in fields(cls)}
        for name, value in values.items():
            if not isinstance(value, str):
                raise invalid_setting(f"settings.{name} must be a string.")
        if values["health_probe"] not in HEALTH_PROBES:
            raise invalid_setting("settings.health_probe must be list_models or converse.")
        if len(values["aws_access_key_id"]) > 128:
            raise invalid_setting("settings.aws_access_key_id must be at most 128 characters.")
        if bedrock_embed.family(values["embedding_model"]) is None:
            raise invalid_setting(
                "settings.embedding_model must be a Titan Text Embeddings (amazon.titan-embed-text-…) "
                "or Cohere Embed (cohere.embed-…) model id."
            )
        return cls(**values)


# --- the request ------------------------------------------------------------------------


def to_wire(req: CompletionRequest, provider: str = "bedrock") -> dict:
    """The Converse (and ConverseStream) body for `req`; the model id goes in the path.

    Consecutive turns of one role become one message with several content blocks:
    Converse rejects two user (or assistant) messages in a row, and tool results, which
    answer in a user turn, join the user's next words. Raises a retryable ProviderError
    for an image Converse cannot take (another provider may)."""
    messages, system = turns(req, provider)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    config = present(maxTokens=req.max_tokens, temperature=req.temperature, topP=req.top_p, stopSequences=req.stop)
    if config:
        body["inferenceConfig"] = config
    tools = tool_config(req)
    if tools:
        body["toolConfig"] = tools
    return body


def turns(req: CompletionRequest, provider: str) -> tuple[list[dict], list[dict]]:
    """(messages, system blocks): `req.system` and system-role messages go to `system`;
    every other role is "user" unless it is "assistant" (tool results included)."""
    system = [{"text": req.system}] if req.system else []
    messages: list[dict] = []
    for message in req.messages:
        if message.role == "system":
            system.append({"text": message.content})
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = content_blocks(message, provider)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    return messages, system


def content_blocks(message: Message, provider: str) -> list[dict]:
    """A message's ContentBlocks: a tool result, or its text and images in order then
    its tool calls. Empty texts are left out (Converse refuses blank text blocks) unless
    the message has nothing else."""
    if message.role == "tool":
        return [tool_result_block(message)]
    blocks: list[dict] = []
    for part in message.content_parts():
        if isinstance(part, ImagePart):
            blocks.append(image_block(part, provider))
        elif part.text:
            blocks.append({"text": part.text})
    for call in message.tool_calls or ():
        blocks.append({"toolUse": {"toolUseId": tool_use_id(call.id), "name": call.name, "input": call.input()}})
    return blocks or [{"text": message.content}]


def tool_use_id(raw: str | None) -> str:
    """A call id Converse accepts, the same for the toolUse and its toolResult."""
    return NOT_IN_TOOL_USE_ID.sub("_", raw or "")[:64] or "_"


def tool_result_block(message: Message) -> dict:
    """A tool message as a toolResult: JSON when its text is a JSON object (the json
    block takes an object, and tools often answer with one), else text."""
    try:
        value = json.loads(message.content)
    except ValueError:
        value = None
    content = [{"json": value}] if isinstance(value, dict) else [{"text": message.content}]
    return {"toolResult": {"toolUseId": tool_use_id(message.tool_call_id), "content": content}}


def image_block(part: ImagePart, provider: str) -> dict:
    """An ImageBlock from a data URL, its base64 payload sent as it came (REST takes the
    bytes base64-encoded). Converse cannot fetch URLs, so IMAGE_URLS is not declared."""
    try:
        media_type, data = part.data()
    except ValueError:
        raise ProviderError(provider, None, "Bedrock Converse takes images as data: URLs only", True) from None
    image_format = IMAGE_FORMATS.get(media_type.lower())
    if image_format is None:
        message = f"Bedrock Converse takes png, jpeg, gif or webp images, not {media_type[:40]}"
        raise ProviderError(provider, None, message, True)
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def tool_spec(tool: Tool) -> dict:
    spec = {"name": tool.name, **present(description=tool.description or None)}
    return {"toolSpec": {**spec, "inputSchema": {"json": tool.schema()}}}


def json_tool_name(req: CompletionRequest) -> str | None:
    """The name of the tool that carries the JSON answer, None without response_format:
    the schema's name when it is a valid tool name no client tool has, else JSON_TOOL
    (a client tool of that very name would be read as the answer)."""
    fmt = req.response_format
    if fmt is None:
        return None
    taken = {tool.name for tool in req.tools or ()}
    if fmt.type == "json_schema" and fmt.name and TOOL_NAME.fullmatch(fmt.name) and fmt.name not in taken:
        return fmt.name
    return JSON_TOOL


def json_tool_spec(fmt: ResponseFormat, name: str) -> dict:
    """The answer tool: its input schema is the wanted JSON's (OpenAI's json_schema is
    an object schema, as a tool input must be), any object for JSON mode."""
    schema = fmt.schema if fmt.type == "json_schema" and isinstance(fmt.schema, dict) else FREE_FORM_OBJECT
    description = fmt.description or "Give your answer as this tool's input."
    return {"toolSpec": {"name": name, "description": description, "inputSchema": {"json": schema}}}


def tool_config(req: CompletionRequest) -> dict | None:
    """The toolConfig for `req`, or None when it needs none.

    auto is ToolChoice's default and is never sent: only some models take a toolChoice
    at all (the ToolChoice reference). Converse has no "none", so tools are then not
    offered; but a conversation holding toolUse or toolResult blocks needs a toolConfig
    ("The toolConfig field must be defined when using toolUse and toolResult content
    blocks"), so it then declares the tools the history calls, and only those."""
    choice, json_tool = req.tool_choice, json_tool_name(req)
    offered = [] if choice is not None and choice.mode == "none" else list(req.tools or ())
    forced = choice.name if choice is not None and choice.mode == "function" and offered else None
    specs = [tool_spec(tool) for tool in offered]
    if json_tool and req.response_format is not None:
        # The model must answer through the JSON tool, or call one of the client's tools
        # when they are offered ("any": no text is generated either way).
        specs.append(json_tool_spec(req.response_format, json_tool))
        target = {"tool": {"name": forced}} if forced else {"any": {}} if offered else {"tool": {"name": json_tool}}
        return {"tools": specs, "toolChoice": target}
    if specs:
        if forced:
            return {"tools": specs, "toolChoice": {"tool": {"name": forced}}}
        required = choice is not None and choice.mode == "required"
        return {"tools": specs, "toolChoice": {"any": {}}} if required else {"tools": specs}
    history = history_tools(req)
    return {"tools": [tool_spec(tool) for tool in history]} if history else None


def history_tools(req: CompletionRequest) -> list[Tool]:
    """The tools earlier assistant turns called: the client's definition when it gave
    one, else the name with an open object schema."""
    defined = {tool.name: tool for tool in req.tools or ()}
    names = dict.fromkeys(call.name for m in req.messages for call in m.tool_calls or ())
    return [defined.get(name) or Tool(name) for name in names]


# --- the answer ------------------------------------------------------------------------------


def usage_from(raw: Any) -> Usage:
    raw = raw if isinstance(raw, dict) else {}
    prompt, completion = raw.get("inputTokens"), raw.get("outputTokens")
    return Usage(token_count(prompt, "inputTokens"), token_count(completion, "outputTokens"))


def stop_reason(raw: str | None, called: bool = True) -> str | None:
    """OpenAI's finish reason; tool_use is "stop" when only the JSON answer tool was used."""
    if raw == "tool_use" and not called:
        return "stop"
    return STOP_REASONS.get(raw, raw) if raw else None


def from_wire(
    body: Any, model: str = "", provider: str = "bedrock", json_tool: str | None = None
) -> CompletionResponse:
    """The normalized response for a Converse body (which names no model: pass it).

    toolUse blocks become tool calls (their input as JSON text), except a use of
    `json_tool`, whose input is the answer's text."""
    if not isinstance(body, dict):
        raise MalformedResponse(provider, "response is not a JSON object")
    message = (body.get("output") or {}).get("message") if isinstance(body.get("output"), dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise MalformedResponse(provider, "response has no output message")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message["content"]:
        if not isinstance(block, dict):
            continue
        texts.append(str(block.get("text") or ""))
        use = block.get("toolUse")
        if isinstance(use, dict):
            arguments = json.dumps(use.get("input", {}))
            if json_tool is not None and use.get("name") == json_tool:
                texts.append(arguments)
            else:
                calls.append(ToolCall(str(use.get("toolUseId", "")), str(use.get("name", "")), arguments))
    return CompletionResponse(
        content="".join(texts),
        model=model,
        finish_reason=stop_reason(body.get("stopReason"), bool(calls)),
        usage=usage_from(body.get("usage")),
        tool_calls=calls or None,
    )


def error_for_type(provider: str, status: int | None, error_type: str, message: str, headers=None) -> ProviderError:
    """Retryability from the AWS exception name first, then from the HTTP status."""
    name = error_type.split(":", 1)[0].strip()
    text = f"{name}: {message}" if name else message
    key = name.lower()
    if key in RETRYABLE or key in FINAL:
        error = classify(provider, status or 500, text, headers)
        error.status_code = status
        error.retryable = key in RETRYABLE
        return error
    if status is None:
        return ProviderError(provider, None, text, retryable=True)
    return classify(provider, status, text, headers)


class StreamBlocks:
    """The content blocks of one stream, by contentBlockIndex: text deltas pass through;
    a toolUse block is tool call k (tool blocks counted from 0), announced by its
    contentBlockStart and filled by input fragments, unless it is the JSON answer
    tool, whose fragments are the answer's text."""

    def __init__(self, model: str, provider: str, json_tool: str | None):
        self.model, self.provider, self.json_tool = model, provider, json_tool
        self.calls: dict[Any, int] = {}
        self.answers: set[Any] = set()

    def start(self, data: dict) -> Chunk | None:
        start = data.get("start")
        use = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(use, dict):
            return None
        block = data.get("contentBlockIndex", 0)
        if self.json_tool is not None and use.get("name") == self.json_tool:
            self.answers.add(block)
            return None
        index = self.calls[block] = len(self.calls)
        delta = ToolCallDelta(index, str(use.get("toolUseId", "")), str(use.get("name", "")), "")
        return Chunk(tool_calls=[delta], model=self.model)

    def delta(self, data: dict) -> Chunk | None:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            return None
        text = delta.get("text")
        if text:
            return Chunk(delta=str(text), model=self.model)
        use = delta.get("toolUse")
        fragment = use.get("input") if isinstance(use, dict) else None
        if not isinstance(fragment, str) or not fragment:
            return None  # reasoning, citations and empty fragments carry no answer
        block = data.get("contentBlockIndex", 0)
        if block in self.answers:
            return Chunk(delta=fragment, model=self.model)
        if block not in self.calls:
            raise MalformedResponse(self.provider, "tool input arrived before its contentBlockStart")
        return Chunk(tool_calls=[ToolCallDelta(self.calls[block], arguments=fragment)], model=self.model)


async def parse_stream(
    frames: AsyncIterator[aws.Frame], model: str = "", provider: str = "bedrock", json_tool: str | None = None
) -> AsyncIterator[Chunk]:
    """Chunks from decoded event-stream frames (headers, payload); `json_tool` as for
    from_wire.

    messageStop carries the stop reason and the metadata event after it the usage,
    so both go out on one final chunk. Exception frames raise ProviderErrors; a
    stream that ends before messageStop raises MalformedResponse."""
    blocks = StreamBlocks(model, provider, json_tool)
    reason: str | None = None
    done = False
    async for headers, payload in frames:
        kind = headers.get(":message-type", "event")
        if kind == "error":
            raise ProviderError(provider, None, f"{headers.get(':error-code')}: {headers.get(':error-message')}", True)
        data = json_object(payload or b"{}", provider, "stream event payload")
        if kind == "exception":
            name = str(headers.get(":exception-type", ""))
            raise error_for_type(provider, STREAM_STATUS.get(name.lower()), name, str(data.get("message", "")))
        event = headers.get(":event-type")
        chunk = None
        if event == "contentBlockStart":
            chunk = blocks.start(data)
        elif event == "contentBlockDelta":
            chunk = blocks.delta(data)
        elif event == "messageStop":
            reason, done = stop_reason(data.get("stopReason"), bool(blocks.calls)) or "stop", True
        elif event == "metadata":
            if not done:
                raise MalformedResponse(provider, "metadata arrived before messageStop")
            yield Chunk(finish_reason=reason, usage=usage_from(data.get("usage")), model=model)
            return
        if chunk is not None:
            yield chunk
    if not done:
        raise MalformedResponse(provider, "stream ended before messageStop")
    yield Chunk(finish_reason=reason, model=model)


class BedrockCall(Call):
    """Reads the exception name from x-amzn-ErrorType (or the body's __type)."""

    def error_for(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        error_type = headers.get("x-amzn-ErrorType", "")
        if not error_type:
            try:
                error_type = str(json.loads(body).get("__type", "")).rsplit("#", 1)[-1]
            except (ValueError, AttributeError):
                error_type = ""
        if error_type.split(":", 1)[0].lower() in STALE_CREDENTIALS:
            aws.forget_credentials()
        return error_for_type(self.provider, status, error_type, error_message(body), headers)


class BedrockProvider(BaseProvider):
    """Adapter for Bedrock's Converse API in one AWS region."""

    type = "bedrock"
    features = FEATURES
    settings_class = Settings
    call_class = BedrockCall

    @classmethod
    def check_tenant(cls, settings: Settings, tenant: str) -> None:
        """When saved (registry.check_settings): without explicit keys, the tenant must
        be one the operator lets use the server's credentials. Raises InvalidConfig."""
        if not settings.aws_access_key_id:
            aws.check_ambient(tenant)

    def __init__(self, config: ProviderConfig):
        if not aws.HAVE_BOTOCORE:
            raise InvalidConfig(
                "The bedrock provider needs botocore: pip install 'axonflow[bedrock]'.", {"provider_type": "bedrock"}
            )
        super().__init__(config)
        self.region = config.region or "us-east-1"
        self.base_url = self.base_url_or(RUNTIME_URL.format(region=self.region))
        self.control_url = self.base_url_or(CONTROL_URL.format(region=self.region))

    async def _send(self, call: Call, method: str, url: str, body: dict | None, accept: str):
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = "application/json"
        key_id = self.settings.aws_access_key_id
        secret = self.api_key if key_id else ""
        tenant = "" if key_id else secrets.tenant_slug(self.config)
        credentials = await aws.frozen_credentials(key_id, secret, self.name, tenant)
        signed = aws.sign(method, url, data, headers, credentials, SERVICE, self.region)
        # encoded=True: send the path exactly as signed (yarl would decode %3A to ':').
        return await call.open(method, yarl.URL(url, encoded=True), signed, data=data if body is not None else None)

    def _model_url(self, template: str, model: str) -> str:
        # Model ids and ARNs contain ':' and '/', percent-encoded as the AWS SDKs do.
        return self.base_url + template.format(model=quote(model, safe=""))

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        model = self.model_for(request)
        call = self._call()
        url = self._model_url(CONVERSE, model)
        response = await self._send(call, "POST", url, to_wire(request, self.name), "application/json")
        return from_wire(await call.read_json(response), model, self.name, json_tool_name(request))

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        model = self.model_for(request)
        call = self._call()
        url = self._model_url(CONVERSE_STREAM, model)
        response = await self._send(call, "POST", url, to_wire(request, self.name), EVENTSTREAM)
        frames = aws.decode_frames(call.raw_chunks(response), self.name)
        async for chunk in parse_stream(frames, model, self.name, json_tool_name(request)):
            yield chunk

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """InvokeModel with the Titan or Cohere body (bedrock_embed.py), all calls under
        one total deadline. Raises ProviderError."""
        model = request.model or self.settings.embedding_model
        call = self._call()
        url = self._model_url(bedrock_embed.INVOKE, model)

        async def post(body: dict) -> Any:
            return await call.read_json(await self._send(call, "POST", url, body, "application/json"))

        return await bedrock_embed.embed(request, model, post, self.name)

    async def health_check(self) -> HealthProbe:
        """A signed ListFoundationModels call (or a one-token Converse, see Settings)."""
        if self.settings.health_probe == "converse":
            return await timed_probe(lambda: self.complete(CompletionRequest([Message("user", "ping")], max_tokens=1)))
        return await timed_probe(self._list_models)

    async def _list_models(self) -> None:
        call = self._call()
        response = await self._send(call, "GET", self.control_url + LIST_MODELS, None, "application/json")
        message = "the model list is not a JSON object"
        require_list(await call.read_json(response), "modelSummaries", self.name, message, optional=True)
