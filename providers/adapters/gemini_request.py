"""The GenerateContentRequest body for Gemini (the adapter is providers/adapters/gemini.py).

- Generate: https://ai.google.dev/api/generate-content#request-body (`contents` of user
  and model turns, `systemInstruction`, `tools`, `toolConfig`, `generationConfig`,
  `safetySettings`)
- Function calling: https://ai.google.dev/gemini-api/docs/function-calling and
  https://ai.google.dev/api/caching#Tool (`tools[].functionDeclarations` {name, description,
  parameters}; `toolConfig.functionCallingConfig` mode AUTO / NONE / ANY, with
  `allowedFunctionNames`; earlier calls go back as `functionCall` parts and their results
  as `functionResponse` parts {name, response: object} in a user turn)
- Thought signatures: https://ai.google.dev/gemini-api/docs/thought-signatures (see
  SKIP_SIGNATURE)
- Images: https://ai.google.dev/gemini-api/docs/image-understanding (`inlineData` {mimeType,
  data}; Gemini fetches no https URL, so chat.IMAGE_URLS is not declared)
- Structured output: https://ai.google.dev/gemini-api/docs/structured-output
  (`generationConfig.responseMimeType` "application/json", and `responseSchema`)
- Schemas: `parameters` and `responseSchema` go through gemini_schema.py
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from providers.adapters.base import (
    CompletionRequest,
    Message,
    Part,
    ResponseFormat,
    TextPart,
    Tool,
    ToolChoice,
    present,
)
from providers.adapters.gemini_schema import gemini_schema

JSON_MIME = "application/json"
TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "function": "ANY"}
# The documented stand-in for a thought signature we cannot replay (we keep none: a tool
# call id crosses providers, and OpenAI's are at most 40 characters). Without one, Gemini 3
# refuses the first function call of a step: thought-signatures#faqs in the docs above.
SKIP_SIGNATURE = "skip_thought_signature_validator"


def to_wire(req: CompletionRequest, safety_settings: Sequence[dict] = ()) -> dict:
    """The GenerateContentRequest body for `req` (the model goes in the URL), with the
    config's `safety_settings` (gemini.Settings) as `safetySettings`.

    Consecutive turns of one role are merged into one Content with several parts, since
    Gemini expects user and model turns to alternate. Raises ValueError for an image that
    is not a base64 data URL."""
    contents, system = _contents(req.messages, req.system)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(tool) for tool in req.tools]}]
        if req.tool_choice:
            body["toolConfig"] = {"functionCallingConfig": _calling_config(req.tool_choice)}
    config = present(
        maxOutputTokens=req.max_tokens,
        temperature=req.temperature,
        topP=req.top_p,
        stopSequences=req.stop,
        seed=req.seed,
        presencePenalty=req.presence_penalty,
        frequencyPenalty=req.frequency_penalty,
    )
    config.update(_output_format(req.response_format))
    if config:
        body["generationConfig"] = config
    if safety_settings:
        body["safetySettings"] = list(safety_settings)
    return body


def _contents(messages: list[Message], system_prompt: str | None) -> tuple[list[dict], list[str]]:
    """(contents, system texts): system messages join the system instruction; tool
    results are user turns, as Gemini has no tool role."""
    system = [system_prompt] if system_prompt else []
    contents: list[dict] = []
    names: dict[str, str] = {}  # tool call id -> function name: a functionResponse needs the name
    for message in messages:
        if message.role == "system":
            system.append(message.content)
            continue
        role = "model" if message.role == "assistant" else "user"
        parts = [_function_response(message, names)] if message.role == "tool" else _parts(message, names)
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents, system


def _parts(message: Message, names: dict[str, str]) -> list[dict]:
    parts = [_part(part) for part in message.content_parts()]
    for index, call in enumerate(message.tool_calls or ()):
        names[call.id] = call.name
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.input()}}
        if index == 0:  # of parallel calls, only the first carries the signature
            part["thoughtSignature"] = SKIP_SIGNATURE
        parts.append(part)
    return parts or [{"text": ""}]


def _part(part: Part) -> dict:
    if isinstance(part, TextPart):
        return {"text": part.text}
    mime_type, data = part.data()  # ValueError for an https URL: Gemini takes inline bytes
    return {"inlineData": {"mimeType": mime_type, "data": data}}


def _function_response(message: Message, names: Mapping[str, str]) -> dict:
    name = names.get(message.tool_call_id or "") or message.name or "unknown"
    # `response` must be an object: a JSON object result as it is, anything else wrapped.
    try:
        result = json.loads(message.content)
    except ValueError:
        result = None
    response = result if isinstance(result, dict) else {"result": message.content}
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(tool: Tool) -> dict:
    declaration = {"name": tool.name, **present(description=tool.description)}
    parameters = gemini_schema(tool.parameters)
    # An OBJECT without properties is refused ("should be non-empty for OBJECT type"): a
    # function without arguments declares no parameters at all.
    if parameters.get("properties"):
        declaration["parameters"] = parameters
    return declaration


def _calling_config(choice: ToolChoice) -> dict:
    config: dict[str, Any] = {"mode": TOOL_MODES.get(choice.mode, "AUTO")}
    if choice.mode == "function" and choice.name:
        config["allowedFunctionNames"] = [choice.name]
    return config


def _output_format(fmt: ResponseFormat | None) -> dict:
    if fmt is None:
        return {}
    if fmt.type == "json_schema" and fmt.schema is not None:
        return {"responseMimeType": JSON_MIME, "responseSchema": gemini_schema(fmt.schema, ordered=True)}
    return {"responseMimeType": JSON_MIME}
