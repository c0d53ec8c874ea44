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

Request bodies are validated as the API does by bedrock_validation.py. Tool calls,
tool-result replies and embeddings follow synth.py. Converse has no JSON mode:
clients force a tool whose input schema is the JSON wanted, so JSON comes back as that
tool's input; an open object schema (no properties) gets synth's JSON-mode object
(synth.json_tool_input).

Like AWS it answers 403 to requests without a SigV4 `Authorization` header and
`X-Amz-Date`. For the access keys in TEST_CREDENTIALS it also recomputes the signature
(with botocore, when installed) over the raw path, signed headers and body, and
answers 403 InvalidSignatureException when it does not match; other keys are accepted
unverified, since the fake cannot know their secrets.
"""

from __future__ import annotations

import binascii
import json
import re
import struct

from aiohttp import web

from providers.fake_upstream import bedrock_validation, synth
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
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


def error_body(status: int, message: str) -> dict:
    # restJson1 errors name their type in x-amzn-ErrorType; the body's __type says the
    # same for responses built centrally, which cannot add that header.
    return {"message": message, "__type": ERROR_TYPES.get(status, "InternalServerException")}


# What "missing_fields" drops: Converse's `output`, a contentBlockDelta's `delta`, the
# embedding models' vectors and the model list (each required by its reference).
REQUIRED_FIELDS = frozenset({"output", "delta", "embedding", "embeddingsByType", "embeddings", "modelSummaries"})


def is_end(event: str | None, data: object) -> bool:
    # A ConverseStream ends with messageStop (the stopReason) and then metadata (usage)
    # (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStreamOutput.html).
    return event in ("messageStop", "metadata")


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
    message = bedrock_validation.converse_problem(req.body)
    return _error(400, "ValidationException", message) if message else None


def _tool_result_text(message: dict) -> str | None:
    """The text of the last toolResult of a user turn (json blocks as JSON), or None."""
    results = [b["toolResult"] for b in message["content"] if "toolResult" in b]
    if message["role"] != "user" or not results:
        return None
    parts = results[-1]["content"]
    return "".join(c["text"] if "text" in c else json.dumps(c["json"]) for c in parts)


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
            "input": synth.json_tool_input(schemas[name], prompt),
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


def _tool_use_events(uses: list[dict]) -> list[tuple[str, dict]]:
    events = []
    for index, use in enumerate(uses):
        start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
        events.append(("contentBlockStart", {"contentBlockIndex": index, "start": start}))
        for fragment in _fragments(json.dumps(use["input"])):
            delta = {"toolUse": {"input": fragment}}
            events.append(("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
    return events


@checked(_check)
async def converse_stream(req: FakeRequest) -> web.StreamResponse:
    uses = _tool_uses(req.body)
    events = [("messageStart", {"role": "assistant"})]
    if uses:
        reason, usage = "tool_use", _usage(req, req.body, "".join(json.dumps(u["input"]) for u in uses))
        events += _tool_use_events(uses)
    else:
        pieces, reason, usage = _answer(req, req.body)
        events += [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in pieces]
        events.append(("contentBlockStop", {"contentBlockIndex": 0}))
    events.append(("messageStop", {"stopReason": reason}))
    events.append(("metadata", {"usage": usage, "metrics": {"latencyMs": 42}}))
    # The binary framing is built here, so missing_fields and no_end apply before it.
    frames = [event_frame(name, data) for name, data in req.damage(events)]
    if req.failure == "stream_error":
        # The generic helper frames text; an in-band AWS exception is a binary frame.
        cut = req.behaviour.cut_after
        frames = frames[:cut] + [exception_frame("modelStreamErrorException", "The model stream failed.")]
        req.failure = None
    return await req.raw_stream(frames, EVENTSTREAM)


# --- InvokeModel: embeddings -----------------------------------------------------------------


def _invoke_check(req: FakeRequest) -> web.Response | None:
    """SigV4 first, then the body as the model's InvokeModel schema validates it."""
    problem = _unauthorized(req)
    if problem is not None:
        return problem
    message = bedrock_validation.invoke_problem(req.params["model"], req.body)
    return _error(400, "ValidationException", message) if message else None


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
