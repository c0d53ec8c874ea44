"""PostgreSQL: the usage record table is partitioned by UTC day, and these functions
keep its partitions. On SQLite the table is a plain table and every function here is
a no-op (it answers "nothing done").

`routing_usagerecord` is `PARTITION BY RANGE (created)` (usage/migrations/0003), with
one partition per UTC day named `routing_usagerecord_pYYYYMMDD` and a DEFAULT
partition, `routing_usagerecord_default`, that takes any row whose day has no
partition, so an insert never fails for want of one. Its primary key is (id, created):
PostgreSQL requires the partition key in every unique constraint. Ids still come from
one identity sequence, so `id` alone stays unique and Django keeps it as the pk.

- `ensure_partitions()` creates today's partition and the next days' (the migration,
  `manage.py partitions` and `manage.py prune` call it). Rows already in the DEFAULT
  partition for such a day move into the new partition in the same transaction.
- `drop_partitions_before(day)` detaches and drops whole days: retention without a
  row-by-row DELETE (`manage.py prune`).
- `rows_in_default()` counts what the DEFAULT partition holds, per day. Such rows are
  stored, visible, confined by RLS and pruned like any other, only slower to query: they
  appear when partition maintenance has not run for longer than the days created ahead.
  `manage.py partitions --since DAY` creates the missing past days and moves them in.

Every partition gets the parent's row-level security (ENABLE, FORCE and a copy of its
policies). Queries through the parent, the only ones the application makes, are
checked against the parent's policies; the copies confine a query that names a
partition directly.

DDL on a partition takes an ACCESS EXCLUSIVE lock on the parent, so every change runs
in its own short transaction that first takes that lock with LOCK_TIMEOUT: it waits
behind a long report for at most that long (and the gateway's inserts wait behind it
only that long), then fails with OperationalError and can simply be run again. Under
the lock the catalog is read again, so concurrent callers (two servers, cron and a
deploy) create each partition once; the loser of a race finds it there.

The partitions are owned by whoever creates them and DDL needs the parent's owner:
run `partitions` and `prune` with the role that runs `migrate`.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta

from django.db import IntegrityError, ProgrammingError, connection, transaction
from django.utils import timezone

from tenants.models import Tenant
from tenants.rls import copy_rls_sql, current_tenant, set_tenant
from usage.models import UsageRecord

TABLE = UsageRecord._meta.db_table
DEFAULT_PARTITION = f"{TABLE}_default"
DAYS_AHEAD = 7  # a week of slack: maintenance may stop that long before rows go to DEFAULT
LOCK_TIMEOUT = "10s"
_NAME = re.compile(rf"^{TABLE}_p(\d{{8}})$")
_MOVING = "usage_partition_moving"

# SQLSTATEs: what a concurrent creator leaves us, and a DEFAULT partition holding the day's rows.
DUPLICATE_TABLE, UNIQUE_VIOLATION, CHECK_VIOLATION = "42P07", "23505", "23514"


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def today() -> date:
    return timezone.now().astimezone(UTC).date()


def is_partitioned() -> bool:
    """Whether the usage table is partitioned here (PostgreSQL after migration 0003)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [TABLE])
        return cursor.fetchone() is not None


def partition_days(cursor=None) -> list[date]:
    """The days that have a partition, oldest first (PostgreSQL; [] if not partitioned)."""
    if connection.vendor != "postgresql":
        return []
    if cursor is None:
        with connection.cursor() as cursor:
            return partition_days(cursor)
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
        [TABLE],
    )
    matches = (_NAME.match(name) for (name,) in cursor.fetchall())
    return sorted(datetime.strptime(m.group(1), "%Y%m%d").date() for m in matches if m)


def create_partition_sql(day: date, parent: str = TABLE) -> str:
    """The day's partition of `parent` (named after TABLE: a migration builds the new
    parent under another name, then renames it). Bounds are UTC instants, whatever the
    session's time zone."""
    quote = connection.ops.quote_name
    return (
        f"CREATE TABLE IF NOT EXISTS {quote(partition_name(day))} PARTITION OF {quote(parent)}"
        f" FOR VALUES FROM ('{day_start(day).isoformat()}') TO ('{day_start(day + timedelta(days=1)).isoformat()}')"
    )


def create_default_sql(parent: str = TABLE) -> str:
    quote = connection.ops.quote_name
    return f"CREATE TABLE IF NOT EXISTS {quote(DEFAULT_PARTITION)} PARTITION OF {quote(parent)} DEFAULT"


def _sqlstate(exc: Exception) -> str | None:
    return getattr(exc.__cause__, "sqlstate", None)


