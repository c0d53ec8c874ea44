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


class HealthSource(models.TextChoices):
    PROBE = "probe", "Probe"
    TRAFFIC = "traffic", "Traffic"


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
    last_checked_at = models.DateTimeField(null=True, blank=True)
    # Health worker lease: a worker claims a row by moving next_check_at forward.
    next_check_at = models.DateTimeField(default=timezone.now)

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


class HealthResult(models.Model):
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="+")
    provider = models.ForeignKey(ProviderConfig, models.CASCADE, related_name="health_results")
    # Outcome of this one observation: healthy (ok and fast), degraded (ok but slow) or unhealthy.
    status = models.CharField(max_length=20, choices=HealthStatus.choices)
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    checked_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=20, choices=HealthSource.choices, default=HealthSource.PROBE)

    class Meta:
        ordering = ["-checked_at"]
        indexes = [
            models.Index(fields=["tenant", "checked_at"], name="health_tenant_time"),
            models.Index(fields=["provider", "checked_at"], name="health_provider_time"),
        ]

    def __str__(self) -> str:
        return f"{self.provider_id} {self.status} @ {self.checked_at:%H:%M:%S}"
