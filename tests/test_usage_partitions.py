"""The usage table partitioned by UTC day on PostgreSQL (usage/partitions.py, usage
migration 0003): records land in their day, the DEFAULT partition catches the rest,
retention drops whole days, RLS still confines every tenant, keyset pages cross day
boundaries, and the migration keeps existing rows both ways. The board and the status
API read the minute rollups only, never the usage records.

PostgreSQL-only tests carry `requires_postgres` (skipped on SQLite; .ci/run runs them on
PostgreSQL and fails on any skip). The rest run on both databases."""

from __future__ import annotations

import re
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console import live
from providers.models import HealthResult
from tenants.models import ApiToken, TokenScope
from tenants.rls import tenant_context
from tests.conftest import requires_postgres
from usage import partitions
from usage.metrics import WINDOWS
from usage.models import MetricBucket, UsageRecord
from usage.queries import filter_records, page

TABLE = UsageRecord._meta.db_table
FAR_FUTURE = datetime(2199, 1, 1, 12, tzinfo=UTC)


def fetch(sql: str, params=None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall() if cursor.description else []


def at(day: date, hour: int = 12, minute: int = 0, second: float = 0) -> datetime:
    return partitions.day_start(day) + timedelta(hours=hour, minutes=minute, seconds=second)


def days_ago(n: int) -> date:
    return partitions.today() - timedelta(days=n)


def record(tenant, created: datetime, **fields) -> UsageRecord:
    with tenant_context(tenant.pk):
        return UsageRecord.objects.create(tenant=tenant, status="success", provider_name="a", created=created, **fields)


def partition_of(rec: UsageRecord) -> str:
    with tenant_context(rec.tenant_id):
        [(name,)] = fetch(f"SELECT tableoid::regclass::text FROM {TABLE} WHERE id = %s", [rec.pk])
    return name


def a_day_without_partition(oldest: int = 5) -> date:
    """A past day with no partition (other tests' migrations leave some past days)."""
    existing = set(partitions.partition_days())
    return next(day for day in map(days_ago, range(oldest, 400)) if day not in existing)


def count(tenant) -> int:
    with tenant_context(tenant.pk):
        return UsageRecord.objects.count()


# --- the partitioned table ------------------------------------------------------------------------


@requires_postgres
@pytest.mark.postgres
def test_the_usage_table_is_partitioned_by_range_of_created_with_a_default(db):
    [(strategy, key)] = fetch(
        "SELECT p.partstrat, a.attname FROM pg_partitioned_table p"
        " JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]"
        " WHERE p.partrelid = %s::regclass",
        [TABLE],
    )
    assert (strategy, key) == ("r", "created")
    children = {name for (name,) in fetch("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass", [TABLE])}  # fmt: skip
    assert partitions.DEFAULT_PARTITION in children
    ahead = {
        partitions.partition_name(partitions.today() + timedelta(days=i)) for i in range(partitions.DAYS_AHEAD + 1)
    }
    assert ahead <= children  # the migration created today and the days ahead
    [(key_columns,)] = fetch(
        "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY k(col, ord)"
        " JOIN pg_attribute a ON a.attnum = k.col WHERE c.conrelid = %s::regclass AND a.attrelid = c.conrelid"
        " AND c.contype = 'p'",
        [TABLE],
    )  # fmt: skip
    assert key_columns == ["id", "created"]  # the database's key; Django's pk stays `id`
    assert UsageRecord._meta.pk.name == "id"


@requires_postgres
@pytest.mark.postgres
def test_records_land_in_their_days_partition_and_far_future_ones_in_the_default(acme):
    first = days_ago(3)
    wanted = [first, first + timedelta(days=1), first + timedelta(days=2)]
    missing = [day for day in wanted if day not in partitions.partition_days()]
    assert partitions.ensure_partitions(since=first) == missing
    assert set(wanted) <= set(partitions.partition_days())
    rows = {
        day: record(acme, when)
        for day, when in [
            (first, at(first, 0, 0, 0)),  # the first instant of the day
            (first + timedelta(days=1), at(first + timedelta(days=1), 23, 59, 59.999999)),  # the last one
            (first + timedelta(days=2), at(first + timedelta(days=2))),
            (partitions.today(), timezone.now()),
        ]
    }
    assert {day: partition_of(rec) for day, rec in rows.items()} == {
        day: partitions.partition_name(day) for day in rows
    }
    assert partition_of(record(acme, FAR_FUTURE)) == partitions.DEFAULT_PARTITION
    assert count(acme) == 5


@requires_postgres
@pytest.mark.postgres
def test_ensure_partitions_is_idempotent_and_needs_a_sensible_range(db):
    partitions.ensure_partitions(since=days_ago(2))
    before = partitions.partition_days()
    assert partitions.ensure_partitions(since=days_ago(2)) == []
    assert partitions.partition_days() == before
    with pytest.raises(ValueError):
        partitions.ensure_partitions(days_ahead=-1)
    with pytest.raises(ValueError):
        partitions.ensure_partitions(days_ahead=0, since=partitions.today() + timedelta(days=1))


@requires_postgres
@pytest.mark.postgres
def test_rows_waiting_in_the_default_partition_move_into_their_days_new_partition(acme, globex):
    day = a_day_without_partition()
    mine, theirs = record(acme, at(day, 1), request_id="mine"), record(globex, at(day, 2), request_id="theirs")
    assert partition_of(mine) == partition_of(theirs) == partitions.DEFAULT_PARTITION
    assert partitions.rows_in_default()[day] == 2

    assert partitions.ensure_partitions(days_ahead=0, since=day)[0] == day

    assert partition_of(mine) == partition_of(theirs) == partitions.partition_name(day)  # same ids
    assert day not in partitions.rows_in_default()
    with tenant_context(acme.pk):
        assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["mine"]
    with tenant_context(globex.pk):
        assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["theirs"]


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_callers_create_each_partition_once():
    first = days_ago(4)
    missing = [day for day in (first + timedelta(days=i) for i in range(4)) if day not in partitions.partition_days()]
    results: list[list[date]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def create():
        try:
            barrier.wait()
            results.append(partitions.ensure_partitions(since=first))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        created = [day for result in results for day in result]
        assert sorted(created) == missing  # each once, by one caller
        assert set(created) <= set(partitions.partition_days())
    finally:
        partitions.drop_partitions_before(partitions.today())


# --- retention ------------------------------------------------------------------------------------


@requires_postgres
@pytest.mark.postgres
def test_prune_drops_whole_partitions_older_than_retention_and_keeps_the_rest(acme, globex, capsys):
    partitions.ensure_partitions(since=days_ago(12))
    for tenant in (acme, globex):
        for age in (12, 9, 8, 7, 3, 0):
            record(tenant, at(days_ago(age)), request_id=f"{tenant.slug}-{age}")
        record(tenant, datetime(2001, 1, 1, tzinfo=UTC), request_id=f"{tenant.slug}-ancient")  # DEFAULT
    assert {days_ago(age) for age in (12, 9, 8, 7)} <= set(partitions.partition_days())
    assert (count(acme), count(globex)) == (7, 7)

    call_command("prune", "--days", "7")

    days = partitions.partition_days()
    assert [day for day in days if day < days_ago(7)] == []  # whole days gone: 12, 11, 10, 9 and 8 days ago
    assert {days_ago(age) for age in (7, 3, 0)} <= set(days)
    for tenant in (acme, globex):
        with tenant_context(tenant.pk):
            kept = set(UsageRecord.objects.values_list("request_id", flat=True))
        # 7 days ago is the cutoff's own day: kept whole (as long as a day more than the setting).
        assert kept == {f"{tenant.slug}-{age}" for age in (7, 3, 0)}
    out = capsys.readouterr().out
    assert re.search(r"usage\.UsageRecord: dropped \d+ day partition\(s\) before " + str(days_ago(7)), out)
    assert "usage.UsageRecord: deleted 2 row(s) older than 7 day(s)" in out  # the DEFAULT partition's, in batches


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_prune_still_prunes_the_rest_when_a_long_reader_holds_the_usage_table(acme, make_provider, monkeypatch):
    old_day = a_day_without_partition(oldest=20)
    partitions.ensure_partitions(days_ahead=0, since=old_day)  # committed: a partition prune will want to drop
    provider = make_provider(acme, name="a")
    with tenant_context(acme.pk):
        HealthResult.objects.create(tenant=acme, provider=provider, status="healthy", checked_at=at(old_day))
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "200ms")
    holding, release = threading.Event(), threading.Event()

    def long_report():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS SHARE MODE")  # what a long SELECT holds
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    reader = threading.Thread(target=long_report)
    reader.start()
    try:
        assert holding.wait(10)
        with pytest.raises(CommandError, match="could not be locked; run prune again"):
            call_command("prune", "--days", "7")
    finally:
        release.set()
        reader.join(30)
    assert old_day in partitions.partition_days()  # left for the next run
    with tenant_context(acme.pk):
        assert HealthResult.objects.count() == 0  # the other tables were pruned anyway
    call_command("prune", "--days", "7")
    assert old_day not in partitions.partition_days()


def test_prune_deletes_old_usage_records_on_either_database(acme, as_tenant):
    for age in (0, 2, 40):
        record(acme, timezone.now() - timedelta(days=age), request_id=f"r{age}")
    call_command("prune", "--days", "7")
    with as_tenant(acme):
        assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["r0", "r2"]


def test_the_partitions_command_creates_days_ahead_once_or_says_there_is_nothing_to_do(db, capsys):
    call_command("partitions")
    call_command("partitions")
    out = capsys.readouterr().out.splitlines()
    if connection.vendor == "postgresql":
        assert out[-1] == "Created 0 day partition(s)."
        assert partitions.today() + timedelta(days=partitions.DAYS_AHEAD) in partitions.partition_days()
    else:
        assert out == ["The usage table is not partitioned on this database: nothing to do."] * 2
        assert partitions.ensure_partitions() == [] and partitions.drop_partitions_before(date.max) == []


# --- row-level security ---------------------------------------------------------------------------


@requires_postgres
@pytest.mark.postgres
def test_rls_confines_each_tenant_on_the_partitioned_table_and_on_each_partition(acme, globex):
    [(superuser, bypass)] = fetch("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    assert superuser is False and bypass is False  # policies would not apply otherwise
    partitions.ensure_partitions(since=days_ago(1))
    for tenant in (acme, globex):
        for when in (at(days_ago(1)), timezone.now(), FAR_FUTURE):
            record(tenant, when, request_id=tenant.slug)
    with tenant_context(acme.pk):
        assert set(UsageRecord.objects.values_list("request_id", flat=True)) == {"acme"}
        assert fetch(f"SELECT DISTINCT tenant_id FROM {TABLE}") == [(acme.pk,)]
        for name in (partitions.partition_name(days_ago(1)), partitions.DEFAULT_PARTITION):
            assert fetch(f"SELECT DISTINCT tenant_id FROM {name}") == [(acme.pk,)]  # named directly, too
        with pytest.raises(Exception, match="row-level security"):
            with tenant_context(acme.pk):
                UsageRecord.objects.create(tenant=globex, status="success", created=timezone.now())
    with tenant_context(None):
        assert fetch(f"SELECT count(*) FROM {TABLE}") == [(0,)]
    assert count(globex) == 3
    parent_policies = fetch("SELECT policyname, cmd, qual, with_check FROM pg_policies WHERE tablename = %s", [TABLE])
    for name in [partitions.DEFAULT_PARTITION, *map(partitions.partition_name, partitions.partition_days())]:
        assert fetch("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s", [name]) == [
            (True, True)
        ], name
        assert fetch("SELECT policyname, cmd, qual, with_check FROM pg_policies WHERE tablename = %s", [name]) == (
            parent_policies
        )


# --- keyset pages ---------------------------------------------------------------------------------


@requires_postgres
@pytest.mark.postgres
def test_keyset_pages_cross_a_partition_boundary_returning_every_record_once(acme):
    before, after = days_ago(2), days_ago(1)
    partitions.ensure_partitions(since=before)
    moments = [at(before, 23, 59, 58)] * 2 + [at(before, 23, 59, 59.999999)] * 3 + [at(after, 0)] * 3
    moments += [at(after, 0, 0, 0.000001), at(after, 1)]
    records = [record(acme, when) for when in moments]
    assert {partition_of(r) for r in records} == {partitions.partition_name(before), partitions.partition_name(after)}
    expected = [r.pk for r in sorted(records, key=lambda r: (r.created, r.pk), reverse=True)]

    with tenant_context(acme.pk):
        matching = filter_records(acme.pk, {}).records
        seen, cursor, pages = [], None, []
        while True:
            current = page(matching, cursor, 3)
            pages.append(current)
            seen += [r.pk for r in current.rows]
            if current.next_cursor is None:
                break
            cursor = current.next_cursor
        back, cursor = [], pages[-1].previous_cursor
        while cursor is not None:
            current = page(matching, cursor, 3)
            back = [r.pk for r in current.rows] + back
            cursor = current.previous_cursor
    assert seen == expected and len(pages) == 4
    assert back + [r.pk for r in pages[-1].rows] == expected  # and back again, newer pages


# --- the migration --------------------------------------------------------------------------------

BEFORE = [("usage", "0002_routing_trace_and_keyset_index")]


def migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets or executor.loader.graph.leaf_nodes())


def relkind() -> str:
    return fetch("SELECT relkind::text FROM pg_class WHERE oid = %s::regclass", [TABLE])[0][0]


def snapshot(tenants) -> dict:
    result = {}
    for tenant in tenants:
        with tenant_context(tenant.pk):
            fields = ("pk", "request_id", "created", "cost", "provider_id", "token_id")
            result[tenant.slug] = sorted(UsageRecord.objects.values_list(*fields))
    return result


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_every_row_both_ways(acme, globex, make_provider):
    for tenant in (acme, globex):
        # Foreign keys into RLS tables: validating them must see rows of every tenant.
        provider, token = make_provider(tenant, name="p"), ApiToken.issue(tenant, "t", TokenScope.ADMIN)[0]
        for when in (timezone.now(), at(days_ago(1), 23, 59, 59), at(days_ago(30)), FAR_FUTURE):
            record(tenant, when, request_id=f"{tenant.slug}-{when:%Y%m%d}", cost="0.00001234", provider=provider, token=token)  # fmt: skip
    rows = snapshot([acme, globex])
    assert relkind() == "p"
    try:
        check_both_ways(acme, globex, rows)
    finally:
        migrate(None)
        partitions.drop_partitions_before(partitions.today())


def check_both_ways(acme, globex, rows) -> None:
    migrate(BEFORE)  # back to a plain table
    assert relkind() == "r" and snapshot([acme, globex]) == rows
    assert partitions.partition_days() == []
    with tenant_context(acme.pk):
        assert fetch(f"SELECT DISTINCT tenant_id FROM {TABLE}") == [(acme.pk,)]  # RLS survived the way back

    migrate(None)  # and forward again, with data this time
    assert relkind() == "p" and snapshot([acme, globex]) == rows
    for tenant in (acme, globex):
        with tenant_context(tenant.pk):
            placed = dict(fetch(f"SELECT request_id, tableoid::regclass::text FROM {TABLE}"))
        assert placed[f"{tenant.slug}-{days_ago(30):%Y%m%d}"] == partitions.partition_name(days_ago(30))
        assert placed[f"{tenant.slug}-{FAR_FUTURE:%Y%m%d}"] == partitions.DEFAULT_PARTITION  # no far-future days
    newest = max(pk for tenant_rows in rows.values() for pk, *_ in tenant_rows)
    assert record(acme, timezone.now()).pk > newest  # the id sequence carried on
    with tenant_context(globex.pk):
        assert fetch(f"SELECT DISTINCT tenant_id FROM {TABLE}") == [(globex.pk,)]
        fetch("DELETE FROM providers_providerconfig")  # the foreign keys' ON DELETE still acts
        assert fetch(f"SELECT DISTINCT provider_id FROM {TABLE}") == [(None,)]


# --- the dashboards read minute rollups -----------------------------------------------------------


def test_the_status_api_and_the_board_never_query_usage_records(acme, acme_api, alice_client, make_provider, as_tenant):
    provider = make_provider(acme, name="a")
    record(acme, timezone.now(), provider=provider)
    minute = timezone.now().replace(second=0, microsecond=0)
    with as_tenant(acme):
        MetricBucket.objects.create(tenant=acme, provider=provider, minute=minute, request_count=1, latency_sum_ms=5)
    reads = {}
    for window in WINDOWS:
        with CaptureQueriesContext(connection) as api:
            assert acme_api.get("/api/v1/status/", {"window": window}).json()["providers"][0]["metrics"]["request_count"] == 1  # fmt: skip
        with CaptureQueriesContext(connection) as board:
            assert 'id="provider-' in live.snapshot(acme.pk, window)[0]
        with CaptureQueriesContext(connection) as page_:
            assert alice_client.get("/status/", {"window": window}).status_code == 200
        reads.update({("api", window): api, ("board", window): board, ("page", window): page_})
    for name, queries in reads.items():
        sql = [q["sql"] for q in queries.captured_queries]
        assert not [q for q in sql if TABLE in q], name
        assert [q for q in sql if MetricBucket._meta.db_table in q], name  # the rollups are what they read