def create_partition(cursor, day: date, parent: str = TABLE) -> bool:
    """Create the day's partition with the parent's RLS, inside the caller's transaction,
    which must hold the parent's ACCESS EXCLUSIVE lock; True if this call created it.
    Rows of that day waiting in the DEFAULT partition move into it."""
    cursor.execute("SELECT to_regclass(%s)", [partition_name(day)])
    if cursor.fetchone()[0] is not None:
        return False
    try:
        with transaction.atomic():  # a savepoint: the failures below leave the transaction usable
            cursor.execute(create_partition_sql(day, parent))
    except (IntegrityError, ProgrammingError) as exc:
        if _sqlstate(exc) in (DUPLICATE_TABLE, UNIQUE_VIOLATION):
            return False  # created meanwhile by a caller that did not lock first
        if _sqlstate(exc) != CHECK_VIOLATION:
            raise
        _move_default_rows(cursor, day, parent)
    for statement in copy_rls_sql(cursor, parent, partition_name(day)):
        cursor.execute(statement)
    return True


def _move_default_rows(cursor, day: date, parent: str) -> None:
    """Create the day's partition although the DEFAULT partition holds rows of that day
    (PostgreSQL refuses while it does): take them out, create, put them back.

    The rows are read and written through the parent in each tenant's RLS context in
    turn (FORCE applies to this role too), held meanwhile in a temporary table, which has
    no RLS and lives only in this session and transaction."""
    quote = connection.ops.quote_name
    previous = current_tenant()
    bounds = [day_start(day), day_start(day + timedelta(days=1))]
    cursor.execute(f"CREATE TEMPORARY TABLE {_MOVING} (LIKE {quote(parent)})")
    for tenant_id in Tenant.objects.order_by("pk").values_list("pk", flat=True):
        set_tenant(tenant_id)
        cursor.execute(
            f"WITH moved AS (DELETE FROM {quote(parent)} WHERE created >= %s AND created < %s RETURNING *)"
            f" INSERT INTO {_MOVING} SELECT * FROM moved",
            bounds,
        )
    set_tenant(None)
    cursor.execute(create_partition_sql(day, parent))
    cursor.execute(f"SELECT DISTINCT tenant_id FROM {_MOVING} ORDER BY tenant_id")
    for (tenant_id,) in cursor.fetchall():
        set_tenant(tenant_id)
        cursor.execute(f"INSERT INTO {quote(parent)} SELECT * FROM {_MOVING} WHERE tenant_id = %s", [tenant_id])
    cursor.execute(f"DROP TABLE {_MOVING}")
    set_tenant(previous)


@contextlib.contextmanager
def locked() -> Iterator:
    """A transaction holding the usage table's ACCESS EXCLUSIVE lock (OperationalError
    after LOCK_TIMEOUT). Deferred foreign-key checks of an enclosing transaction run
    first: PostgreSQL refuses DDL on a table with pending trigger events (only a caller
    that wrote rows in the same transaction has any, such as a test)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_TIMEOUT])
        cursor.execute(f"LOCK TABLE {connection.ops.quote_name(TABLE)} IN ACCESS EXCLUSIVE MODE")
        yield cursor


def ensure_partitions(days_ahead: int = DAYS_AHEAD, since: date | None = None) -> list[date]:
    """Create the partitions of every day from `since` (default: today, UTC) through
    `days_ahead` days after today that do not exist yet, each in its own transaction;
    returns the days created. Idempotent; a no-op (returns []) where the table is not
    partitioned. Raises ValueError for a negative `days_ahead` or a `since` after the
    last day, OperationalError when the lock is not granted in LOCK_TIMEOUT."""
    if days_ahead < 0:
        raise ValueError("days_ahead must be 0 or more")
    first, last = since or today(), today() + timedelta(days=days_ahead)
    if first > last:
        raise ValueError(f"since ({first}) is after the last day to create ({last})")
    if not is_partitioned():
        return []
    existing = set(partition_days())
    created = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        if day in existing:
            continue
        with locked() as cursor:
            if create_partition(cursor, day):
                created.append(day)
    return created


def drop_partitions_before(day: date) -> list[date]:
    """Detach and drop every day partition whose day is before `day` (its rows with it),
    one short transaction each; returns the days dropped. The DEFAULT partition is never
    dropped: `prune` deletes its old rows in batches. A no-op where not partitioned."""
    if not is_partitioned():
        return []
    quote = connection.ops.quote_name
    dropped = []
    for old in (d for d in partition_days() if d < day):
        with locked() as cursor:
            if old not in partition_days(cursor):
                continue  # dropped meanwhile by another caller
            name = quote(partition_name(old))
            cursor.execute(f"ALTER TABLE {quote(TABLE)} DETACH PARTITION {name}")
            cursor.execute(f"DROP TABLE {name}")
        dropped.append(old)
    return dropped


def rows_in_default() -> Counter[date]:
    """{UTC day: rows} in the DEFAULT partition, counted in each tenant's RLS context (a
    maintenance read: one query per tenant on a partition that is normally empty)."""
    if not is_partitioned():
        return Counter()
    counts: Counter[date] = Counter()
    quote = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        previous = current_tenant()
        for tenant_id in Tenant.objects.order_by("pk").values_list("pk", flat=True):
            set_tenant(tenant_id)
            cursor.execute(
                f"SELECT (created AT TIME ZONE 'UTC')::date, count(*) FROM {quote(DEFAULT_PARTITION)} GROUP BY 1"
            )
            counts.update(dict(cursor.fetchall()))
        set_tenant(previous)
    return counts
