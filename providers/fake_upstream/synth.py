"""What the fake upstream answers beyond echoed text, the same way in every wire format,
so tests can predict it whatever provider they route to:

- **Tool calls**: when a request offers tools, the tool choice does not forbid them
  (`none`), and its last turn is not a tool result, the model "calls" one tool: the
  forced one, else the first offered, with arguments synthesized from the tool's JSON
  Schema (`tool_arguments`; `{}` for a tool without parameters). With `parallel`
  (offered several tools, parallel calls allowed, and the prompt containing "in
  parallel") it calls the first two.
- **Tool results**: when the last turn carries a tool result, the reply is
  `Tool said: <result text>` (so a second turn proves the result arrived).
- **JSON**: JSON mode answers `{"reply": "<echo>"}`; a JSON schema answers an object
  synthesized from the schema. Where the wire format has no JSON mode (Anthropic's
  Messages, Bedrock's Converse) clients force a tool whose input schema is the JSON they
  want, so those fakes give a tool's input by `json_tool_input`: an open object schema
  (`is_open_object`: "any object") gets the JSON-mode object, any other schema
  `tool_arguments`. A client tool declared with a bare `{"type": "object"}` looks the
  same there and gets the JSON-mode object too; declared with `"properties": {}` (as
  the adapters send a tool without parameters) it gets `{}`.
- **Embeddings**: a deterministic unit vector per text (`embedding`), 8 numbers unless
  the request asks for `dimensions`.

Each wire module (openai.py, anthropic.py, ...) decides *when* from its own request
shape and calls these helpers for *what*.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

DEFAULT_DIMENSIONS = 8
PARALLEL_TRIGGER = "in parallel"


def value_for(schema: Any, text: str, depth: int = 0) -> Any:
    """A value that satisfies the (simple) JSON Schema `schema`, using `text` for strings."""
    if not isinstance(schema, dict) or depth > 8:
        return text
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in (None, "object") and isinstance(schema.get("properties"), dict):
        return {
            name: value_for(sub, text, depth + 1)
            for name, sub in schema["properties"].items()
            if name in (schema.get("required") or schema["properties"])
        }
    if kind == "object":
        return {}
    if kind == "array":
        return [value_for(schema.get("items"), text, depth + 1)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def tool_arguments(schema: Any, prompt: str) -> dict[str, Any]:
    """Arguments for a tool whose parameters are `schema` (an object always): `{}` for a
    tool that takes none (no schema, or an object schema without properties)."""
    if not isinstance(schema, dict) or (_object_type(schema) and "properties" not in schema):
        return {}
    value = value_for(schema, prompt.strip()[:80] or "query")
    return value if isinstance(value, dict) else {"input": value}


def is_open_object(schema: Any) -> bool:
    """Whether `schema` asks for any object: of type object (or no type), naming no
    properties and not closed by `additionalProperties: false`. It is the input schema
    of the tool that carries a JSON-mode answer (see the module docstring)."""
    return (
        isinstance(schema, dict)
        and _object_type(schema)
        and "properties" not in schema
        and schema.get("additionalProperties") is not False
    )


def json_tool_input(schema: Any, prompt: str) -> dict[str, Any]:
    """A tool's input in a wire format whose clients ask for JSON through a forced tool
    (Anthropic, Bedrock Converse): the JSON-mode object (`json_reply`) for an open object
    schema, as a model asked for "some JSON object" would answer, else `tool_arguments`."""
    if is_open_object(schema):
        return json.loads(json_reply(prompt))
    return tool_arguments(schema, prompt)


def _object_type(schema: dict) -> bool:
    return schema.get("type", "object") == "object"


def pick_tools(names: list[str], forced: str | None, prompt: str, parallel_allowed: bool = True) -> list[str]:
    """The tools the fake model calls: the forced one, else the first (and the second
    when the prompt asks for parallel calls and they are allowed)."""
    if forced:
        return [forced]
    if not names:
        return []
    if parallel_allowed and len(names) > 1 and PARALLEL_TRIGGER in prompt.lower():
        return names[:2]
    return names[:1]


def tool_result_reply(result_text: str) -> str:
    return f"Tool said: {result_text.strip()[:400]}"


def json_reply(prompt: str, schema: Any = None) -> str:
    """The JSON text answered in JSON mode (schema None) or for a JSON schema."""
    if isinstance(schema, dict):
        return json.dumps(value_for(schema, prompt.strip()[:80]), separators=(",", ":"))
    return json.dumps({"reply": f"Echo: {prompt.strip()[:400]}"}, separators=(",", ":"))


def call_id(prefix: str, name: str, index: int, prompt: str) -> str:
    """A stable id for a synthesized tool call (the same request gets the same id)."""
    digest = hashlib.sha1(f"{name}:{index}:{prompt}".encode()).hexdigest()[:20]
    return f"{prefix}{digest}"


def embedding(text: str, dimensions: int | None = None) -> list[float]:
    """A deterministic unit vector for `text`."""
    size = dimensions if isinstance(dimensions, int) and not isinstance(dimensions, bool) and dimensions > 0 else None
    size = min(size or DEFAULT_DIMENSIONS, 4096)
    raw = b""
    counter = 0
    while len(raw) < size * 2:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [(int.from_bytes(raw[i * 2 : i * 2 + 2], "big") / 65535.0) * 2 - 1 for i in range(size)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]
