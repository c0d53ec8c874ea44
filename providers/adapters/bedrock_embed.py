"""Embeddings on Amazon Bedrock, through InvokeModel: the body is the model's own, so it
is picked by model id (Converse does not embed).

- InvokeModel: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModel.html
  (`POST /model/{modelId}/invoke`; the body and the answer are the model's JSON)
- Titan Text Embeddings (amazon.titan-embed-text-v2:0, v1):
  https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-embed-text.html
  (one text per call: `{inputText, dimensions?, normalize?}` → `{embedding,
  inputTextTokenCount}`; v1 takes `inputText` only, so nothing else is sent unasked)
- Cohere Embed (cohere.embed-english-v3, -multilingual-v3, cohere.embed-v4:0):
  https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-embed-v3.html and
  https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-embed-v4.html
  (up to 96 `texts` per call with a required `input_type`; `embeddings` is a list of
  vectors, or by type, `{"float": [...]}`, when v4 or `embedding_types` asks for it;
  `output_dimension` is v4's; no token count comes back)

OpenAI's embeddings endpoint, which ours follows, does not tell queries from documents;
`search_document` is Cohere's choice for text that is stored and searched.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from providers.adapters.base import (
    EmbeddingRequest,
    EmbeddingResponse,
    MalformedResponse,
    ProviderError,
    present,
    token_count,
)
from providers.pricing import CHARS_PER_TOKEN

INVOKE = "/model/{model}/invoke"
TITAN, COHERE = "titan", "cohere"
# Model ids, bare, behind a geography prefix (inference profiles: "us.", "global.") or at
# the end of an ARN.
FAMILIES = {
    TITAN: re.compile(r"(^|[./])amazon\.titan-embed-"),
    COHERE: re.compile(r"(^|[./])cohere\.embed-"),
}
COHERE_BATCH = 96  # texts per call (the Cohere Embed limit on Bedrock)
COHERE_INPUT_TYPE = "search_document"
TITAN_CALLS_AT_ONCE = 4  # Titan embeds one text per call: a few calls in flight, not hundreds

Post = Callable[[dict], Awaitable[Any]]


def family(model: str) -> str | None:
    """TITAN or COHERE for an embedding model id (or ARN); None for any other model."""
    return next((name for name, pattern in FAMILIES.items() if pattern.search(model)), None)


def titan_body(text: str, dimensions: int | None) -> dict:
    return {"inputText": text, **present(dimensions=dimensions)}


def cohere_body(texts: list[str], dimensions: int | None) -> dict:
    return {"texts": texts, "input_type": COHERE_INPUT_TYPE, **present(output_dimension=dimensions)}


def vector_from(raw: Any, provider: str) -> list[float]:
    """A list of numbers as floats; MalformedResponse for anything else."""
    if not isinstance(raw, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
        raise MalformedResponse(provider, "embedding is not a list of numbers", 200)
    return [float(v) for v in raw]


def titan_from_wire(body: Any, text: str, provider: str) -> tuple[list[float], int]:
    """(vector, prompt tokens) of a Titan answer; tokens estimated when not reported."""
    if not isinstance(body, dict):
        raise MalformedResponse(provider, "embedding response is not a JSON object", 200)
    reported = body.get("inputTextTokenCount")
    tokens = token_count(reported, "inputTextTokenCount") if reported is not None else estimate_tokens(text)
    return vector_from(body.get("embedding"), provider), tokens


def cohere_from_wire(body: Any, count: int, provider: str) -> list[list[float]]:
    """The vectors of a Cohere answer, as a list or by type (the float ones)."""
    embeddings = body.get("embeddings") if isinstance(body, dict) else None
    if isinstance(embeddings, dict):
        embeddings = embeddings.get("float")
    if not isinstance(embeddings, list) or len(embeddings) != count:
        raise MalformedResponse(provider, f"expected {count} embeddings in the Cohere response", 200)
    return [vector_from(raw, provider) for raw in embeddings]


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


async def embed(request: EmbeddingRequest, model: str, post: Post, provider: str) -> EmbeddingResponse:
    """The vectors of `request.inputs`, in order, from `model`; `post(body)` sends one
    InvokeModel call and returns its JSON. Raises ProviderError (retryable when the model
    is neither Titan nor Cohere: another provider may serve the request)."""
    kind = family(model)
    if kind is None:
        message = f"{model[:100]} is not a Titan Text Embeddings or Cohere Embed model"
        raise ProviderError(provider, None, message, retryable=True)
    if kind == TITAN:
        vectors, tokens = await _embed_titan(request, post, provider)
    else:
        vectors = await _embed_cohere(request, post, provider)
        tokens = sum(estimate_tokens(text) for text in request.inputs)
    return EmbeddingResponse(vectors=vectors, model=model, prompt_tokens=tokens)


async def _embed_titan(request: EmbeddingRequest, post: Post, provider: str) -> tuple[list[list[float]], int]:
    gate = asyncio.Semaphore(TITAN_CALLS_AT_ONCE)

    async def one(text: str) -> tuple[list[float], int]:
        async with gate:
            return titan_from_wire(await post(titan_body(text, request.dimensions)), text, provider)

    tasks = [asyncio.ensure_future(one(text)) for text in request.inputs]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:  # the first failure decides; the other calls are abandoned
            task.cancel()
        raise
    return [vector for vector, _ in results], sum(tokens for _, tokens in results)


async def _embed_cohere(request: EmbeddingRequest, post: Post, provider: str) -> list[list[float]]:
    vectors: list[list[float]] = []
    for start in range(0, len(request.inputs), COHERE_BATCH):
        batch = request.inputs[start : start + COHERE_BATCH]
        vectors += cohere_from_wire(await post(cohere_body(batch, request.dimensions)), len(batch), provider)
    return vectors
