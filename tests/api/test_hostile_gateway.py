"""Hostile input through the whole ASGI stack (the `gateway` fixture; issue 10 "Must show
4"): a 64 MiB body without a valid token on every face is a 413 before anything reads
it, and the OpenAI-compatible surface refuses what the REST API refuses
(test_hostile_inputs.py) with a 4xx, routing nothing and recording nothing."""

from __future__ import annotations

import json

import pytest

from tests.api.test_hostile_inputs import RAW, at, raw_at
from tests.conftest import make_token
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024
EVERY_FACE = ["/api/v1/providers/", "/api/v1/completions", "/api/v1/tokens/", "/v1/chat/completions",
              "/v1/embeddings", "/v1/messages", "/login/", "/admin/login/"]  # fmt: skip


@pytest.mark.parametrize("path", EVERY_FACE)
@pytest.mark.parametrize("token", [None, "axf_not-a-real-token"])
def test_64_mib_without_a_valid_token_is_a_413_before_anything_reads_it(gateway, acme, path, token):
    with gateway.client(token) as client:
        response = client.post(path, content=bytes(64 * MIB), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/api/v1/completions", "/v1/chat/completions"])
def test_64_mib_sent_chunked_is_cut_off_with_a_413(gateway, acme, path):
    def chunks():
        for _ in range(64):
            yield bytes(MIB)

    with gateway.client(make_token(acme)) as client:
        response = client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0.5,
        "top_p": 0.5}  # fmt: skip
CHAT_BAD = {
    **{f"raw {name}": raw for name, raw in RAW.items() if name not in ("deep array", "deep object")},
    **{f"{field} {text.decode()}": raw_at(CHAT, (field,), text) for field in ("max_tokens", "temperature", "top_p")
       for text in (b"NaN", b"Infinity", b"-Infinity", b"1e999")},
    **{f"{field} {value!r}": at(CHAT, (field,), value) for field, values in {
        "messages": ["hi", {}, None, [1], [{"role": "wizard", "content": "hi"}], [{"role": "user", "content": 5}]],
        "max_tokens": ["5", 1.5, True, -1, 10**30], "temperature": ["warm", True, [], 99, -1],
        "top_p": ["x", 2, -1], "model": [5, [], {}], "stream": ["yes", 1], "stop": [1, {}, ["x"] * 100],
    }.items() for value in values},
}  # fmt: skip


@pytest.mark.parametrize("body", CHAT_BAD.values(), ids=CHAT_BAD.keys())
def test_the_openai_surface_refuses_bad_bodies_with_a_4xx(gateway, acme, make_provider, upstream, body, as_tenant):
    make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111")
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with gateway.client(make_token(acme)) as client:
        response = client.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.content[:300]
    assert response.json()["error"]["code"]
    assert upstream.stats() == {}
    with as_tenant(acme):
        assert not UsageRecord.objects.exists()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/v1/embeddings"])
@pytest.mark.parametrize("query", ["bogus=1", "limit=%C2%B2", "a=%00"])
def test_the_openai_surface_takes_query_parameters_without_a_500(gateway, acme, path, query):
    with gateway.client(make_token(acme)) as client:
        call = client.get if path == "/v1/models" else client.post
        response = call(f"{path}?{query}", **({} if path == "/v1/models" else {"json": {}}))
    assert response.status_code < 500, response.content[:300]
