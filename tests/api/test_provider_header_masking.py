"""A custom provider's extra header values may be credentials: the API reads them
back masked, and a masked value sent back keeps what is stored."""

from __future__ import annotations

from providers.models import ProviderConfig
from tenants.rls import tenant_context

SECRET = "hdr-secret-0123456789abcdef"


def create(acme_api, upstream):
    body = {
        "name": "own", "type": "custom", "model": "m", "base_url": upstream.base_url("own"),
        "settings": {"headers": {"X-Team-Key": SECRET}},
    }  # fmt: skip
    response = acme_api.post("/api/v1/providers/", body)
    assert response.status_code == 201, response.content
    return response


def test_header_values_are_read_back_masked(acme_api, upstream):
    created = create(acme_api, upstream)
    assert SECRET not in created.content.decode()
    assert created.json()["settings"]["headers"] == {"X-Team-Key": "••••"}
    listed = acme_api.get("/api/v1/providers/")
    assert SECRET not in listed.content.decode()


def test_a_masked_value_sent_back_keeps_the_stored_one(acme_api, acme, upstream):
    settings = create(acme_api, upstream).json()["settings"]
    assert acme_api.patch("/api/v1/providers/own/", {"settings": settings}).status_code == 200
    with tenant_context(acme.pk):
        assert ProviderConfig.objects.get(tenant=acme, name="own").settings["headers"] == {"X-Team-Key": SECRET}
    assert acme_api.patch("/api/v1/providers/own/", {"settings": {"headers": {"X-Team-Key": "new"}}}).status_code == 200
    with tenant_context(acme.pk):
        assert ProviderConfig.objects.get(tenant=acme, name="own").settings["headers"] == {"X-Team-Key": "new"}
