"""The OpenAI Embeddings request and response of our /v1.

- https://platform.openai.com/docs/api-reference/embeddings/create: `input` is a string
  or a list of strings (token arrays are refused: each provider tokenizes its own way),
  `model`, `dimensions`, `encoding_format` (`float`, or `base64`: the little-endian
  float32 array, which openai-python asks for by default and decodes itself), `user`.
- https://platform.openai.com/docs/api-reference/embeddings/object: the answer is a list
  of `embedding` objects in input order, with `usage.prompt_tokens` and `total_tokens`.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from providers.adapters.base import EmbeddingRequest
from routing.embeddings import EmbedResult
from routing.selection import RoutingOptions
from routing.v1.chat import fail, flag, integer, parse_weights
from routing.v1.wire import dumps

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 100_000
KNOWN_FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user", "weights", "disable_failover"})


def _inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise fail("input", "must be a string or a non-empty list of strings")
    if len(raw) > MAX_INPUTS:
        raise fail("input", f"at most {MAX_INPUTS} inputs")
    for i, text in enumerate(raw):
        if isinstance(text, (int, list)) and not isinstance(text, bool):
            raise fail("input", "token arrays are not supported: send the text")
        if not isinstance(text, str) or not text:
            raise fail(f"input[{i}]", "must be a non-empty string")
        if len(text) > MAX_INPUT_CHARS:
            raise fail(f"input[{i}]", f"must be at most {MAX_INPUT_CHARS} characters")
    return raw


def parse_embeddings(data: dict) -> tuple[EmbeddingRequest, RoutingOptions, str]:
    """(request, routing options, encoding format) from an Embeddings body."""
    unknown = sorted(set(data) - KNOWN_FIELDS)
    if unknown:
        raise fail(unknown[0], "is not supported by this gateway")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise fail("model", "is required: a model, a model route, a provider name, or 'auto'")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise fail("encoding_format", "must be float or base64")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise fail("user", "must be a string")
    request = EmbeddingRequest(_inputs(data.get("input")), dimensions=integer(data, "dimensions", 1, 65536), user=user)
    options = RoutingOptions(
        weights=parse_weights(data.get("weights")), disable_failover=flag(data, "disable_failover"), model=model.strip()
    )
    return request, options, encoding


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def embeddings_body(answer: EmbedResult, encoding: str) -> bytes:
    tokens = answer.result.response.usage.prompt_tokens
    return dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(vector, encoding)}
                for i, vector in enumerate(answer.embeddings.vectors)
            ],
            "model": answer.result.response.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
