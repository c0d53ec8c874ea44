"""Amazon Bedrock wire format for the fake upstream: Converse (JSON), ConverseStream (the
binary `application/vnd.amazon.eventstream` framing, encoded here), InvokeModel for the
Titan and Cohere embedding models, and ListFoundationModels, as the Bedrock API
reference describes them:

- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html
- https://docs.aws.amazon.com/bedrock/latest/userguide/tool-use-inference-call.html (toolConfig,
  toolUse and toolResult blocks; a streamed toolUse is a contentBlockStart, then its
  input's JSON text in contentBlockDelta fragments)
- https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-embed-text.html
- https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-embed-v3.html (and -v4)
- https://docs.aws.amazon.com/transcribe/latest/dg/event-stream.html (frame layout)

Tool calls, tool-result replies and embeddings follow synth.py. Converse has no JSON mode:
clients force a tool whose input schema is the JSON wanted, so JSON comes back as that
tool's input; a free-form object schema (no properties) gets synth's JSON-mode object.

Like AWS it answers 403 to requests without a SigV4 `Authorization` header and
`X-Amz-Date`. For the access keys in TEST_CREDENTIALS it also recomputes the signature
(with botocore, when installed) over the raw path, signed headers and body, and
answers 403 InvalidSignatureException when it does not match; other keys are accepted
unverified, since the fake cannot know their secrets.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from typing import Any

from aiohttp import web

from providers.fake_upstream import synth
from providers.fake_upstream.core import FakeRequest, Route, checked, count_tokens, generate, last_text, text_of

BASE_PATH = ""
EVENTSTREAM = "application/vnd.amazon.eventstream"
# Test-only credentials the fake verifies signatures for (never real ones).
TEST_CREDENTIALS = {"AKIAFAKEUPSTREAM7EXA": "fakeSecretKeyForTheFakeUpstream/0123456789"}
MODELS = ("anthropic.claude-3-5-sonnet-20240620-v1:0", "amazon.nova-lite-v1:0", "meta.llama3-1-8b-instruct-v1:0")
# https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html
ERROR_TYPES = {
    400: "ValidationException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
REQUEST_FIELDS = {
    "messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
    "promptVariables", "additionalModelResponseFieldPaths", "requestMetadata", "performanceConfig",
}  # fmt: skip
INFERENCE_FIELDS = {"maxTokens", "temperature", "topP", "stopSequences"}
BLOCK_KINDS = {"user": {"text", "image", "toolResult"}, "assistant": {"text", "image", "toolUse"}}
IMAGE_FORMATS = {"png", "jpeg", "gif", "webp"}
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
TOOL_CONFIG_NEEDED = "The toolConfig field must be defined when using toolUse and toolResult content blocks."
TITAN_FIELDS = {"inputText", "dimensions", "normalize", "embeddingTypes"}
TITAN_DIMENSIONS = (256, 512, 1024)
COHERE_FIELDS = {"texts", "input_type", "truncate", "embedding_types", "images"}
COHERE_V4_FIELDS = COHERE_FIELDS | {"inputs", "output_dimension", "max_tokens"}
COHERE_INPUT_TYPES = {"search_document", "search_query", "classification", "clustering", "image"}
COHERE_DIMENSIONS = (256, 512, 1024, 1536)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


def error_body(status: int, message: str) -> dict:
    # restJson1 errors name their type in x-amzn-ErrorType; the body's __type says the
    # same for responses built centrally, which cannot add that header.
    return {"message": message, "__type": ERROR_TYPES.get(status, "InternalServerException")}


def _error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status, headers={"x-amzn-ErrorType": error_type})


# --- event stream framing ----------------------------------------------------------------


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", 7, len(raw_value)) + raw_value


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, CRC32), string
    headers (value type 7), payload, and the CRC32 of everything before it."""
    raw_headers = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + raw_headers + payload
    return message + struct.pack("!I", binascii.crc32(message))


def event_frame(event_type: str, data: dict) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    # Bedrock pads events with a "p" field so lengths do not leak the text.
    return encode_frame(headers, json.dumps({**data, "p": "abcdefgh"}, separators=(",", ":")).encode())


