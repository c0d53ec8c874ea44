"""Personas (alice admin of acme, bob viewer of acme, dave operator of acme, carol admin
of globex), API clients, and service markers.

Tests that need PostgreSQL or Redis skip with a reason when DATABASE_URL / REDIS_URL
are not set; .ci/run sets both and fails on any skip.
"""

from __future__ import annotations

import contextlib
import os

import pytest
from django.conf import settings
from django.test import Client

from tenants.models import ApiToken, Plan, Role, TokenScope
from tenants.rls import tenant_context
from tests.factories import MembershipFactory, ProviderConfigFactory, TenantFactory, UserFactory

pytest_plugins = ["tests.fixtures_upstream", "tests.fixtures_gateway", "tests.fixtures_stack"]

TEST_KEYS = ["m3-n4qgSqCZvwCHO1Qwf4zDZ8s3Kf1tX7N7m-bxb0_4="]

requires_postgres = pytest.mark.skipif(
    not settings.IS_POSTGRES, reason="needs PostgreSQL: set DATABASE_URL (as .ci/run does)"
)
requires_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis: set REDIS_URL (as .ci/run does)")


@pytest.fixture(autouse=True)
def _fixed_encryption_keys(settings):
    settings.AXONFLOW_ENCRYPTION_KEYS = TEST_KEYS


@pytest.fixture(autouse=True)
def _private_base_urls_allowed(settings):
    """The fake upstream listens on 127.0.0.1; egress tests turn this off themselves."""
    settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = True


@pytest.fixture(autouse=True)
def _fresh_caches():
    from axonflow_site import shared
    from console import live
    from routing import cache, ratelimit, retry
    from routing.health import breaker, db_thread
    from tenants.authentication import forget_tokens
    from usage.writer import writer as usage_writer

    shared.reset()  # Redis counts as up: no test inherits another's outage
    forget_tokens()
    cache.invalidate_all()
    breaker.reset()  # circuits and thresholds are per process: no test inherits another's
    retry.reset()  # so are Retry-After cooldowns and retry budgets
    # Tests flush usage themselves (usage_writer.flush()); a background writer thread
    # would hold its own DB connection against the test's transaction.
    usage_writer.autostart = False
    usage_writer.discard()
    ratelimit.set_limiter(ratelimit.LocalLimiter())
    yield
    live.reset()
    db_thread.flush()  # no publish or health write of this test runs into the next one
    forget_tokens()
    cache.invalidate_all()
    breaker.reset()
    retry.reset()
    usage_writer.discard()
    ratelimit.set_limiter(None)
    shared.reset()


@pytest.fixture
def circuit_changes():
    """(provider_id, opened) for each events.circuit_changed the breaker sends, captured
    instead of stored: routing's receiver is disconnected for the test."""
    from axonflow_site import events
    from routing.health import probes

    changes: list[tuple[int, bool]] = []

    def capture(sender, *, provider_id, opened, **kwargs):
        changes.append((provider_id, opened))

    events.circuit_changed.disconnect(dispatch_uid="routing-circuit-changed")
    events.circuit_changed.connect(capture, weak=False, dispatch_uid="test-circuit-capture")
    yield changes
    events.circuit_changed.disconnect(dispatch_uid="test-circuit-capture")
    events.circuit_changed.connect(probes.on_circuit_changed, dispatch_uid="routing-circuit-changed")


@pytest.fixture
def acme(db):
    return TenantFactory(slug="acme", name="Acme", plan=Plan.ENTERPRISE)


@pytest.fixture
def globex(db):
    return TenantFactory(slug="globex", name="Globex", plan=Plan.COMMUNITY)


@pytest.fixture
def alice(acme):
    user = UserFactory(username="alice")
    MembershipFactory(user=user, tenant=acme, role=Role.ADMIN)
    return user


@pytest.fixture
def bob(acme):
    user = UserFactory(username="bob")
    MembershipFactory(user=user, tenant=acme, role=Role.VIEWER)
    return user


