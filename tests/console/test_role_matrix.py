"""The role table of SPEC §4, checked for every console URL the resolver knows, so a
new page cannot be forgotten: each view declares its roles with tenants.access.require_role
and this test holds the server to them.

- a viewer's mutating requests get 403 and change nothing;
- an operator cannot reach the admin pages (tokens, members, budgets, audit);
- another tenant's admin gets 404 for every object of acme, and changes nothing.
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from providers.models import ModelRoute, ModelRouteTarget, ProviderConfig
from tenants.models import ROLE_RANK, ApiToken, AuditEntry, Membership, Role
from tenants.rls import tenant_context
from usage.models import Budget, UsageRecord

pytestmark = pytest.mark.django_db


def console_patterns() -> list[tuple[str, URLPattern]]:
    """(URL name, pattern) of every console view."""
    (resolver,) = [p for p in get_resolver().url_patterns if isinstance(p, URLResolver) and p.namespace == "console"]
    found = []

    def walk(patterns):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns)
            else:
                found.append((f"console:{pattern.name}", pattern))

    walk(resolver.url_patterns)
    return found


PATTERNS = console_patterns()


def url_for(name: str, pattern: URLPattern, world) -> str:
    wanted = set(pattern.pattern.regex.groupindex)
    kwargs = world.url_kwargs()
    unknown = wanted - set(kwargs)
    assert not unknown, f"{name}: teach tests/console/conftest.py World.url_kwargs about {sorted(unknown)}"
    return reverse(name, kwargs={k: kwargs[k] for k in wanted})


def roles_of(name: str, pattern: URLPattern) -> tuple[str, str]:
    roles = getattr(pattern.callback, "required_roles", None)
    assert roles is not None, f"{name}: every console view must be wrapped in tenants.access.require_role"
    return roles


def state_of(*tenants) -> dict:
    """Everything a console action could change, per tenant."""
    state = {}
    for tenant in tenants:
        with tenant_context(tenant.pk):
            state[tenant.slug] = (
                list(ProviderConfig.objects.filter(tenant=tenant).order_by("pk").values()),
                list(ModelRoute.objects.filter(tenant=tenant).order_by("pk").values()),
                list(ModelRouteTarget.objects.filter(tenant=tenant).order_by("pk").values()),
                list(ApiToken.objects.filter(tenant=tenant).order_by("pk").values()),
                list(Membership.objects.filter(tenant=tenant).order_by("pk").values()),
                AuditEntry.objects.filter(tenant=tenant).count(),
                UsageRecord.objects.filter(tenant=tenant).count(),
                list(Budget.objects.filter(tenant=tenant).order_by("pk").values()),
            )
    return state


def test_there_are_console_pages_to_check():
    names = {name for name, _ in PATTERNS}
    assert {"console:home", "console:status"} <= names


@pytest.mark.parametrize("name, pattern", PATTERNS, ids=[n for n, _ in PATTERNS])
def test_a_viewer_reads_what_a_viewer_may_and_changes_nothing(name, pattern, acme_world, bob_client):
    read, write = roles_of(name, pattern)
    url = url_for(name, pattern, acme_world)
    response = bob_client.get(url)
    if ROLE_RANK[read] > ROLE_RANK[Role.VIEWER]:
        assert response.status_code == 403, (name, response.status_code)
    else:
        assert response.status_code in (200, 302, 405), (name, response.status_code)
    before = state_of(acme_world.tenant)
    response = bob_client.post(url, {"name": "x", "weight": "1", "role": "admin", "state": "drained"})
    if ROLE_RANK[write] > ROLE_RANK[Role.VIEWER]:
        assert response.status_code == 403, (name, response.status_code)
    assert state_of(acme_world.tenant) == before, name


@pytest.mark.parametrize("name, pattern", PATTERNS, ids=[n for n, _ in PATTERNS])
def test_an_operator_cannot_reach_admin_pages(name, pattern, acme_world, dave_client):
    read, write = roles_of(name, pattern)
    url = url_for(name, pattern, acme_world)
    before = state_of(acme_world.tenant)
    get, post = dave_client.get(url), dave_client.post(url, {"name": "x", "role": "admin"})
    if read == Role.ADMIN:
        assert get.status_code == 403, (name, get.status_code)
    if write == Role.ADMIN:
        assert post.status_code == 403, (name, post.status_code)
        assert state_of(acme_world.tenant) == before, name


ADMIN_PAGES = {"console:tokens", "console:members", "console:budgets", "console:audit"}


def test_the_admin_pages_are_admin_only():
    for name, pattern in PATTERNS:
        if name in ADMIN_PAGES or name.split(":")[1].split("_")[0] in {"token", "member", "budget", "audit"}:
            assert roles_of(name, pattern) == (Role.ADMIN, Role.ADMIN), name


def test_another_tenants_admin_gets_404_for_every_object_and_changes_nothing(acme_world, globex_world, carol_client):
    checked = []
    for name, pattern in PATTERNS:
        if not pattern.pattern.regex.groupindex:
            continue  # a page of the active tenant: carol sees her own (the matrix above)
        url = url_for(name, pattern, acme_world)
        before = state_of(acme_world.tenant, globex_world.tenant)
        assert carol_client.get(url).status_code == 404, name
        assert carol_client.post(url, {"name": "x", "weight": "1", "role": "admin"}).status_code == 404, name
        assert state_of(acme_world.tenant, globex_world.tenant) == before, name
        checked.append(name)
    assert len(checked) == sum(1 for _, p in PATTERNS if p.pattern.regex.groupindex)
