"""The Converse (and ConverseStream) request body for Bedrock (the adapter is
providers/adapters/bedrock.py): turns, tools, tool results, images and the JSON answer tool.

- Converse request: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
  (`messages`, `system`, `inferenceConfig`, `toolConfig`) and
  https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Message.html
  (`{role: user|assistant, content: [ContentBlock]}`)
- Tool use: https://docs.aws.amazon.com/bedrock/latest/userguide/tool-use-inference-call.html
  with .../APIReference/API_runtime_ToolConfiguration.html (`tools`, at least one, and
  `toolChoice`: auto, the default, | any | tool), API_runtime_ToolSpecification.html,
  API_runtime_ToolUseBlock.html (`{toolUseId, name, input}`) and
  API_runtime_ToolResultBlock.html (`{toolUseId, content: [{text} | {json}], status?}` in
  a user turn)
- Images: .../APIReference/API_runtime_ImageBlock.html and API_runtime_ImageSource.html
  (`{image: {format: png|jpeg|gif|webp, source: {bytes}}}`; over REST the bytes are base64
  text)
- JSON output: Converse has no JSON-mode flag; a forced tool whose input schema is the
  wanted JSON is the documented way to get it (the ToolChoice reference and
  https://community.aws/content/2hWA16FSt2bIzKs0Z1fgJBwu589/generating-json-with-the-amazon-bedrock-converse-api).
  `outputConfig.textFormat` (https://docs.aws.amazon.com/bedrock/latest/userguide/structured-output.html)
  serves only a few newer models, so it is not used.

Not sent, because Converse has no field for them: `seed`, `presence_penalty`,
`frequency_penalty`, `logit_bias` and `user`; `parallel_tool_calls` (Converse cannot turn
parallel calls off, so the feature is not declared); an image's `detail`; a tool's
`strict` (strict tool use is refused by the models without it, while an ordinary tool
works on all); a tool result's `status` (OpenAI tool messages carry no error flag).
"""

from __future__ import annotations

import json
import re
from typing import Any

from providers.adapters.base import (
    CompletionRequest,
    ImagePart,
    Message,
    ProviderError,
    ResponseFormat,
    Tool,
    present,
)

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