@pytest.fixture
def dave(acme):
    user = UserFactory(username="dave")
    MembershipFactory(user=user, tenant=acme, role=Role.OPERATOR)
    return user


@pytest.fixture
def carol(globex):
    user = UserFactory(username="carol")
    MembershipFactory(user=user, tenant=globex, role=Role.ADMIN)
    return user


def _logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice_client(alice):
    return _logged_in(alice)


@pytest.fixture
def bob_client(bob):
    return _logged_in(bob)


@pytest.fixture
def carol_client(carol):
    return _logged_in(carol)


class ApiClient(Client):
    """A test client that sends a bearer token and JSON bodies."""

    def __init__(self, raw_token: str | None):
        super().__init__()
        self.raw_token = raw_token

    def _auth(self, extra: dict) -> dict:
        if self.raw_token:
            extra.setdefault("HTTP_AUTHORIZATION", f"Bearer {self.raw_token}")
        return extra

    def get(self, path, data=None, **extra):
        return super().get(path, data, **self._auth(extra))

    def delete(self, path, data="", content_type="application/json", **extra):
        return super().delete(path, data, content_type=content_type, **self._auth(extra))

    def post(self, path, data=None, content_type="application/json", **extra):
        return super().post(path, data, content_type=content_type, **self._auth(extra))

    def patch(self, path, data=None, content_type="application/json", **extra):
        return super().patch(path, data, content_type=content_type, **self._auth(extra))

    def put(self, path, data=None, content_type="application/json", **extra):
        return super().put(path, data, content_type=content_type, **self._auth(extra))


def make_token(tenant, scope=TokenScope.ADMIN, name="test") -> str:
    _token, raw = ApiToken.issue(tenant, name, scope)
    return raw


@pytest.fixture
def acme_api(acme) -> ApiClient:
    """Admin-scope token of acme."""
    return ApiClient(make_token(acme))


@pytest.fixture
def acme_completions_api(acme) -> ApiClient:
    return ApiClient(make_token(acme, TokenScope.COMPLETIONS, "app"))


@pytest.fixture
def globex_api(globex) -> ApiClient:
    return ApiClient(make_token(globex))


@pytest.fixture
def as_tenant():
    """`with as_tenant(t):` reads and writes inside tenant t's RLS context."""

    @contextlib.contextmanager
    def enter(tenant):
        with tenant_context(tenant.pk if tenant else None):
            yield

    return enter


@pytest.fixture
def two(acme, make_provider, upstream):
    """`a` (priority 1, always tried first) and `b`, both of acme, on the fake upstream."""
    a = make_provider(acme, name="a", base_url=upstream.base_url("a"), api_key="sk-test-aaaa1111", priority=1)
    b = make_provider(acme, name="b", base_url=upstream.base_url("b"), api_key="sk-test-bbbb2222")
    return a, b


@pytest.fixture
def make_provider():
    def make(tenant, **kwargs):
        return ProviderConfigFactory(tenant=tenant, **kwargs)

    return make


def pytest_collection_modifyitems(config, items):
    if os.environ.get("AXONFLOW_REQUIRE_SERVICES"):
        missing = []
        if not settings.IS_POSTGRES:
            missing.append("DATABASE_URL (PostgreSQL)")
        if not settings.REDIS_URL:
            missing.append("REDIS_URL")
        if missing:
            raise pytest.UsageError(f"AXONFLOW_REQUIRE_SERVICES is set but {', '.join(missing)} is not configured")


def forget_redis_keys(pattern: str) -> None:
    """Delete REDIS_URL's keys under `pattern` after AXONFLOW_CHANNEL_PREFIX (ids repeat
    between test databases, so what an earlier run left must not count); no Redis: nothing."""
    if not settings.REDIS_URL:
        return
    import redis

    bus = redis.Redis.from_url(settings.REDIS_URL)
    try:
        for key in bus.scan_iter(f"{settings.CHANNEL_PREFIX}:{pattern}"):
            bus.delete(key)
    finally:
        bus.close()
