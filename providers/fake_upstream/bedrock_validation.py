"""What the fake Bedrock refuses, as the Bedrock API validates a request body: the
messages, content blocks and toolConfig of Converse (and ConverseStream), and the
InvokeModel bodies of the Titan and Cohere embedding models. Each check returns the
ValidationException's message, or None; bedrock.py answers it with a 400.

- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html (request fields)
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Message.html and
  API_runtime_ContentBlock.html (a block is a union: exactly one of text, image, toolUse,
  toolResult, ...)
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ToolConfiguration.html,
  API_runtime_ToolSpecification.html, API_runtime_ToolUseBlock.html and
  API_runtime_ToolResultBlock.html (names and ids `[a-zA-Z0-9_-]{1,64}`)
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ImageBlock.html
- https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-embed-text.html
- https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-embed-v3.html (and -v4)
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

MALFORMED = "Malformed input request, please reformat your input and try again."
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


def converse_problem(body: Any) -> str | None:
    """Why Converse refuses `body` (the ValidationException's message), or None: unknown
    fields, roles that do not alternate from a user turn, bad content blocks, a toolUse
    left unanswered, or a toolConfig that is missing or malformed."""
    if not isinstance(body, dict):
        return MALFORMED
    unknown = sorted(set(body) - REQUEST_FIELDS) + sorted(set(body.get("inferenceConfig") or {}) - INFERENCE_FIELDS)
    if unknown:
        return f"Malformed input request: extraneous key [{unknown[0]}] is not permitted."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "The messages field is required and must not be empty."
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if any(role not in ("user", "assistant") for role in roles):
        return "Value at 'messages.role' failed to satisfy constraint: Member must be user or assistant."
    if roles[0] != "user":
        return "A conversation must start with a user message."
    if any(a == b for a, b in zip(roles, roles[1:])):
        return "A conversation must alternate between user and assistant roles."
    return _blocks_problem(messages) or _tool_config_problem(body)


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


# --- InvokeModel: embeddings ---------------------------------------------------------------


def invoke_problem(model: str, body: Any) -> str | None:
    """Why InvokeModel refuses `body` for `model` (the ValidationException's message), or
    None. Only Titan Text Embeddings and Cohere Embed models are served."""
    if not isinstance(body, dict):
        return MALFORMED
    if "titan-embed" in model:
        return _titan_problem(model, body)
    if "cohere.embed" in model:
        return _cohere_problem(model, body)
    return f"The fake upstream serves InvokeModel for Titan and Cohere embedding models, not {model}."


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
