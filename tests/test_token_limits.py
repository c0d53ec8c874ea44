"""Per API token limits on one instance (issue 14; routing/token_limits.py): requests
and tokens per sliding minute, 429 rate_limited with Retry-After, other tokens of the
tenant unaffected; the API takes and shows the limits."""

from __future__ import annotations

import pytest

from routing import token_limits
from tenants.models import ApiToken, TokenScope
from tenants.tokens import create_token
from tests.conftest import forget_redis_keys

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": "p", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


@pytest.fixture(autouse=True)
def fresh_windows():
    token_limits.reset()
    forget_redis_keys("tl:*")
    yield
    token_limits.reset()


@pytest.fixture
def served(acme, make_provider, upstream):
    upstream.configure("p", token_counts=[1, 10])
    return make_provider(acme, name="p", base_url=upstream.base_url("p"), api_key="sk-test-pppp1111")


def issue(tenant, **limits) -> str:
    _token, raw = create_token(tenant, "limited", TokenScope.COMPLETIONS, **limits)
    return raw


def test_requests_per_minute_admit_exactly_the_limit(gateway, acme, served, upstream):
    with gateway.client(issue(acme, rpm_limit=3)) as client:
        replies = [client.post("/v1/chat/completions", json=BODY) for _ in range(5)]
    assert [r.status_code for r in replies] == [200, 200, 200, 429, 429]
    refused = replies[3]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert upstream.counts("p")["chat"] == 3


def test_another_token_of_the_tenant_is_not_limited(gateway, acme, served):
    with gateway.client(issue(acme, rpm_limit=1)) as limited, gateway.client(issue(acme)) as free:
        assert [limited.post("/v1/chat/completions", json=BODY).status_code for _ in range(2)] == [200, 429]
        assert [free.post("/v1/chat/completions", json=BODY).status_code for _ in range(3)] == [200] * 3


def test_tokens_per_minute_count_the_estimate_then_the_actual(gateway, acme, served):
    """Each request is estimated at 1 prompt + 10 max_tokens = 11 and costs 11 (the fake
    answers 1 + 10): a limit of 33 admits three."""
    with gateway.client(issue(acme, tpm_limit=33)) as client:
        statuses = [client.post("/v1/chat/completions", json=BODY).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]


def test_the_rest_api_is_limited_too(gateway, acme, served):
    with gateway.client(issue(acme, rpm_limit=1)) as client:
        first = client.post("/api/v1/completions", json={"prompt": "hi", "model": "p"})
        second = client.post("/api/v1/completions", json={"prompt": "hi", "model": "p"})
    assert (first.status_code, second.status_code) == (200, 429)
    assert second.json()["error"]["code"] == "rate_limited"


def test_the_tokens_api_takes_and_shows_the_limits(acme, acme_api):
    r = acme_api.post("/api/v1/tokens/", {"name": "ci", "rpm_limit": 30, "tpm_limit": 5000})
    assert r.status_code == 201, r.content
    listed = next(t for t in acme_api.get("/api/v1/tokens/").json() if t["name"] == "ci")
    assert (listed["rpm_limit"], listed["tpm_limit"]) == (30, 5000)
    for bad in (-1, "30", 1.5, True):
        r = acme_api.post("/api/v1/tokens/", {"name": "bad", "rpm_limit": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
    assert not ApiToken.objects.filter(tenant=acme, name="bad").exists()
