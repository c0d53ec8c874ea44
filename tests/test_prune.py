"""`manage.py prune --days N`: old health results, usage records and metric buckets
go, in batches, for every tenant; recent ones stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from providers.models import HealthResult
from usage.management.commands import prune
from usage.models import MetricBucket, UsageRecord


def seed(tenant, config, as_tenant, ages_in_days: list[float]) -> None:
    now = timezone.now()
    with as_tenant(tenant):
        for i, age in enumerate(ages_in_days):
            when = now - timedelta(days=age)
            HealthResult.objects.create(tenant=tenant, provider=config, status="healthy", checked_at=when)
            UsageRecord.objects.create(tenant=tenant, provider=config, status="success", created=when)
            minute = when.replace(second=0, microsecond=0) - timedelta(minutes=i)  # unique per provider
            MetricBucket.objects.create(tenant=tenant, provider=config, minute=minute)


def counts(tenant, as_tenant) -> tuple[int, int, int]:
    with as_tenant(tenant):
        return tuple(m.objects.filter(tenant=tenant).count() for m in (HealthResult, UsageRecord, MetricBucket))


def test_it_deletes_what_is_older_than_the_given_days_for_every_tenant(acme, globex, make_provider, as_tenant, capsys):
    a = make_provider(acme, name="a")
    g = make_provider(globex, name="g")
    seed(acme, a, as_tenant, [0.1, 2, 9, 40])
    seed(globex, g, as_tenant, [1, 8, 100])
    call_command("prune", "--days", "7")
    assert counts(acme, as_tenant) == (2, 2, 2)
    assert counts(globex, as_tenant) == (1, 1, 1)
    out = capsys.readouterr().out
    assert "providers.HealthResult: deleted 4 row(s) older than 7 day(s)" in out
    assert "usage.UsageRecord: deleted 4 row(s)" in out
    assert "usage.MetricBucket: deleted 4 row(s)" in out


def test_the_default_is_the_retention_setting(acme, make_provider, as_tenant, settings):
    settings.AXONFLOW_RETENTION_DAYS = 30
    a = make_provider(acme, name="a")
    seed(acme, a, as_tenant, [29, 31])
    call_command("prune")
    assert counts(acme, as_tenant) == (1, 1, 1)


def test_it_deletes_in_small_batches(acme, make_provider, as_tenant, monkeypatch):
    a = make_provider(acme, name="a")
    seed(acme, a, as_tenant, [10] * 7)
    batches = []
    real = prune.prune_batch

    def spy(tenant_id, model, field, cutoff, batch_size):
        deleted = real(tenant_id, model, field, cutoff, batch_size)
        batches.append((model.__name__, deleted))
        return deleted

    monkeypatch.setattr(prune, "prune_batch", spy)
    call_command("prune", "--days", "1", "--batch-size", "3")
    assert [d for m, d in batches if m == "HealthResult"] == [3, 3, 1]
    assert max(d for _, d in batches) <= 3
    assert counts(acme, as_tenant) == (0, 0, 0)


def test_with_nothing_old_it_deletes_nothing(acme, make_provider, as_tenant, capsys):
    a = make_provider(acme, name="a")
    seed(acme, a, as_tenant, [0, 1])
    call_command("prune", "--days", "3")
    assert counts(acme, as_tenant) == (2, 2, 2)
    assert "deleted 0 row(s)" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--days", "0"], ["--days", "-5"], ["--batch-size", "0"]])
def test_it_refuses_arguments_that_would_delete_everything_or_nothing(acme, make_provider, as_tenant, args):
    a = make_provider(acme, name="a")
    seed(acme, a, as_tenant, [0.5, 50])
    with pytest.raises(CommandError):
        call_command("prune", *args)
    assert counts(acme, as_tenant) == (2, 2, 2)
