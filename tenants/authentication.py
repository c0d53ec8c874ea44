"""Bearer-token authentication for the REST API and /v1, with an in-process cache so
the completion hot path does not touch the database for a known token (`identify` is
the async entry for both completion faces)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.db.models import Q
from django.utils import timezone
from rest_framework import authentication, permissions

from axonflow_site.errors import Forbidden, Unauthorized
from tenants.models import ApiToken, TokenScope, hash_token

CACHE_TTL_SECONDS = 30.0
LAST_USED_RESOLUTION_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    token_id: int
    tenant_id: int
    tenant_slug: str
    plan: str
    scope: str
    name: str
    prefix: str = ""

    @property
    def label(self) -> str:
        """How the token is named in the audit log: its name and public prefix."""
        return f"{self.name} ({self.prefix})"

    @property
    def is_authenticated(self) -> bool:  # lets DRF treat it as request.user
        return True

    def allows(self, scope: str) -> bool:
        return self.scope == TokenScope.ADMIN or self.scope == scope


_cache: dict[str, tuple[float, TokenIdentity | None]] = {}
_last_used_written: dict[int, float] = {}
_lock = threading.Lock()


def lookup_token(raw: str) -> TokenIdentity | None:
    """The identity behind a raw token, or None. Cached for CACHE_TTL_SECONDS."""
    digest = hash_token(raw)
    now = time.monotonic()
    hit = _cache.get(digest)
    if hit and hit[0] > now:
        return hit[1]
    token = ApiToken.objects.active().select_related("tenant").filter(token_hash=digest).first()
    identity, ttl = None, CACHE_TTL_SECONDS
    if token is not None:
        identity = TokenIdentity(
            token.pk, token.tenant_id, token.tenant.slug, token.tenant.plan, token.scope, token.name, token.prefix
        )
        if token.expires_at is not None:  # cached no longer than the token lives
            ttl = min(ttl, (token.expires_at - timezone.now()).total_seconds())
    with _lock:
        _cache[digest] = (now + ttl, identity)
    return identity


def cached_lookup(raw: str) -> tuple[bool, TokenIdentity | None]:
    """(hit, identity) from the cache alone, never the database: for async callers,
    which send a miss to `lookup_token` through sync_to_async."""
    hit = _cache.get(hash_token(raw))
    if hit and hit[0] > time.monotonic():
        return True, hit[1]
    return False, None


def touch_last_used(identity: TokenIdentity) -> None:
    """Record use at most once a minute per token (one UPDATE, no read)."""
    now = time.monotonic()
    if now - _last_used_written.get(identity.token_id, -1e9) < LAST_USED_RESOLUTION_SECONDS:
        return
    _last_used_written[identity.token_id] = now
    stamp = timezone.now()
    ApiToken.objects.filter(pk=identity.token_id).filter(
        Q(last_used__isnull=True) | Q(last_used__lt=stamp)
    ).update(last_used=stamp)


def forget_tokens() -> None:
    """Drop the cache (a token was revoked or changed)."""
    with _lock:
        _cache.clear()


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _lookup_outside_request(raw: str) -> TokenIdentity | None:
    close_old_connections()  # asgiref's shared thread has no request cycle to do it
    try:
        return lookup_token(raw)
    finally:
        close_old_connections()


async def identify(authorization: str | None, *, in_request: bool) -> TokenIdentity:
    """The token's identity from the cache, or (on a miss) the database through
    sync_to_async. Raises Unauthorized. Never touches last_used: the usage writer stamps
    it off the request path."""
    raw = parse_bearer(authorization)
    if raw is None:
        raise Unauthorized("Missing bearer token: send 'Authorization: Bearer <token>'.")
    hit, identity = cached_lookup(raw)
    if not hit:
        identity = await sync_to_async(lookup_token if in_request else _lookup_outside_request)(raw)
    if identity is None:
        raise Unauthorized("Invalid or revoked API token.")
    return identity


def authenticate_header(header: str | None) -> TokenIdentity:
    """Raise Unauthorized unless the Authorization header carries a live token."""
    raw = parse_bearer(header)
    if raw is None:
        raise Unauthorized("Missing bearer token: send 'Authorization: Bearer <token>'.")
    identity = lookup_token(raw)
    if identity is None:
        raise Unauthorized("Invalid or revoked API token.")
    return identity


class BearerTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        identity = authenticate_header(request.META.get("HTTP_AUTHORIZATION"))
        touch_last_used(identity)
        return identity, identity

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="axonflow"'


class _ScopePermission(permissions.BasePermission):
    scope = TokenScope.ADMIN

    def has_permission(self, request, view) -> bool:
        identity = request.auth
        if not isinstance(identity, TokenIdentity):
            raise Unauthorized("Missing bearer token: send 'Authorization: Bearer <token>'.")
        if not identity.allows(self.scope):
            raise Forbidden(f"This token's scope '{identity.scope}' does not allow this endpoint.")
        return True


class HasTenantToken(_ScopePermission):
    """Admin-scope tokens: provider management, status, usage, weights."""

    scope = TokenScope.ADMIN


class HasCompletionsToken(_ScopePermission):
    """Any token: completions are allowed to both scopes."""

    scope = TokenScope.COMPLETIONS
