"""Tenants, memberships and API tokens.

Membership and ApiToken are the deliberate exceptions to row-level security: they are
read before a tenant is known (a user's memberships at login, a token by its hash),
always by exact key. See README, "Row-level security".
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "axf_"
# What is kept and shown of a token to tell it apart: "axf_" and 3 characters, shorter
# than any 8-character piece the leak tests look for (tests/test_no_leaks.py).
PREFIX_LENGTH = 7


class Plan(models.TextChoices):
    COMMUNITY = "community", "Community"
    ENTERPRISE = "enterprise", "Enterprise"


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    OPERATOR = "operator", "Operator"
    VIEWER = "viewer", "Viewer"


# Roles ordered by power: a role may do everything a lower one may.
ROLE_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class Tenant(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.COMMUNITY)
    health_interval_seconds = models.PositiveIntegerField(default=30)
    # Status-derivation thresholds; empty means the defaults in routing/health.py.
    health_settings = models.JSONField(default=dict, blank=True)
    # Retry policy overrides (routing/retry.py RetryPolicy, same keys); empty means the defaults.
    retry_settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="Retry policy overrides, e.g. {\"max_attempts\": 3, \"deadline_seconds\": 30}; see docs/reliability.md.",
    )
    store_prompts = models.BooleanField(default=False)
    # Requests per minute over all of the tenant's API calls (/v1 and /api/v1), shared by
    # every process through Redis; 0 = unlimited. routing/ratelimit.py check_tenant.
    api_rate_limit = models.PositiveIntegerField(
        default=0, help_text="API requests per minute for all of this tenant's tokens together; 0 = unlimited."
    )
    # The zone budget periods (days, months) follow (usage/budgets.py); an IANA name.
    time_zone = models.CharField(max_length=64, default="UTC", help_text="IANA time zone of budget periods, e.g. Europe/Berlin.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"

    def allows(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


class TokenScope(models.TextChoices):
    COMPLETIONS = "completions", "Completions only"
    ADMIN = "admin", "Admin (everything)"


def hash_token(raw: str) -> str:
    """HMAC-SHA256 of the token under SECRET_KEY: a DB leak alone does not reveal tokens."""
    return hmac.new(settings.SECRET_KEY.encode(), raw.encode(), hashlib.sha256).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        """Neither revoked nor expired."""
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=timezone.now())
        )


class ApiToken(models.Model):
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=20, choices=TokenScope.choices, default=TokenScope.COMPLETIONS)
    prefix = models.CharField(max_length=16, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # This token's own limits over any sliding minute, shared by every process through
    # Redis (routing/token_limits.py); 0 = none.
    rpm_limit = models.PositiveIntegerField(default=0, help_text="requests per minute; 0 = unlimited")
    tpm_limit = models.PositiveIntegerField(default=0, help_text="tokens per minute; 0 = unlimited")

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "id"], name="apitoken_tenant_id"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(
        cls, tenant: Tenant, name: str, scope: str = TokenScope.COMPLETIONS, expires_at=None, **limits: int
    ) -> tuple[ApiToken, str]:
        """Create a token and return it with the raw value, which is never stored."""
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            tenant=tenant, name=name, scope=scope, prefix=raw[:PREFIX_LENGTH], token_hash=hash_token(raw),
            expires_at=expires_at, **limits,
        )  # fmt: skip
        return token, raw

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())


class ActorKind(models.TextChoices):
    USER = "user", "User"
    TOKEN = "token", "API token"
    COMMAND = "command", "Management command"
    SYSTEM = "system", "System"


class AuditEntry(models.Model):
    """One change to configuration or access (SPEC §1 "Audit entry"). Written by
    tenants/audit.py only; `before` and `after` hold the changed fields, never a key,
    token or secret value."""

    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="+")
    created = models.DateTimeField(default=timezone.now)
    actor_kind = models.CharField(max_length=10, choices=ActorKind.choices)
    actor = models.CharField(max_length=200)  # "alice", "ci-bot (axf_Ab12Cd34)", "load_demo"
    object_type = models.CharField(max_length=40)  # provider, model_route, api_token, membership, budget, tenant
    object_id = models.CharField(max_length=64, blank=True, default="")
    object_name = models.CharField(max_length=200, blank=True, default="")
    action = models.CharField(max_length=40)  # create, update, delete, revoke, drain, force_unhealthy, …
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["tenant", "created", "id"], name="audit_tenant_time")]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_type} {self.object_name}"
