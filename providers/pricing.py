"""Dated price table (USD per 1K tokens) and cost estimates.

A config's own cost_input_per_1k / cost_output_per_1k override the table; unknown
models cost 0 until an operator sets a price.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.adapters.base import CompletionRequest, CostEstimate, Usage
    from providers.models import ProviderConfig

PRICES_AS_OF = "2026-11-01"
D = Decimal
ZERO_PRICE = D("0")
# model (or prefix, longest match wins) -> (input per 1K, output per 1K)
PRICES: dict[str, tuple[Decimal, Decimal]] = {
    # OpenAI
    "gpt-4o-mini": (D("0.00015"), D("0.0006")),
    "gpt-4o": (D("0.0025"), D("0.01")),
    "gpt-4.1-nano": (D("0.0001"), D("0.0004")),
    "gpt-4.1-mini": (D("0.0004"), D("0.0016")),
    "gpt-4.1": (D("0.002"), D("0.008")),
    "o3-mini": (D("0.0011"), D("0.0044")),
    "o4-mini": (D("0.0011"), D("0.0044")),
    "o3": (D("0.002"), D("0.008")),
    "gpt-3.5-turbo": (D("0.0005"), D("0.0015")),
    # Anthropic
    "claude-3-5-haiku": (D("0.0008"), D("0.004")),
    "claude-3-haiku": (D("0.00025"), D("0.00125")),
    "claude-haiku-4-5": (D("0.001"), D("0.005")),
    "claude-3-5-sonnet": (D("0.003"), D("0.015")),
    "claude-3-7-sonnet": (D("0.003"), D("0.015")),
    "claude-sonnet-4": (D("0.003"), D("0.015")),
    "claude-opus-4": (D("0.015"), D("0.075")),
    # Google Gemini
    "gemini-2.0-flash": (D("0.0001"), D("0.0004")),
    "gemini-2.0-flash-lite": (D("0.000075"), D("0.0003")),
    "gemini-2.5-flash-lite": (D("0.0001"), D("0.0004")),
    "gemini-2.5-flash": (D("0.0003"), D("0.0025")),
    "gemini-2.5-pro": (D("0.00125"), D("0.01")),
    "gemini-1.5-flash": (D("0.000075"), D("0.0003")),
    "gemini-1.5-pro": (D("0.00125"), D("0.005")),
    # AWS Bedrock model ids
    "anthropic.claude-3-5-sonnet": (D("0.003"), D("0.015")),
    "anthropic.claude-3-haiku": (D("0.00025"), D("0.00125")),
    "anthropic.claude-3-5-haiku": (D("0.0008"), D("0.004")),
    "anthropic.claude-3-7-sonnet": (D("0.003"), D("0.015")),
    "anthropic.claude-sonnet-4": (D("0.003"), D("0.015")),
    "anthropic.claude-opus-4": (D("0.015"), D("0.075")),
    "meta.llama3-3-70b-instruct": (D("0.00072"), D("0.00072")),
    "mistral.mistral-large-2407": (D("0.002"), D("0.006")),
    "amazon.nova-micro": (D("0.000035"), D("0.00014")),
    "amazon.nova-lite": (D("0.00006"), D("0.00024")),
    "amazon.nova-pro": (D("0.0008"), D("0.0032")),
    "meta.llama3-1-8b-instruct": (D("0.00022"), D("0.00022")),
    "meta.llama3-1-70b-instruct": (D("0.00099"), D("0.00099")),
    # Embedding models (input only)
    "text-embedding-3-small": (D("0.00002"), ZERO_PRICE),
    "text-embedding-3-large": (D("0.00013"), ZERO_PRICE),
    "text-embedding-ada-002": (D("0.0001"), ZERO_PRICE),
    "gemini-embedding-001": (D("0.00015"), ZERO_PRICE),
    "amazon.titan-embed-text-v2": (D("0.00002"), ZERO_PRICE),
    "cohere.embed-english-v3": (D("0.0001"), ZERO_PRICE),
    "cohere.embed-multilingual-v3": (D("0.0001"), ZERO_PRICE),
    # Ollama models (llama3.2, qwen3, gemma3…) run on the operator's hardware: not
    # listed, so they cost 0 unless the config sets its own prices.
}
# Bedrock cross-region inference profiles price like the model they route to
# (https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html).
INFERENCE_PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")
ZERO = D("0")
CHARS_PER_TOKEN = 4


def _bare_model(model: str) -> str:
    """`us.anthropic.claude…` or an inference-profile ARN -> `anthropic.claude…`."""
    name = model.rsplit("/", 1)[-1] if model.startswith("arn:") else model
    for prefix in INFERENCE_PROFILE_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


@functools.lru_cache(maxsize=1024)
def table_price(model: str) -> tuple[Decimal, Decimal]:
    """Price for `model` by longest matching prefix (Bedrock inference-profile prefixes
    such as `us.` or `global.`, and ARNs, are reduced to the model id first). Cached:
    the router prices every completion, and the scan over the table is the cost."""
    candidates = [model, _bare_model(model)]
    best = ""
    for name in candidates:
        for key in PRICES:
            if name.startswith(key) and len(key) > len(best):
                best = key
    return PRICES.get(best, (ZERO, ZERO))


def prices_for(config: ProviderConfig, model: str | None = None) -> tuple[Decimal, Decimal]:
    table_in, table_out = table_price(model or config.model)
    return (
        config.cost_input_per_1k if config.cost_input_per_1k is not None else table_in,
        config.cost_output_per_1k if config.cost_output_per_1k is not None else table_out,
    )


def estimate_prompt_tokens(request: CompletionRequest) -> int:
    chars = sum(len(m.content) for m in request.messages) + len(request.system or "")
    return max(1, chars // CHARS_PER_TOKEN)


def estimate_cost(config: ProviderConfig, request: CompletionRequest) -> CostEstimate:
    from providers.adapters.base import CostEstimate

    price_in, price_out = prices_for(config, request.model)
    prompt = estimate_prompt_tokens(request)
    completion = request.max_tokens or 256
    total = (price_in * prompt + price_out * completion) / 1000
    return CostEstimate(price_in, price_out, total.quantize(D("0.00000001")))


def actual_cost(config: ProviderConfig, usage: Usage, model: str | None = None) -> Decimal:
    price_in, price_out = prices_for(config, model)
    total = (price_in * usage.prompt_tokens + price_out * usage.completion_tokens) / 1000
    return total.quantize(D("0.00000001"))
