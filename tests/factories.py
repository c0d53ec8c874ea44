"""factory_boy factories. Tenant-owned rows are created inside their tenant's RLS
context, as the application itself does."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from providers.models import ProviderConfig
from providers.validation import apply_provider_config
from tenants.models import Membership, Role, Tenant
from tenants.rls import tenant_context


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"tenant{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("password123")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    tenant = factory.SubFactory(TenantFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.VIEWER


class ProviderConfigFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderConfig

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"provider{n}")
    type = "openai"
    model = "gpt-4o-mini"
    base_url = "http://127.0.0.1:9"
    weight = 50
    priority = 0

    @classmethod
    def _create(cls, model_class, *args, api_key: str = "", **kwargs):
        config = model_class(*args, **kwargs)
        if api_key:
            apply_provider_config(config, {"api_key": api_key})
        with tenant_context(config.tenant_id):
            config.save()
        return config
