"""What the fake Gemini refuses, as the live API validates a request body: unknown fields
(in the request, generationConfig, parts, function declarations and their schemas), roles
other than user/model, a part holding two kinds of data or bytes that are not base64, an
OBJECT parameter schema without properties, and embedding requests that name another
model. Each check returns Google's error message, or None; gemini.py answers it with a 400
INVALID_ARGUMENT.

- https://ai.google.dev/api/generate-content#request-body (GenerateContentRequest,
  GenerationConfig) and https://ai.google.dev/api/caching#Content (Content, Part)
- https://ai.google.dev/api/caching#Tool (FunctionDeclaration, FunctionCallingConfig) and
  https://ai.google.dev/api/caching#Schema
- https://ai.google.dev/api/embeddings (EmbedContentRequest, BatchEmbedContentsRequest)
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

MAX_EMBED_BATCH = 100
REQUEST_FIELDS = {
    "contents", "systemInstruction", "system_instruction", "generationConfig", "generation_config",
    "safetySettings", "safety_settings", "tools", "toolConfig", "tool_config", "cachedContent",
    "cached_content", "model", "serviceTier", "service_tier", "store",
}  # fmt: skip
CONFIG_FIELDS = {
    "maxOutputTokens", "temperature", "topP", "topK", "stopSequences", "candidateCount", "seed",
    "responseMimeType", "responseSchema", "responseJsonSchema", "presencePenalty", "frequencyPenalty",
    "responseLogprobs", "logprobs", "thinkingConfig", "responseModalities", "mediaResolution",
}  # fmt: skip
PART_DATA = {
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
}
PART_FIELDS = PART_DATA | {"thought", "thoughtSignature", "videoMetadata", "mediaResolution", "partMetadata"}
DECLARATION_FIELDS = {"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema"}
SCHEMA_FIELDS = {
    "type", "format", "title", "description", "nullable", "enum", "required", "properties", "items", "anyOf",
    "minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties", "minimum", "maximum",
    "pattern", "example", "propertyOrdering",
}  # fmt: skip
SCHEMA_TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
CALLING_MODES = {"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"}
EMBED_FIELDS = {"model", "content", "taskType", "title", "outputDimensionality", "embedContentConfig"}


def _unknown(names: Any, known: set[str], where: str) -> str | None:
    extra = sorted(set(names) - known)
    if not extra:
        return None
    return f"Invalid JSON payload received. Unknown name \"{extra[0]}\" at '{where}': Cannot find field."


def _is_bytes(value: Any) -> bool:
    """Whether `value` is base64, standard or URL-safe, as proto JSON reads TYPE_BYTES."""
    try:
        base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (AttributeError, binascii.Error, ValueError):
        return False
    return True


def _object_with(value: Any, name: str, field: str) -> bool:
    return isinstance(value, dict) and isinstance(value.get(name), str) and isinstance(value.get(field, {}), dict)


PART_RULES = {  # field: (valid, what the API says otherwise)
    "thoughtSignature": (_is_bytes, "thought_signature' (TYPE_BYTES), Base64 decoding failed"),
    "inlineData": (
        lambda v: isinstance(v, dict) and bool(v.get("mimeType")) and _is_bytes(v.get("data")),
        "inline_data': mimeType and base64 data are required",
    ),
    "functionCall": (lambda v: _object_with(v, "name", "args"), "function_call': a name and object args"),
    "functionResponse": (
        lambda v: _object_with(v, "name", "response") and "response" in v,
        "function_response': a name and an object response",
    ),
}


def _part_problem(part: Any) -> str | None:
    if not isinstance(part, dict) or len(set(part) & PART_DATA) != 1:
        return "* GenerateContentRequest.contents.parts: a part holds exactly one of text, inlineData, functionCall…"
    for field, (valid, message) in PART_RULES.items():
        if field in part and not valid(part[field]):
            return f"Invalid value at 'contents[].parts[].{message}"
    return _unknown(part, PART_FIELDS, "contents[].parts[]")


def _schema_problem(schema: Any, where: str) -> str | None:
    """Gemini's Schema (https://ai.google.dev/api/caching#Schema): known keys only."""
    if not isinstance(schema, dict):
        return f"Invalid JSON payload received. Expected an object at '{where}'."
    if str(schema.get("type", "OBJECT")).upper() not in SCHEMA_TYPES:
        return f"Invalid value at '{where}.type': {schema['type']!r}"
    subs = [*(schema.get("properties") or {}).values(), *schema.get("anyOf", ()), *filter(None, [schema.get("items")])]
    return _unknown(schema, SCHEMA_FIELDS, where) or next(
        filter(None, (_schema_problem(s, where + ".*") for s in subs)), None
    )


