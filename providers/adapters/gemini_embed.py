"""Embeddings on the Gemini API, through batchEmbedContents.

- Embeddings: https://ai.google.dev/api/embeddings (`POST models/{model}:batchEmbedContents`,
  `{requests: [EmbedContentRequest]}`, every request naming the model of the URL, with
  `outputDimensionality`; the answer is `{embeddings: [{values}]}` in request order)
- Normalization: https://ai.google.dev/gemini-api/docs/embeddings (only full-size
  vectors are normalized, so a shortened one is scaled to length 1 here, as OpenAI's are)
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from providers.adapters.base import EmbeddingRequest, EmbeddingResponse, MalformedResponse, present, token_count

EMBED = "/{version}/models/{model}:batchEmbedContents"
# More requests in one batch are refused: "BatchEmbedContentsRequest.requests: at most 100
# requests can be in one batch" (not in the reference; langchain-ai/langchainjs#4491).
MAX_EMBED_BATCH = 100

Post = Callable[[dict], Awaitable[Any]]


def embeddings_to_wire(texts: list[str], model: str, dimensions: int | None = None) -> dict:
    """The BatchEmbedContentsRequest for `texts`: one EmbedContentRequest each, naming
    the model of the URL (the API requires that they match)."""
    options = present(outputDimensionality=dimensions)
    return {"requests": [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **options} for t in texts]}


def embeddings_from_wire(body: Any, texts: list[str], provider: str = "gemini") -> EmbeddingResponse:
    """The vectors of a BatchEmbedContentsResponse for `texts`, in their order.

    Gemini has reported no token usage for embeddings (a `usageMetadata` is read when
    one comes), so the count is estimated: a token per 4 characters, at least 1 a text.
    Raises MalformedResponse unless there is one list of numbers per text."""
    items = body.get("embeddings") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) != len(texts):
        raise MalformedResponse(provider, f"expected {len(texts)} embeddings in the response")
    vectors = []
    for item in items:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
            raise MalformedResponse(provider, "an embedding is not a list of numbers")
        vectors.append([float(v) for v in values])
    usage = body.get("usageMetadata")
    if isinstance(usage, dict) and "promptTokenCount" in usage:
        tokens = token_count(usage["promptTokenCount"], "promptTokenCount")
    else:
        tokens = sum(max(1, len(text) // 4) for text in texts)
    return EmbeddingResponse(vectors=vectors, model="", prompt_tokens=tokens)


def unit(vector: list[float]) -> list[float]:
    """`vector` scaled to length 1 (a shortened Gemini embedding is not)."""
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


async def embed(request: EmbeddingRequest, model: str, post: Post, provider: str) -> EmbeddingResponse:
    """The vectors of `request.inputs` from `model`, in input order, MAX_EMBED_BATCH texts
    a call (of unit length when `dimensions` shortened them); `post(body)` sends one
    batchEmbedContents call and returns its JSON. Raises ProviderError."""
    vectors: list[list[float]] = []
    tokens = 0
    for start in range(0, len(request.inputs), MAX_EMBED_BATCH):
        texts = request.inputs[start : start + MAX_EMBED_BATCH]
        batch = embeddings_from_wire(await post(embeddings_to_wire(texts, model, request.dimensions)), texts, provider)
        vectors += batch.vectors
        tokens += batch.prompt_tokens
    if request.dimensions:
        vectors = [unit(vector) for vector in vectors]
    return EmbeddingResponse(vectors=vectors, model=model, prompt_tokens=tokens)
