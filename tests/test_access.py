"""tenants/access.py: the one place console requests are scoped to the active tenant."""

from __future__ import annotations

import pytest
from django.http import Http404
from django.test import RequestFactory

from providers.models import ProviderConfig
from tenants.access import get_for_tenant
from tenants.middleware import resolve_active_tenant
from tenants.rls import tenant_context


def request_of(user):
    request = RequestFactory().get("/")
    request.user, request.session = user, {}
    request.tenant, request.membership, request.memberships = resolve_active_tenant(request)
    return request


@pytest.fixture
def acme_provider(acme, make_provider):
    return make_provider(acme, name="primary")


def test_a_member_gets_the_object_of_the_active_tenant(alice, bob, acme_provider):
    for user in (alice, bob):
        with tenant_context(acme_provider.tenant_id):
            assert get_for_tenant(request_of(user), ProviderConfig.objects.all(), name="primary") == acme_provider


def test_another_tenants_object_is_as_missing_as_one_that_does_not_exist(carol, acme_provider):
    request = request_of(carol)
    with tenant_context(request.tenant.pk):
        with pytest.raises(Http404):
            get_for_tenant(request, ProviderConfig.objects.all(), name="primary")
        with pytest.raises(Http404):
            get_for_tenant(request, ProviderConfig.objects.all(), name="nothing-by-that-name")


def test_a_user_without_a_tenant_gets_404(django_user_model, acme_provider):
    loner = django_user_model.objects.create_user("loner", password="password123")
    with pytest.raises(Http404):
        get_for_tenant(request_of(loner), ProviderConfig.objects.all(), name="primary")
