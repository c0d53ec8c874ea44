"""`manage.py prune [--days N] [--batch-size N]`: delete health results, usage records
and metric buckets older than N days (default AXONFLOW_RETENTION_DAYS).

Deletes in small batches, one short transaction each, inside each tenant's RLS
context, so no table is locked for long and the gateway keeps writing meanwhile.
Safe to run from cron while everything else runs.

Where the usage table is partitioned by day (PostgreSQL, usage/partitions.py), usage
is kept in whole UTC days: the partitions of days before the cutoff's day are
detached and dropped, and only rows outside the day partitions (the DEFAULT
partition) are deleted in batches, by the same day rule. A record may so outlive the
retention period by up to a day. The command then creates the coming days' partitions.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError
from django.utils import timezone

from providers.models import HealthResult
from tenants.models import Tenant
from tenants.rls import tenant_context
from usage import partitions
from usage.models import MetricBucket, UsageRecord

# (model, its timestamp field)
PRUNED = ((HealthResult, "checked_at"), (UsageRecord, "created"), (MetricBucket, "minute"))
DEFAULT_BATCH_SIZE = 1000


def prune_batch(tenant_id: int, model, field: str, cutoff, batch_size: int) -> int:
    """Delete one batch of the tenant's rows older than cutoff; returns rows deleted."""
    with tenant_context(tenant_id):
        old = model.objects.filter(tenant_id=tenant_id, **{f"{field}__lt": cutoff})
        ids = list(old.order_by(field).values_list("pk", flat=True)[:batch_size])
        if not ids:
            return 0
        # The time bound again lets PostgreSQL skip the usage table's other partitions.
        deleted, _ = model.objects.filter(pk__in=ids, **{f"{field}__lt": cutoff}).delete()
    return deleted


def prune_tenant(tenant_id: int, model, field: str, cutoff, batch_size: int) -> int:
    total = 0
    while True:
        deleted = prune_batch(tenant_id, model, field, cutoff, batch_size)
        total += deleted
        if deleted < batch_size:
            return total


class Command(BaseCommand):
    help = "Delete health results, usage records and metric buckets older than --days days."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, default=None, help="keep this many days (default AXONFLOW_RETENTION_DAYS)"
        )
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per delete transaction")

    def handle(self, *args, days=None, batch_size=DEFAULT_BATCH_SIZE, **options):
        days = settings.AXONFLOW_RETENTION_DAYS if days is None else days
        if days < 1:
            raise CommandError("--days must be at least 1 (this command never deletes today's data)")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        cutoff = timezone.now() - timedelta(days=days)
        cutoffs = {model: cutoff for model, _ in PRUNED}
        pruned, locked_out = PRUNED, None
        if partitions.is_partitioned():
            first_kept = partitions.day_start(cutoff.astimezone(UTC).date())
            cutoffs[UsageRecord] = first_kept
            try:
                dropped = partitions.drop_partitions_before(first_kept.date())
            except OperationalError as exc:  # not locked within LOCK_TIMEOUT: the rest still goes
                pruned, locked_out = tuple(p for p in PRUNED if p[0] is not UsageRecord), exc
            else:
                self.stdout.write(
                    f"{UsageRecord._meta.label}: dropped {len(dropped)} day partition(s) before {first_kept.date()}"
                    + (f" ({dropped[0]} to {dropped[-1]})" if dropped else "")
                )
        totals = {model: 0 for model, _ in pruned}
        for tenant_id in Tenant.objects.order_by("pk").values_list("pk", flat=True):
            for model, field in pruned:
                totals[model] += prune_tenant(tenant_id, model, field, cutoffs[model], batch_size)
        for model, count in totals.items():
            self.stdout.write(f"{model._meta.label}: deleted {count} row(s) older than {days} day(s)")
        if locked_out is None:
            try:
                created = partitions.ensure_partitions()
            except OperationalError as exc:
                locked_out = exc
            else:
                if created:
                    self.stdout.write(f"{UsageRecord._meta.label}: created {len(created)} day partition(s)")
        if locked_out is not None:
            raise CommandError(f"the usage table's partitions could not be locked; run prune again ({locked_out})")
