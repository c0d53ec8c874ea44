"""JSON Schema to the OpenAPI 3.0 subset Gemini's Schema takes, for function parameters
and structured output.

- Schema: https://ai.google.dev/api/caching#Schema (upper-case `type`, `nullable`, `enum`
  of strings only, int64 counts such as `minItems` as strings, `anyOf`,
  `propertyOrdering`; unknown keys such as additionalProperties, $schema, strict or
  default are refused)
- Function declarations: https://ai.google.dev/gemini-api/docs/function-calling
  (`parameters`)
- Structured output: https://ai.google.dev/gemini-api/docs/structured-output
  (`responseSchema`; keys come back in alphabetical order unless `propertyOrdering` says
  otherwise)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

# What Gemini's Schema takes besides type, properties, items and anyOf (the API rejects
# unknown keys such as additionalProperties, $schema, strict or default).
SCHEMA_KEYS = frozenset(
    {"format", "title", "description", "nullable", "enum", "required", "minimum", "maximum", "pattern", "example",
     "propertyOrdering"}
)  # fmt: skip
COUNT_KEYS = frozenset({"minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"})
MAX_SCHEMA_DEPTH = 32


def gemini_schema(schema: Any, *, ordered: bool = False, defs: Mapping[str, Any] | None = None, depth: int = 0) -> dict:
    """A JSON Schema in the OpenAPI subset Gemini's Schema takes: upper-case types, int64
    counts as strings, local `$ref`s inlined, `anyOf`/`oneOf` with "null" turned into
    `nullable`, a one-member `allOf` merged, and every key Gemini lacks dropped.

    `ordered` adds `propertyOrdering`, so structured output keeps the client's key order
    (Gemini orders keys alphabetically otherwise)."""
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return {}
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    inner = functools.partial(gemini_schema, ordered=ordered, defs=defs, depth=depth + 1)
    out: dict[str, Any] = {}
    if isinstance(schema.get("$ref"), str):
        out.update(inner(defs.get(schema["$ref"].rsplit("/", 1)[-1])))
    members = [m for m in schema.get("anyOf") or schema.get("oneOf") or () if isinstance(m, dict)]
    others = [m for m in members if m.get("type") != "null"]
    if len(others) == 1:
        out.update(inner(others[0]))
    elif others:
        out["anyOf"] = [inner(m) for m in others]
    if len(others) < len(members):
        out["nullable"] = True
    if isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
        out.update(inner(schema["allOf"][0]))
    out.update(_schema_keywords(schema, inner, ordered))
    return out


def _schema_keywords(schema: Mapping[str, Any], inner: Callable[[Any], dict], ordered: bool) -> dict:
    out = {key: value for key, value in schema.items() if key in SCHEMA_KEYS}
    out.update({key: str(value) for key, value in schema.items() if key in COUNT_KEYS and type(value) is int})
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]
        if "null" in kind:
            out["nullable"] = True
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        out["type"] = kind.upper()
    if isinstance(schema.get("const"), str):
        out["enum"] = [schema["const"]]
    if "enum" in out and not (isinstance(out["enum"], list) and all(isinstance(v, str) for v in out["enum"])):
        del out["enum"]  # Gemini's enums are strings only
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {name: inner(sub) for name, sub in schema["properties"].items()}
        if ordered:
            out.setdefault("propertyOrdering", list(schema["properties"]))
    if isinstance(schema.get("items"), dict):
        out["items"] = inner(schema["items"])
    return out