def exception_frame(exception_type: str, message: str) -> bytes:
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return encode_frame(headers, json.dumps({"message": message}).encode())


# --- authentication ------------------------------------------------------------------------


def _signature_matches(req: FakeRequest, auth: re.Match[str]) -> bool | None:
    """True/False for TEST_CREDENTIALS keys, None when the key is unknown or botocore missing."""
    secret = TEST_CREDENTIALS.get(auth["key"])
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError:
        return None
    if secret is None:
        return None
    signed = auth["signed"].split(";")
    headers = {name: req.headers.get(name, "") for name in signed}
    request = AWSRequest(method=req.http.method, url=f"http://{req.headers.get('host')}{req.http.raw_path}")
    request.data = req.raw
    for name, value in headers.items():
        request.headers[name] = value
    request.context["timestamp"] = req.headers.get("x-amz-date", "")
    token = req.headers.get("x-amz-security-token")
    signer = SigV4Auth(Credentials(auth["key"], secret, token), auth["service"], auth["region"])
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return expected == auth["signature"]


def _unauthorized(req: FakeRequest) -> web.Response | None:
    header = req.headers.get("Authorization", "")
    auth = _AUTH.match(header)
    if not header or not req.headers.get("X-Amz-Date"):
        return _error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    if auth is None or "x-amz-date" not in auth["signed"].split(";") or "host" not in auth["signed"].split(";"):
        message = "Authorization header requires Credential, SignedHeaders (with host and x-amz-date) and Signature."
        return _error(403, "IncompleteSignatureException", message)
    if auth["service"] != "bedrock":
        return _error(403, "InvalidSignatureException", "Credential should be scoped to correct service: 'bedrock'.")
    if _signature_matches(req, auth) is False:
        return _error(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
        )
    return None


# --- Converse ------------------------------------------------------------------------------