def _declaration_problem(declaration: Any, where: str) -> str | None:
    if not isinstance(declaration, dict) or not declaration.get("name"):
        return f"* GenerateContentRequest.{where}.name: Name cannot be empty."
    parameters = declaration.get("parameters")
    if (
        isinstance(parameters, dict)
        and str(parameters.get("type")).upper() == "OBJECT"
        and not parameters.get("properties")
    ):
        return f"* GenerateContentRequest.{where}.parameters.properties: should be non-empty for OBJECT type"
    problem = _unknown(declaration, DECLARATION_FIELDS, where)
    return problem or (_schema_problem(parameters, where + ".parameters") if parameters is not None else None)


def _tools_problem(body: dict) -> str | None:
    for t, tool in enumerate(body.get("tools") or []):
        for d, declaration in enumerate((tool or {}).get("functionDeclarations") or []):
            problem = _declaration_problem(declaration, f"tools[{t}].function_declarations[{d}]")
            if problem:
                return problem
    mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode", "AUTO")
    if mode not in CALLING_MODES:
        return f"Invalid value at 'tool_config.function_calling_config.mode': {mode!r}"
    return None


def _contents_problem(contents: Any) -> str | None:
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for content in contents:
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list) or not content["parts"]:
            return "* GenerateContentRequest.contents: contents.parts must not be empty."
        if content.get("role", "user") not in ("user", "model"):
            return "Please use a valid role: user, model."
        problem = next(filter(None, map(_part_problem, content["parts"])), None)
        if problem:
            return problem
    return None


def body_problem(body: Any) -> str | None:
    """What the API refuses in a GenerateContentRequest, or None."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    config = body.get("generationConfig") or {}
    if not isinstance(config, dict):
        return "Invalid JSON payload received. generation_config is not an object."
    if len(config.get("stopSequences") or []) > 5:
        return "* GenerateContentRequest.generation_config.stop_sequences: at most 5 allowed"
    return (
        _unknown(body, REQUEST_FIELDS, "GenerateContentRequest")
        or _unknown(config, CONFIG_FIELDS, "generation_config")
        or _contents_problem(body.get("contents"))
        or _tools_problem(body)
    )


# --- embeddings ---------------------------------------------------------------------------


def embed_problem(body: Any, model: str, method: str) -> str | None:
    """What the API refuses in an embedContent (`method`) or batchEmbedContents body for
    `model`, or None: each request as _embed_problem says, and 1 to MAX_EMBED_BATCH of
    them in a batch."""
    if method == "embedContent":
        return _embed_problem(body, model, "EmbedContentRequest")
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list) or not body["requests"]:
        return "* BatchEmbedContentsRequest.requests: requests is not specified"
    if len(body["requests"]) > MAX_EMBED_BATCH:
        return f"* BatchEmbedContentsRequest.requests: at most {MAX_EMBED_BATCH} requests can be in one batch"
    problems = (_embed_problem(r, model, f"requests[{i}]", batched=True) for i, r in enumerate(body["requests"]))
    return _unknown(body, {"requests"}, "BatchEmbedContentsRequest") or next(filter(None, problems), None)


def _embed_problem(request: Any, model: str, where: str, batched: bool = False) -> str | None:
    """An EmbedContentRequest's problem: unknown fields, no text, another model (a
    batched request must name the batch's)."""
    if not isinstance(request, dict):
        return f"Invalid JSON payload received. Expected an object at '{where}'."
    problem = _unknown(request, EMBED_FIELDS, where)
    parts = (request.get("content") or {}).get("parts") if isinstance(request.get("content"), dict) else None
    if not problem and (not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts)):
        problem = f"* {where}.content: content is not specified"
    if not problem and request.get("model", None if batched else f"models/{model}") != f"models/{model}":
        problem = f"* {where}.model: the model of each request must match the model of the batch (models/{model})"
    return problem
