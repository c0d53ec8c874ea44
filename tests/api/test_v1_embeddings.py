"""POST /v1/embeddings with the official `openai` client: routed to providers that can
embed, floats or base64, usage and cost recorded with endpoint kind `embeddings`."""

from __future__ import annotations

import math
from decimal import Decimal

import openai
import pytest

from tenants.models import TokenScope
from tests.api.test_model_resolution import records
from tests.api.test_v1_dropin import make
from tests.conftest import make_token
from tests.fixtures_upstream import assert_matches_spec

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token(acme) -> str:
    return make_token(acme, TokenScope.COMPLETIONS)


@pytest.fixture
def client(gateway, token) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=token, max_retries=0)


def test_embeddings_through_an_openai_provider_record_usage_and_cost(client, acme, upstream):
    make(acme, "oa", "openai", upstream, models=["text-embedding-3-small"])
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["one", "two words"])
    answer = raw.parse()  # the client asks for base64 and decodes it itself
    assert raw.headers["x-axonflow-provider"] == "oa"
    assert [d.index for d in answer.data] == [0, 1] and len(answer.data[0].embedding) == 8
    assert math.isclose(sum(v * v for v in answer.data[0].embedding), 1.0, rel_tol=1e-4)
    assert answer.usage.prompt_tokens > 0
    (sent,) = [r for r in upstream.requests("oa") if r.kind == "embeddings"]
    assert sent.body["model"] == "text-embedding-3-small" and sent.body["input"] == ["one", "two words"]
    assert_matches_spec("openai", "CreateEmbeddingRequest", sent.body)
    (record,) = records(acme)
    assert record.endpoint == "embeddings" and record.model_requested == "text-embedding-3-small"
    assert record.prompt_tokens == answer.usage.prompt_tokens and record.completion_tokens == 0
    assert record.cost == Decimal("0.00002") * record.prompt_tokens / 1000


def test_embeddings_through_an_ollama_provider_with_dimensions_and_floats(client, acme, upstream):
    make(acme, "ol", "ollama", upstream, cost_input_per_1k=Decimal("0.001"))
    answer = client.embeddings.create(model="ol", input="hello there", dimensions=4, encoding_format="float")
    assert len(answer.data) == 1 and len(answer.data[0].embedding) == 4
    (sent,) = [r for r in upstream.requests("ol") if r.kind == "embeddings"]
    assert sent.path.endswith("/api/embed") and sent.body["model"] == "nomic-embed-text"
    assert_matches_spec("ollama", "EmbedRequest", sent.body)
    (record,) = records(acme)
    assert record.endpoint == "embeddings" and record.provider_name == "ol" and record.prompt_tokens > 0
    assert record.cost == Decimal("0.001") * record.prompt_tokens / 1000 and record.cost > 0


def test_embeddings_skip_providers_that_cannot_embed(client, acme, upstream):
    make(acme, "an", "anthropic", upstream, priority=9)
    make(acme, "oa", "openai", upstream)
    raw = client.embeddings.with_raw_response.create(model="auto", input="x")
    assert raw.headers["x-axonflow-provider"] == "oa" and upstream.requests("an") == []


def test_embeddings_from_a_provider_that_cannot_embed_are_a_400(client, acme, upstream):
    make(acme, "an", "anthropic", upstream)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="an", input="x")
    assert "embeddings" in caught.value.message and upstream.stats() == {}


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": "x"}, "model"),
        ({"model": "auto", "input": ""}, "input[0]"),
        ({"model": "auto", "input": []}, "input"),
        ({"model": "auto", "input": [1, 2, 3]}, "input"),
        ({"model": "auto", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "auto", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "auto", "input": "x", "extra": 1}, "extra"),
    ],
)
def test_bad_embeddings_requests_are_a_400_naming_the_param(gateway, token, acme, upstream, body, param):
    make(acme, "oa", "openai", upstream)
    with gateway.client(token) as http:
        r = http.post("/v1/embeddings", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert upstream.stats() == {} and records(acme) == []


def test_the_usage_api_filters_by_endpoint_kind(client, gateway, acme, upstream):
    make(acme, "oa", "openai", upstream)
    client.embeddings.create(model="oa", input="x")
    client.chat.completions.create(model="oa", messages=[{"role": "user", "content": "hi"}])
    records(acme)  # flushed
    with gateway.client(make_token(acme, TokenScope.ADMIN)) as http:
        kinds = {k: [r["endpoint"] for r in http.get(f"/api/v1/usage/?endpoint={k}").json()["results"]]
                 for k in ("embeddings", "chat", "messages")}  # fmt: skip
        assert kinds == {"embeddings": ["embeddings"], "chat": ["chat"], "messages": []}
        assert http.get("/api/v1/usage/?endpoint=images").status_code == 400
