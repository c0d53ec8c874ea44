"""A body nested too deeply for Python's JSON parser is bad input: a 400 envelope on
every API face, never a 500, and nothing changes."""

from __future__ import annotations

import pytest

from providers.models import ProviderConfig
from tests.conftest import make_token

DEEP = b"[" * 200_000 + b"]" * 200_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/api/v1/providers/"),
        ("post", "/api/v1/completions"),
        ("put", "/api/v1/routing/weights/"),
        ("post", "/api/v1/models/"),
        ("post", "/api/v1/tokens/"),
    ],
)
def test_the_rest_api_refuses_deeply_nested_json(acme_api, acme, method, path, body, settings):
    settings.AXONFLOW_MAX_BODY_BYTES = 10_000_000
    response = getattr(acme_api, method)(path, body, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
    assert response.json()["error"]["code"] == "validation_error"
    assert ProviderConfig.objects.filter(tenant=acme).count() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
def test_the_openai_surface_refuses_deeply_nested_json(gateway, acme, body, settings):
    settings.AXONFLOW_MAX_BODY_BYTES = 10_000_000
    with gateway.client(make_token(acme)) as client:
        response = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