def _check(req: FakeRequest) -> web.Response | None:
    """SigV4 first, then the body as the Converse API validates it."""
    problem = _unauthorized(req)
    if problem is not None:
        return problem
    body = req.body

    def invalid(message: str) -> web.Response:
        return _error(400, "ValidationException", message)

    if not isinstance(body, dict):
        return invalid("Malformed input request, please reformat your input and try again.")
    unknown = sorted(set(body) - REQUEST_FIELDS) + sorted(set(body.get("inferenceConfig") or {}) - INFERENCE_FIELDS)
    if unknown:
        return invalid(f"Malformed input request: extraneous key [{unknown[0]}] is not permitted.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return invalid("The messages field is required and must not be empty.")
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if any(role not in ("user", "assistant") for role in roles):
        return invalid("Value at 'messages.role' failed to satisfy constraint: Member must be user or assistant.")
    if roles[0] != "user":
        return invalid("A conversation must start with a user message.")
    if any(a == b for a, b in zip(roles, roles[1:])):
        return invalid("A conversation must alternate between user and assistant roles.")
    problem = _blocks_problem(messages) or _tool_config_problem(body)
    return invalid(problem) if problem else None


def _blocks_problem(messages: list[dict]) -> str | None:
    """Why the content blocks are refused: each is a union of one known member valid for
    its role, and every toolUse is answered by a toolResult in the next turn (and only it)."""
    for message in messages:
        blocks = message.get("content")
        if not isinstance(blocks, list) or not blocks:
            return "The content field in the Message object is empty."
        for block in blocks:
            if not isinstance(block, dict) or len(block) != 1 or not set(block) <= BLOCK_KINDS[message["role"]]:
                return f"Malformed input request: a {message['role']} content block must be one of " + ", ".join(
                    sorted(BLOCK_KINDS[message["role"]])
                )
            problem = _block_problem(*next(iter(block.items())))
            if problem:
                return problem
    opening = {"role": "assistant", "content": []}  # nothing to answer before the first turn
    for asked, answered in zip([opening, *messages], messages):
        uses = _ids(asked, "toolUse")
        if asked["role"] == "assistant" and uses != _ids(answered, "toolResult"):
            return (
                "Expected toolResult blocks for toolUse ids " + ", ".join(sorted(uses)) + " in the next message."
                if uses
                else "A toolResult block's toolUseId must match a toolUse block in the previous message."
            )
    return None


def _ids(message: dict, kind: str) -> set[str]:
    return {b[kind].get("toolUseId") for b in message["content"] if kind in b}


def _block_problem(kind: str, value: Any) -> str | None:
    if kind == "text":
        return None if isinstance(value, str) else "A text block must be a string."
    if kind == "image":
        value = value if isinstance(value, dict) else {}
        source = value.get("source")
        if value.get("format") not in IMAGE_FORMATS or not isinstance(source, dict) or set(source) != {"bytes"}:
            return "An image block needs a format (png, jpeg, gif, webp) and source.bytes."
        try:
            return None if base64.b64decode(source["bytes"], validate=True) else "The image bytes are empty."
        except (binascii.Error, TypeError, ValueError):
            return "Malformed input request: image source bytes must be base64-encoded."
    if not isinstance(value, dict) or not TOOL_USE_ID.fullmatch(str(value.get("toolUseId", ""))):
        return f"A {kind} block needs a toolUseId matching [a-zA-Z0-9_-]{{1,64}}."
    if kind == "toolUse":
        if not TOOL_NAME.fullmatch(str(value.get("name", ""))) or not isinstance(value.get("input"), dict):
            return "A toolUse block needs a name and an input object."
        return None
    content = value.get("content")
    if not isinstance(content, list) or not all(
        isinstance(c, dict) and set(c) in ({"text"}, {"json"}) for c in content
    ):
        return "A toolResult's content must be a list of text or json blocks."
    return None if value.get("status", "success") in ("success", "error") else "toolResult.status is success or error."


def _tool_config_problem(body: dict) -> str | None:
    config = body.get("toolConfig")
    if config is None:
        used = any(_ids(m, "toolUse") or _ids(m, "toolResult") for m in body["messages"])
        return TOOL_CONFIG_NEEDED if used else None
    tools = config.get("tools") if isinstance(config, dict) else None
    if not isinstance(tools, list) or not tools or set(config) - {"tools", "toolChoice"}:
        return "toolConfig.tools must hold at least one tool."
    names = []
    for tool in tools:
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        schema = (spec.get("inputSchema") or {}).get("json") if isinstance(spec, dict) else None
        if not isinstance(schema, dict) or set(spec) - {"name", "description", "inputSchema"}:
            return "Each tool needs a toolSpec with a name and inputSchema.json."
        if not TOOL_NAME.fullmatch(str(spec.get("name", ""))) or spec.get("description", "x") == "":
            return "toolSpec.name must match [a-zA-Z0-9_-]{1,64} and a description must not be empty."
        names.append(spec["name"])
    choice = config.get("toolChoice", {"auto": {}})
    if not isinstance(choice, dict) or len(choice) != 1 or not set(choice) <= {"auto", "any", "tool"}:
        return "toolConfig.toolChoice must be one of auto, any or tool."
    if "tool" in choice and not (isinstance(choice["tool"], dict) and choice["tool"].get("name") in names):
        return "toolConfig.toolChoice.tool.name must name one of the tools."
    return None


def _tool_result_text(message: dict) -> str | None:
    """The text of the last toolResult of a user turn (json blocks as JSON), or None."""
    results = [b["toolResult"] for b in message["content"] if "toolResult" in b]
    if message["role"] != "user" or not results:
        return None
    parts = results[-1]["content"]
    return "".join(c["text"] if "text" in c else json.dumps(c["json"]) for c in parts)


def _arguments(schema: Any, prompt: str) -> dict:
    """A toolUse input for `schema`; a free-form object (the JSON-mode tool) gets synth's
    JSON-mode object, as a model asked for "some JSON object" would answer one."""
    if isinstance(schema, dict) and schema.get("type", "object") == "object" and "properties" not in schema:
        return json.loads(synth.json_reply(prompt))
    return synth.tool_arguments(schema, prompt)


def _tool_uses(body: dict) -> list[dict]:
    """The toolUse blocks the fake model answers with (synth.py): none without tools or
    after a tool result; Converse cannot forbid parallel calls."""
    config = body.get("toolConfig") or {}
    schemas = {t["toolSpec"]["name"]: t["toolSpec"]["inputSchema"]["json"] for t in config.get("tools", [])}
    if not schemas or _tool_result_text(body["messages"][-1]) is not None:
        return []
    forced = (config.get("toolChoice", {}).get("tool") or {}).get("name")
    prompt = last_text(body["messages"])
    return [
        {
            "toolUseId": synth.call_id("tooluse_", name, i, prompt),
            "name": name,
            "input": _arguments(schemas[name], prompt),
        }
        for i, name in enumerate(synth.pick_tools(list(schemas), forced, prompt))
    ]


def _usage(req: FakeRequest, body: dict, completion: str) -> dict:
    system = text_of(body.get("system") or [])
    prompt = count_tokens(system + "\n" + "\n".join(text_of(m["content"]) for m in body["messages"]))
    prompt, completion_tokens, total = req.counts(prompt, count_tokens(completion))
    return {"inputTokens": prompt, "outputTokens": completion_tokens, "totalTokens": total}


def _answer(req: FakeRequest, body: dict) -> tuple[list[str], str, dict]:
    """(reply pieces, stopReason, usage) honouring inferenceConfig maxTokens and stopSequences."""
    messages = body["messages"]
    config = body.get("inferenceConfig") or {}
    result = _tool_result_text(messages[-1])
    text = synth.tool_result_reply(result) if result is not None else req.reply_for(last_text(messages))
    reply = generate(text, config.get("stopSequences"), config.get("maxTokens"))
    reason = "max_tokens" if reply.truncated else "stop_sequence" if reply.stop else "end_turn"
    return reply.pieces, reason, _usage(req, body, "".join(reply.pieces))


def _fragments(text: str) -> list[str]:
    """`text` in three pieces at most, two at least (as a toolUse input streams)."""
    size = max(1, -(-len(text) // 3))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


@checked(_check)
async def converse(req: FakeRequest) -> web.StreamResponse:
    uses = _tool_uses(req.body)
    if uses:
        content = [{"toolUse": use} for use in uses]
        reason, usage = "tool_use", _usage(req, req.body, "".join(json.dumps(u["input"]) for u in uses))
    else:
        pieces, reason, usage = _answer(req, req.body)
        content = [{"text": "".join(pieces)}]
    message = {"role": "assistant", "content": content}
    return await req.json(
        {"output": {"message": message}, "stopReason": reason, "usage": usage, "metrics": {"latencyMs": 42}}
    )


def _tool_use_frames(uses: list[dict]) -> list[bytes]:
    frames = []
    for index, use in enumerate(uses):
        start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
        frames.append(event_frame("contentBlockStart", {"contentBlockIndex": index, "start": start}))
        for fragment in _fragments(json.dumps(use["input"])):
            delta = {"toolUse": {"input": fragment}}
            frames.append(event_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
        frames.append(event_frame("contentBlockStop", {"contentBlockIndex": index}))
    return frames


@checked(_check)
async def converse_stream(req: FakeRequest) -> web.StreamResponse:
    uses = _tool_uses(req.body)
    frames = [event_frame("messageStart", {"role": "assistant"})]
    if uses:
        reason, usage = "tool_use", _usage(req, req.body, "".join(json.dumps(u["input"]) for u in uses))
        frames += _tool_use_frames(uses)
    else:
        pieces, reason, usage = _answer(req, req.body)
        frames += [event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in pieces]
        frames.append(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
    frames.append(event_frame("messageStop", {"stopReason": reason}))
    frames.append(event_frame("metadata", {"usage": usage, "metrics": {"latencyMs": 42}}))
    if req.failure == "stream_error":
        # The generic helper frames text; an in-band AWS exception is a binary frame.
        cut = req.behaviour.cut_after
        frames = frames[:cut] + [exception_frame("modelStreamErrorException", "The model stream failed.")]
        req.failure = None
    return await req.raw_stream(frames, EVENTSTREAM)


# --- InvokeModel: embeddings -----------------------------------------------------------------


def _titan_problem(model: str, body: dict) -> str | None:
    allowed = TITAN_FIELDS if "text-v2" in model else {"inputText"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        return f"Malformed input request: extraneous key [{unknown[0]}] is not permitted."
    if not isinstance(body.get("inputText"), str) or not body["inputText"]:
        return "Malformed input request: inputText must be a non-empty string."
    if body.get("dimensions", 1024) not in TITAN_DIMENSIONS:
        return "Malformed input request: dimensions must be one of 256, 512, 1024."
    return None if isinstance(body.get("normalize", True), bool) else "normalize must be a boolean."


def _cohere_problem(model: str, body: dict) -> str | None:
    unknown = sorted(set(body) - (COHERE_V4_FIELDS if "embed-v4" in model else COHERE_FIELDS))
    if unknown:
        return f"Malformed input request: extraneous key [{unknown[0]}] is not permitted."
    if body.get("input_type") not in COHERE_INPUT_TYPES:
        return "Malformed input request: input_type is required (search_document, search_query, ...)."
    texts = body.get("texts")
    if not isinstance(texts, list) or len(texts) > 96 or not all(isinstance(t, str) for t in texts):
        return "Malformed input request: texts must be a list of at most 96 strings."
    return None if body.get("output_dimension", 256) in COHERE_DIMENSIONS else "output_dimension is not valid."


def _invoke_check(req: FakeRequest) -> web.Response | None:
    problem = _unauthorized(req)
    if problem is not None:
        return problem
    model = req.params["model"]
    if not isinstance(req.body, dict):
        return _error(400, "ValidationException", "Malformed input request, please reformat your input and try again.")
    if "titan-embed" in model:
        problem = _titan_problem(model, req.body)
    elif "cohere.embed" in model:
        problem = _cohere_problem(model, req.body)
    else:
        problem = f"The fake upstream serves InvokeModel for Titan and Cohere embedding models, not {model}."
    return _error(400, "ValidationException", problem) if problem else None


@checked(_invoke_check)
async def invoke(req: FakeRequest) -> web.StreamResponse:
    body, model = req.body, req.params["model"]
    if "titan-embed" in model:
        vector = synth.embedding(body["inputText"], body.get("dimensions"))
        tokens, _, _ = req.counts(count_tokens(body["inputText"]), 0)
        answer = {"embedding": vector, "inputTextTokenCount": tokens, "embeddingsByType": {"float": vector}}
        return await req.json(answer)
    vectors = [synth.embedding(text, body.get("output_dimension")) for text in body["texts"]]
    by_type = "embed-v4" in model or "embedding_types" in body
    return await req.json(
        {
            "id": f"{binascii.crc32(req.raw):08x}-fake",
            "embeddings": {"float": vectors} if by_type else vectors,
            "response_type": "embeddings_by_type" if by_type else "embeddings_floats",
            "texts": body["texts"],
        }
    )


@checked(_unauthorized)
async def foundation_models(req: FakeRequest) -> web.StreamResponse:
    summaries = [
        {
            "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}",
            "modelId": model_id,
            "modelName": model_id.split(".", 1)[1],
            "providerName": model_id.split(".", 1)[0].title(),
            "inputModalities": ["TEXT"],
            "outputModalities": ["TEXT"],
            "responseStreamingSupported": True,
            "inferenceTypesSupported": ["ON_DEMAND"],
            "modelLifecycle": {"status": "ACTIVE"},
        }
        for model_id in MODELS
    ]
    return await req.json({"modelSummaries": summaries})


MODEL = r"/model/(?P<model>.+)"
ROUTES = [
    Route("POST", re.compile(MODEL + "/converse"), converse, kind="chat"),
    Route("POST", re.compile(MODEL + "/converse-stream"), converse_stream, kind="chat"),
    Route("POST", re.compile(MODEL + "/invoke"), invoke, kind="embeddings"),
    Route("GET", "/foundation-models", foundation_models, kind="probe"),
]
