"""Provider configurations and their health observations.

Type-specific settings stay in `settings` (JSON); each adapter parses them into its own
dataclass, so this model carries no per-type accessors.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from tenants.models import Tenant


class ProviderType(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    OLLAMA = "ollama", "Ollama"
    BEDROCK = "bedrock", "AWS Bedrock"
    GEMINI = "gemini", "Google Gemini"
    CUSTOM = "custom", "Custom (OpenAI-compatible or factory)"


class HealthStatus(models.TextChoices):
    HEALTHY = "healthy", "Healthy"
    DEGRADED = "degraded", "Degraded"
    UNHEALTHY = "unhealthy", "Unhealthy"
    UNKNOWN = "unknown", "Unknown"


CREDENTIALS_REJECTED = "credentials_rejected"  # ProviderConfig.health_reason


class HealthSource(models.TextChoices):
    PROBE = "probe", "Probe"
    TRAFFIC = "traffic", "Traffic"


class OperatorState(models.TextChoices):
    """Set by an operator (SPEC §1), overriding derived health until cleared or expired."""

    NONE = "", "None"
    DRAINED = "drained", "Drained"  # no new traffic; in-flight work finishes
    FORCED_UNHEALTHY = "forced_unhealthy", "Forced unhealthy"
    FORCED_HEALTHY = "forced_healthy", "Forced healthy"


class ProviderConfigQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant | int):
        return self.filter(tenant=tenant)

    def enabled(self):
        return self.filter(enabled=True)


class ProviderConfig(models.Model):
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="providers")
    name = models.CharField(max_length=64)
    type = models.CharField(max_length=20, choices=ProviderType.choices)
    # Fernet token (MultiFernet, AXONFLOW_ENCRYPTION_KEYS); never the plain key.
    api_key_encrypted = models.TextField(blank=True, default="")
    api_key_last4 = models.CharField(max_length=4, blank=True, default="")
    # Alternative to a stored key: env:NAME, file:/path or an AWS Secrets Manager ARN.
    secret_ref = models.CharField(max_length=500, blank=True, default="")
    base_url = models.URLField(max_length=500, blank=True, default="")
    model = models.CharField(max_length=200)
    region = models.CharField(max_length=50, blank=True, default="")
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(default=0)
    weight = models.PositiveSmallIntegerField(default=50)
    rate_limit = models.PositiveIntegerField(default=0, help_text="requests per minute, 0 = unlimited")
    timeout_seconds = models.PositiveIntegerField(default=30)
    settings = models.JSONField(default=dict, blank=True)
    # Null means "from the price table" (providers/pricing.py).
    cost_input_per_1k = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    cost_output_per_1k = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(auto_now=True)

    # Derived health, cached on the row so the router and board read one table.
    health_status = models.CharField(max_length=20, choices=HealthStatus.choices, default=HealthStatus.UNKNOWN)
    health_source = models.CharField(max_length=20, choices=HealthSource.choices, blank=True, default="")
    health_changed_at = models.DateTimeField(null=True, blank=True)
    # Why, when the status alone does not say: CREDENTIALS_REJECTED while the upstream
    # refuses the provider's key (a 401/403 from traffic or a probe); "" otherwise.
    health_reason = models.CharField(max_length=40, blank=True, default="")
    last_checked_at = models.DateTimeField(null=True, blank=True)
    # Health worker lease: a worker claims a row by moving next_check_at forward.
    next_check_at = models.DateTimeField(default=timezone.now)

    # Operator state (providers/operator.py): who set it, why, when, and until when.
    operator_state = models.CharField(max_length=20, choices=OperatorState.choices, blank=True, default="")
    operator_reason = models.CharField(max_length=500, blank=True, default="")
    operator_by = models.CharField(max_length=200, blank=True, default="")
    operator_at = models.DateTimeField(null=True, blank=True)
    operator_until = models.DateTimeField(null=True, blank=True)

    # Other upstream model names this provider serves: a client asking for one of them
    # (or for `model`) is routed among the providers serving it (SPEC §2 rule 0).
    # Last among the fields: the name shadows django.db.models in the class body.
    models = models.JSONField(default=list, blank=True)

    objects = ProviderConfigQuerySet.as_manager()

    class Meta:
        ordering = ["-priority", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="provider_unique_name",
                violation_error_code="duplicate_provider",
                violation_error_message="A provider with this name already exists.",
            ),
            models.UniqueConstraint(fields=["tenant", "id"], name="provider_tenant_id"),
        ]
        indexes = [models.Index(fields=["next_check_at"], name="provider_next_check")]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"

    @property
    def api_key_set(self) -> bool:
        return bool(self.api_key_encrypted or self.secret_ref)

    def operator_state_at(self, now) -> str:
        """The operator state in force at `now`: "" when none is set or it has expired."""
        if self.operator_state and (self.operator_until is None or self.operator_until > now):
            return self.operator_state
        return ""

    @property
    def active_operator_state(self) -> str:
        return self.operator_state_at(timezone.now())


class HealthResultQuerySet(models.QuerySet):
    def probe_counts(self, tenant_id: int, since) -> dict[int, tuple[int, int]]:
        """{provider id: (probes, failed probes)} since `since` (one query)."""
        rows = (
            self.filter(tenant_id=tenant_id, source=HealthSource.PROBE, checked_at__gte=since)
            .values("provider_id")
            .annotate(total=models.Count("pk"), failed=models.Count("pk", filter=models.Q(status=HealthStatus.UNHEALTHY)))
        )
        return {r["provider_id"]: (r["total"], r["failed"]) for r in rows}


class HealthResult(models.Model):
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="+")
    provider = models.ForeignKey(ProviderConfig, models.CASCADE, related_name="health_results")
    # Outcome of this one observation: healthy (ok and fast), degraded (ok but slow) or unhealthy.
    status = models.CharField(max_length=20, choices=HealthStatus.choices)
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    checked_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=20, choices=HealthSource.choices, default=HealthSource.PROBE)

    objects = HealthResultQuerySet.as_manager()

    class Meta:
        ordering = ["-checked_at"]
        indexes = [
            models.Index(fields=["tenant", "checked_at"], name="health_tenant_time"),
            models.Index(fields=["provider", "checked_at"], name="health_provider_time"),
        ]

    def __str__(self) -> str:
        return f"{self.provider_id} {self.status} @ {self.checked_at:%H:%M:%S}"


class ModelRoute(models.Model):
    """A model name clients may ask for (`fast`, `gpt-4o`, `support-bot`), served by its
    targets only, each with its own upstream model (SPEC §1 "Model route")."""

    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="model_routes")
    name = models.CharField(max_length=128)
    description = models.CharField(max_length=500, blank=True, default="")
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="model_route_unique_name",
                violation_error_code="duplicate_route",
                violation_error_message="A model route with this name already exists.",
            ),
            models.UniqueConstraint(fields=["tenant", "id"], name="model_route_tenant_id"),
        ]

    def __str__(self) -> str:
        return self.name


class ModelRouteTarget(models.Model):
    """One target of a route: a provider, the upstream model to send it, a weight."""

    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="+")
    route = models.ForeignKey(ModelRoute, models.CASCADE, related_name="targets")
    provider = models.ForeignKey(ProviderConfig, models.CASCADE, related_name="route_targets")
    model = models.CharField(max_length=200)
    weight = models.PositiveSmallIntegerField(default=50)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["route", "provider"], name="model_route_target_unique_provider"),
        ]

    def __str__(self) -> str:
        return f"{self.route_id}: {self.provider_id} {self.model} ({self.weight})"
