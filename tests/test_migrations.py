"""A database created before UsageRecord and MetricBucket moved from `routing` to
`usage` migrates forward cleanly and keeps every row, foreign key and RLS policy."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tenants.models import ApiToken, TokenScope
from tenants.rls import tenant_context
from usage.models import MetricBucket, UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_THE_MOVE = [("routing", "0002_row_level_security"), ("usage", None)]
MINUTE = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def migrate(targets) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


def populate_the_old_tables(old_apps, tenant, provider, token) -> None:
    OldRecord = old_apps.get_model("routing", "UsageRecord")
    OldBucket = old_apps.get_model("routing", "MetricBucket")
    with tenant_context(tenant.pk):
        for i in range(3):
            OldRecord.objects.create(
                tenant_id=tenant.pk, token_id=token.pk, provider_id=provider.pk, provider_name=provider.name,
                providers_tried=[provider.name], attempts=[{"provider": provider.name, "outcome": "success"}],
                attempt_count=1, status="success", status_code=200, model="gpt-4o-mini", latency_ms=10.5 + i,
                prompt_tokens=7, completion_tokens=3 + i, total_tokens=10 + i, cost=Decimal("0.00001234"),
                request_id=f"req-{tenant.slug}-{i}", created=MINUTE,
            )  # fmt: skip
        OldBucket.objects.create(
            tenant_id=tenant.pk, provider_id=provider.pk, minute=MINUTE, request_count=3, error_count=1,
            latency_sum_ms=34.5, latency_histogram=[0, 3], prompt_tokens=21, completion_tokens=12, cost=Decimal("0.5"),
        )  # fmt: skip


def test_a_populated_database_from_before_the_move_migrates_forward_and_keeps_every_row(
    acme, globex, make_provider
):
    tenants = {t: (make_provider(t, name=f"{t.slug}-p"), ApiToken.issue(t, "old", TokenScope.ADMIN)[0]) for t in (acme, globex)}
    executor = migrate(BEFORE_THE_MOVE)
    old_apps = executor.loader.project_state(BEFORE_THE_MOVE[0]).apps
    for tenant, (provider, token) in tenants.items():
        populate_the_old_tables(old_apps, tenant, provider, token)

    migrate(executor.loader.graph.leaf_nodes())

    after = MigrationExecutor(connection)
    assert after.migration_plan(after.loader.graph.leaf_nodes()) == []  # fully migrated
    for tenant, (provider, token) in tenants.items():
        with tenant_context(tenant.pk):
            records = list(UsageRecord.objects.filter(tenant=tenant).order_by("request_id"))
            buckets = list(MetricBucket.objects.filter(tenant=tenant))
            if connection.vendor == "postgresql":  # the RLS policies still confine the moved tables
                assert (UsageRecord.objects.count(), MetricBucket.objects.count()) == (3, 1)
        assert [r.request_id for r in records] == [f"req-{tenant.slug}-{i}" for i in range(3)]
        assert {(r.tenant_id, r.provider_id, r.token_id) for r in records} == {(tenant.pk, provider.pk, token.pk)}
        assert [(r.completion_tokens, r.cost, r.attempts) for r in records] == [
            (3 + i, Decimal("0.00001234"), [{"provider": provider.name, "outcome": "success"}]) for i in range(3)
        ]
        [bucket] = buckets
        assert (bucket.provider_id, bucket.request_count, bucket.latency_histogram) == (provider.pk, 3, [0, 3])
    assert set(ContentType.objects.filter(model__in=["usagerecord", "metricbucket"]).values_list("app_label", flat=True)) == {
        "usage"
    }


def test_the_moved_models_keep_their_tables():
    # Their RLS policies and composite foreign keys were made for these names
    # (routing/migrations/0002); tests/test_rls.py checks the policies on PostgreSQL.
    assert (UsageRecord._meta.db_table, MetricBucket._meta.db_table) == ("routing_usagerecord", "routing_metricbucket")
