"""What happened to routed requests: one UsageRecord per request, and per-minute
metric buckets per provider that the status API aggregates over windows.

The tables keep the names they were created with (`routing_usagerecord`,
`routing_metricbucket`): the models moved here from `routing` by a state-only
migration, with their rows and row-level security policies untouched.

On PostgreSQL `routing_usagerecord` is partitioned by day on `created`, with the
database's primary key (id, created); Django's pk stays `id`, which the identity
sequence keeps unique (usage/partitions.py, migration 0003)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from providers.models import ProviderConfig
from tenants.models import ApiToken, Tenant


class UsageStatus(models.TextChoices):
    SUCCESS = "success", "Success"
    ERROR = "error", "Error"


class UsageRecord(models.Model):
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="+")
    token = models.ForeignKey(ApiToken, models.SET_NULL, null=True, blank=True, related_name="+")
    provider = models.ForeignKey(ProviderConfig, models.SET_NULL, null=True, blank=True, related_name="+")
    # Names survive the provider's deletion; the log stays readable.
    provider_name = models.CharField(max_length=64, blank=True, default="")
    providers_tried = models.JSONField(default=list, blank=True)
    attempts = models.JSONField(default=list, blank=True)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=10, choices=UsageStatus.choices)
    status_code = models.PositiveSmallIntegerField(default=200)
    error_code = models.CharField(max_length=40, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    stream = models.BooleanField(default=False)
    latency_ms = models.FloatField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    currency = models.CharField(max_length=3, default="USD")
    request_id = models.CharField(max_length=64, blank=True, default="")
    prompt = models.TextField(null=True, blank=True)  # only when the tenant opts in
    created = models.DateTimeField(default=timezone.now)
    endpoint = models.CharField(max_length=20, default="chat")  # chat, embeddings, messages
    model_requested = models.CharField(max_length=200, blank=True, default="")
    # The routing trace (SPEC §2 rule 6): candidates, what excluded each, weights, the
    # draw; built off the request path by the usage writer (routing/trace.py).
    trace = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "routing_usagerecord"
        ordering = ["-created", "-id"]
        indexes = [
            # Keyset pages of the request log: (created, id) descending within a tenant.
            models.Index(fields=["tenant", "created", "id"], name="usage_tenant_time_id"),
            models.Index(fields=["tenant", "provider_name", "created"], name="usage_tenant_provider_time"),
        ]

    def __str__(self) -> str:
        return f"{self.provider_name or '-'} {self.status} {self.latency_ms:.0f} ms"


class MetricBucket(models.Model):
    """One provider's traffic in one minute; histogram buckets are LATENCY_BOUNDS_MS."""

    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="+")
    provider = models.ForeignKey(ProviderConfig, models.CASCADE, related_name="metric_buckets")
    minute = models.DateTimeField()
    request_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    # Attempts that re-sent a request to a provider that had failed it (routing/retry.py).
    retry_count = models.PositiveIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0)
    latency_histogram = models.JSONField(default=list)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=0)

    class Meta:
        db_table = "routing_metricbucket"
        constraints = [
            models.UniqueConstraint(fields=["provider", "minute"], name="metric_bucket_unique"),
        ]
        indexes = [models.Index(fields=["tenant", "minute"], name="metric_tenant_minute")]


class BudgetPeriod(models.TextChoices):
    DAY = "day", "Day"
    MONTH = "month", "Month"


class Budget(models.Model):
    """A spend and/or token limit over a period (SPEC §1 Budget, §2 rule 8): for the
    whole tenant, or for one API token. A request that could take the period's spend
    past the limit is refused with budget_exceeded before any upstream call
    (usage/holds.py); crossing `soft_percent` of a limit is shown and logged."""

    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="budgets")
    token = models.ForeignKey(ApiToken, models.CASCADE, null=True, blank=True, related_name="budgets")
    name = models.CharField(max_length=64)
    period = models.CharField(max_length=10, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH)
    limit_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    limit_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    soft_percent = models.PositiveSmallIntegerField(default=80)
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="budget_unique_name",
                                    violation_error_code="duplicate_budget"),  # fmt: skip
            models.CheckConstraint(
                condition=models.Q(limit_usd__isnull=False) | models.Q(limit_tokens__isnull=False),
                name="budget_has_a_limit",
            ),
            models.CheckConstraint(condition=models.Q(soft_percent__lte=100), name="budget_soft_percent"),
            models.UniqueConstraint(fields=["tenant", "id"], name="budget_tenant_id"),  # composite FKs (RLS)
        ]

    def __str__(self) -> str:
        return self.name


class BudgetSpend(models.Model):
    """The durable ledger: a budget's spend in one period, written by the usage writer in
    the same transaction as the usage records it counts (so they agree exactly)."""

    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="+")
    budget = models.ForeignKey(Budget, models.CASCADE, related_name="spends")
    period_start = models.DateField()
    spent_usd = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    spent_tokens = models.PositiveBigIntegerField(default=0)
    requests = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["budget", "period_start"], name="budget_spend_unique"),
        ]
