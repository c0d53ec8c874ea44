"""Amazon Bedrock through the Converse API, signed with SigV4 by botocore.

- Converse: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
  (`POST /model/{modelId}/converse`; messages, system, inferenceConfig, toolConfig;
  output.message, stopReason, usage)
- ConverseStream: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html
  and .../API_runtime_ConverseStreamOutput.html (an `application/vnd.amazon.eventstream`
  body: messageStart, contentBlockStart, contentBlockDelta, contentBlockStop, messageStop,
  metadata, and exception events such as throttlingException or modelStreamErrorException)
- Tool use, answered: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ToolUseBlock.html
  (`{toolUseId, name, input}`) and, streamed, API_runtime_ToolUseBlockStart.html
  (contentBlockStart `start.toolUse {toolUseId, name}`) and API_runtime_ToolUseBlockDelta.html
  (contentBlockDelta `delta.toolUse.input`, a fragment of the input's JSON text); a use of
  the JSON answer tool is the answer's text
- The request (turns, tools, tool results, images, the JSON answer tool):
  providers/adapters/bedrock_converse.py
- Event stream framing: https://docs.aws.amazon.com/transcribe/latest/dg/event-stream.html
  (decoded here with botocore.eventstream.EventStreamBuffer)
- Errors: https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html
  (JSON `{"message"}` with the exception name in the `x-amzn-ErrorType` header)
- Health: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_ListFoundationModels.html
- Embeddings (InvokeModel, Titan and Cohere): providers/adapters/bedrock_embed.py

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
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import yarl

from axonflow_site.errors import InvalidConfig
from providers import secrets
from providers.adapters import aws, bedrock_converse, bedrock_embed
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
    MalformedResponse,
    Message,
    ProviderError,
    ToolCall,
    ToolCallDelta,
    Usage,
    classify,
    invalid_setting,
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
# AccessDeniedException (403) is not final: the provider's credentials or model access,
# not the request, are at fault, so another provider may answer (SPEC §2 rule 4).
FINAL = {"validationexception", "resourcenotfoundexception"}
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
            # Required by ContentBlockDeltaEvent; skipping it would shorten the answer.
            raise MalformedResponse(self.provider, "contentBlockDelta event has no delta")
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
        response = await self._send(call, "POST", url, bedrock_converse.to_wire(request, self.name), "application/json")
        return from_wire(await call.read_json(response), model, self.name, bedrock_converse.json_tool_name(request))

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        model = self.model_for(request)
        call = self._call()
        url = self._model_url(CONVERSE_STREAM, model)
        response = await self._send(call, "POST", url, bedrock_converse.to_wire(request, self.name), EVENTSTREAM)
        frames = aws.decode_frames(call.raw_chunks(response), self.name)
        async for chunk in parse_stream(frames, model, self.name, bedrock_converse.json_tool_name(request)):
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
