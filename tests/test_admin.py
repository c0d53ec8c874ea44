"""Django admin for superusers: write-only key, shared validation."""

from __future__ import annotations

import pytest
from django.test import Client

from providers.models import ProviderConfig
from tests.factories import MembershipFactory, UserFactory

KEY = "sk-admin-entered-key-98765"


@pytest.fixture
def root_client(acme):
    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    MembershipFactory(user=root, tenant=acme, role="admin")
    client = Client()
    client.force_login(root)
    return client


def form(acme, **extra):
    data = {
        "tenant": acme.pk, "name": "adm", "type": "openai", "model": "gpt-4o-mini", "base_url": "", "region": "",
        "enabled": "on", "priority": 0, "weight": 50, "rate_limit": 0, "timeout_seconds": 30, "settings": "{}",
        "cost_input_per_1k": "", "cost_output_per_1k": "", "secret_ref": "", "api_key": KEY,
    }  # fmt: skip
    data.update(extra)
    return data


def test_admin_adds_a_provider_with_an_encrypted_key(root_client, acme, as_tenant):
    r = root_client.post("/admin/providers/providerconfig/add/", form(acme))
    assert r.status_code == 302, r.content.decode()[:2000]
    with as_tenant(acme):
        config = ProviderConfig.objects.get(name="adm")
    assert KEY not in config.api_key_encrypted and config.api_key_last4 == "8765"
    page = root_client.get(f"/admin/providers/providerconfig/{config.pk}/change/").content.decode()
    assert KEY not in page and "8765" in page


def test_admin_applies_the_shared_validation(root_client, acme, as_tenant):
    r = root_client.post("/admin/providers/providerconfig/add/", form(acme, type="ollama"))
    assert r.status_code == 200 and "base_url" in r.content.decode()
    with as_tenant(acme):
        assert not ProviderConfig.objects.exists()


def test_admin_lists_tenants_and_memberships(root_client):
    assert root_client.get("/admin/tenants/tenant/").status_code == 200
    assert root_client.get("/admin/tenants/membership/").status_code == 200
