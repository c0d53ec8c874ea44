"""Row-level security on PostgreSQL, checked from the catalog and with raw SQL."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from providers.models import ProviderConfig
from tenants.rls import tenant_context
from tests.conftest import requires_postgres
from usage.models import MetricBucket, UsageRecord

pytestmark = requires_postgres

# Read before a tenant is known, always by exact key (README, "Row-level security").
EXEMPT_TABLES = {"tenants_membership", "tenants_apitoken"}


def fetch(sql: str, params=None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall() if cursor.description else []


def test_the_app_role_cannot_bypass_rls(db):
    [(superuser, bypass)] = fetch("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    assert superuser is False and bypass is False


def test_every_tenant_table_has_forced_rls_with_a_policy(db):
    tables = {row[0] for row in fetch(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'tenant_id'"
    )}  # fmt: skip
    moved = {UsageRecord._meta.db_table, MetricBucket._meta.db_table}  # now the usage app's (tests/test_migrations.py)
    assert {"providers_providerconfig", "providers_healthresult", *moved} <= tables
    for table in sorted(tables - EXEMPT_TABLES):
        [(enabled, forced)] = fetch("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s", [table])
        policies = fetch("SELECT qual, with_check FROM pg_policies WHERE tablename = %s", [table])
        assert enabled and forced, table
        assert policies and all("current_org_id" in (q or "") and "current_org_id" in (c or "") for q, c in policies), table


def test_raw_sql_sees_only_the_current_tenants_rows(acme, globex, make_provider):
    make_provider(acme, name="a1")
    make_provider(globex, name="g1")
    with tenant_context(acme.pk):
        assert fetch("SELECT name FROM providers_providerconfig") == [("a1",)]
    with tenant_context(globex.pk):
        assert fetch("SELECT name FROM providers_providerconfig") == [("g1",)]


def test_a_tenant_cannot_insert_a_row_for_another(acme, globex):
    with pytest.raises(Exception, match="row-level security"):
        with tenant_context(acme.pk):
            fetch(
                "INSERT INTO providers_providerconfig (tenant_id, name, type, api_key_encrypted, api_key_last4, secret_ref,"
                " base_url, model, region, enabled, priority, weight, rate_limit, timeout_seconds, settings, created,"
                " updated, health_status, health_source, next_check_at) VALUES (%s, 'x', 'openai', '', '', '', '', 'm', '',"
                " true, 0, 1, 0, 30, '{}', now(), now(), 'unknown', '', now()) RETURNING id",
                [globex.pk],
            )


def test_a_foreign_key_cannot_point_at_another_tenants_provider(acme, globex, make_provider):
    theirs = make_provider(globex, name="g1")
    with pytest.raises(IntegrityError):
        with tenant_context(acme.pk):
            fetch("SET CONSTRAINTS ALL IMMEDIATE")
            fetch(
                "INSERT INTO providers_healthresult (tenant_id, provider_id, status, error, checked_at, source)"
                " VALUES (%s, %s, 'healthy', '', now(), 'probe')",
                [acme.pk, theirs.pk],
            )


def test_without_a_tenant_nothing_is_visible(acme, make_provider):
    make_provider(acme, name="a1")
    with transaction.atomic():
        fetch("SELECT set_config('app.current_org_id', '', true)")
        assert fetch("SELECT count(*) FROM providers_providerconfig") == [(0,)]
    assert ProviderConfig.objects.filter(name="a1").count() == 0  # ORM too


@pytest.mark.django_db(transaction=True)
def test_after_a_request_the_connection_carries_no_tenant(alice, acme, make_provider, acme_api):
    from django.test import Client

    make_provider(acme, name="a1")
    client = Client()
    client.force_login(alice)
    assert client.get("/").status_code == 200
    assert acme_api.get("/api/v1/providers/").json()[0]["name"] == "a1"
    # Same connection, new transaction, no tenant set: no rows and no error.
    assert fetch("SELECT current_setting('app.current_org_id', true)") in ([("",)], [(None,)])
    assert fetch("SELECT count(*) FROM providers_providerconfig") == [(0,)]
