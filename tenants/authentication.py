"""Bearer-token authentication for the REST API and /v1, with an in-process cache so
the completion hot path does not touch the database for a known token (`identify` is
the async entry for both completion faces).

The cache is bounded: an LRU of MAX_CACHED_TOKENS live tokens, and a separate, smaller
LRU of MAX_CACHED_MISSES refused strings, so random bearer strings cannot grow it. An
entry lives CACHE_TTL_SECONDS at most, and never past its token's `expires_at`.

Revocation takes effect at once in every process: routing/signals.py drops the cache
here and broadcasts the drop through the channel layer when a token or tenant is saved
or deleted. A process that misses a broadcast (a Redis reconnect) still catches up
within GENERATION_CHECK_SECONDS: every change also moves a generation number in Redis
(`bump_generation`), which each server process reads once a second
(`watch_generation`, started with the invalidation listener), dropping its cache when
the number moved. While Redis cannot be reached (axonflow_site/shared.py) neither
reaches other processes: the cache is dropped once, entries then live
DEGRADED_TTL_SECONDS, and it is dropped again when the generation can be read.

While the database cannot be reached, a token whose entry expired is still accepted, for
at most AXONFLOW_STALE_IF_ERROR_SECONDS past its expiry and never past the token's own
(stale-if-error; logged once a minute): completions of known clients go on through a
database blip. A revocation drops entries outright, so none is ever used stale.

Secrets are never compared here: a token is found by its HMAC digest (`hash_token`)
through a unique index, so neither the cache nor the database compares the raw token,
and the digest found is checked again with `hmac.compare_digest`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from django.db.models import Q
from django.utils import timezone
from rest_framework import authentication, permissions

from axonflow_site import shared
from axonflow_site.errors import Forbidden, Unauthorized
from tenants.models import ApiToken, TokenScope, hash_token

log = logging.getLogger("axonflow.tokens")

CACHE_TTL_SECONDS = 30.0
DEGRADED_TTL_SECONDS = 5.0  # while Redis is down: how late a revocation elsewhere is seen here
STALE_RETRY_SECONDS = 5.0  # while the database is down: how often a stale token is looked up again
MAX_CACHED_TOKENS = 10_000
MAX_CACHED_MISSES = 1_000
GENERATION_CHECK_SECONDS = 1.0
MAX_TOKEN_CHARS = 256  # ours are 47; anything far longer is refused without hashing it
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
    api_rate_limit: int = 0  # the tenant's requests per minute (Tenant.api_rate_limit; 0 = unlimited)
    rpm_limit: int = 0  # this token's requests per minute (0 = unlimited)
    tpm_limit: int = 0  # this token's tokens per minute (0 = unlimited)

    @property
    def label(self) -> str:
        """How the token is named in the audit log: its name and public prefix."""
        return f"{self.name} ({self.prefix})"

    @property
    def is_authenticated(self) -> bool:  # lets DRF treat it as request.user
        return True

    def allows(self, scope: str) -> bool:
        return self.scope == TokenScope.ADMIN or self.scope == scope


class TokenCache:
    """Identities by token digest: an LRU of live tokens and a smaller one of misses,
    each entry with its deadline (time.monotonic). Thread-safe. A known token's entry
    outlives its deadline until `stale_until`, for `stale` to serve while the database
    is away.

    `generation` moves on every `clear`; a load that began before a clear passes the
    generation it saw to `put`, which then stores nothing (its answer may be stale)."""

    def __init__(self, size: int = MAX_CACHED_TOKENS, miss_size: int = MAX_CACHED_MISSES):
        self.size, self.miss_size = size, miss_size
        self.generation = 0
        self._known: OrderedDict[str, tuple[float, TokenIdentity, float]] = OrderedDict()
        self._misses: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str, now: float) -> tuple[bool, TokenIdentity | None]:
        """(hit, identity); a cached miss is (True, None)."""
        with self._lock:
            known = self._known.get(digest)
            if known is not None:
                if known[0] > now:
                    self._known.move_to_end(digest)
                    return True, known[1]
                if known[2] <= now:
                    del self._known[digest]
            missed = self._misses.get(digest)
            if missed is not None:
                if missed > now:
                    return True, None
                del self._misses[digest]
        return False, None

    def put(
        self, digest: str, identity: TokenIdentity | None, deadline: float, generation: int, stale_until: float = 0.0
    ) -> None:
        with self._lock:
            if generation != self.generation:
                return
            if identity is not None:
                entries, size = self._known, self.size
                entries[digest] = (deadline, identity, max(deadline, stale_until))
                self._misses.pop(digest, None)
            else:
                entries, size = self._misses, self.miss_size
                entries[digest] = deadline
                self._known.pop(digest, None)  # refused now: never served stale
            entries.move_to_end(digest)
            while len(entries) > size:
                entries.popitem(last=False)

    def stale(self, digest: str, now: float, retry: float) -> TokenIdentity | None:
        """The identity of an expired entry still within its `stale_until`, or None. The
        entry is served as live for `retry` seconds more (not past `stale_until`), so
        only one lookup per token tries the database in that time."""
        with self._lock:
            known = self._known.get(digest)
            if known is None or known[2] <= now:
                return None
            self._known[digest] = (min(now + retry, known[2]), known[1], known[2])
            return known[1]

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._known.clear()
            self._misses.clear()

    def __len__(self) -> int:
        return len(self._known) + len(self._misses)


_cache = TokenCache()
_last_used_written: dict[int, float] = {}
_stale_warned_at = -1e9


def lookup_token(raw: str) -> TokenIdentity | None:
    """The identity behind a raw token, or None. Cached for CACHE_TTL_SECONDS at most."""
    if len(raw) > MAX_TOKEN_CHARS:
        return None
    digest = hash_token(raw)
    now = time.monotonic()
    hit, identity = _cache.get(digest, now)
    if hit:
        return identity
    generation = _cache.generation
    try:
        token = ApiToken.objects.active().select_related("tenant").filter(token_hash=digest).first()
    except (OperationalError, InterfaceError) as exc:  # the database is away
        identity = _cache.stale(digest, now, STALE_RETRY_SECONDS)
        if identity is None:
            raise
        _warn_stale(exc)
        return identity
    ttl = DEGRADED_TTL_SECONDS if shared.degraded() else CACHE_TTL_SECONDS
    lives = float("inf")
    if token is not None and hmac.compare_digest(token.token_hash, digest):
        tenant = token.tenant
        identity = TokenIdentity(
            token.pk, token.tenant_id, tenant.slug, tenant.plan, token.scope, token.name, token.prefix,
            tenant.api_rate_limit, token.rpm_limit, token.tpm_limit,
        )  # fmt: skip
        if token.expires_at is not None:  # cached no longer than the token lives
            lives = (token.expires_at - timezone.now()).total_seconds()
    stale_for = settings.AXONFLOW_STALE_IF_ERROR_SECONDS
    _cache.put(digest, identity, now + min(ttl, lives), generation, now + min(ttl + stale_for, lives))
    return identity


def _warn_stale(exc: Exception) -> None:
    global _stale_warned_at
    now = time.monotonic()
    if now - _stale_warned_at > 60:
        _stale_warned_at = now
        log.warning("the database cannot be reached (%s); accepting cached API tokens up to %.0f s past their "
                    "expiry meanwhile", type(exc).__name__, settings.AXONFLOW_STALE_IF_ERROR_SECONDS)  # fmt: skip


def cached_lookup(raw: str) -> tuple[bool, TokenIdentity | None]:
    """(hit, identity) from the cache alone, never the database: for async callers,
    which send a miss to `lookup_token` through sync_to_async."""
    if len(raw) > MAX_TOKEN_CHARS:
        return True, None
    return _cache.get(hash_token(raw), time.monotonic())


def touch_last_used(identity: TokenIdentity) -> None:
    """Record use at most once a minute per token (one UPDATE, no read)."""
    now = time.monotonic()
    if now - _last_used_written.get(identity.token_id, -1e9) < LAST_USED_RESOLUTION_SECONDS:
        return
    if len(_last_used_written) >= MAX_CACHED_TOKENS:
        _last_used_written.clear()
    _last_used_written[identity.token_id] = now
    stamp = timezone.now()
    ApiToken.objects.filter(pk=identity.token_id).filter(
        Q(last_used__isnull=True) | Q(last_used__lt=stamp)
    ).update(last_used=stamp)


def forget_tokens() -> None:
    """Drop the cache (a token was revoked or changed)."""
    _cache.clear()


# --- the shared generation (Redis) ----------------------------------------------------------

_seen_generation: int | None = None
_generation_unreadable = False


def generation_key() -> str:
    return f"{settings.CHANNEL_PREFIX}:tokens:generation"


def bump_generation() -> None:
    """Move the shared generation on (one Redis INCR), after a token or tenant change is
    committed and before this process drops its own cache. Never raises; a no-op without
    REDIS_URL (one process: the local drop is the whole job) or while Redis is away."""
    global _seen_generation
    if not shared.usable():
        return
    try:
        # Our own move needs no second drop: the caller drops the cache right after.
        _seen_generation = int(shared.sync_client().incr(generation_key()))
    except Exception as exc:
        shared.failed(exc, "the token generation")
        return
    shared.succeeded()


def note_generation(value: int | None) -> bool:
    """Drop the cache if the shared generation moved since last seen, or could first not
    be read (None: changes may go unseen from now on; while it stays unreadable, entries
    live DEGRADED_TTL_SECONDS instead). Returns whether it dropped."""
    global _seen_generation, _generation_unreadable
    if value is None and _generation_unreadable:
        return False  # dropped when it became unreadable; entries are short-lived since
    if value is not None and value == _seen_generation:
        return False
    _seen_generation, _generation_unreadable = value, value is None
    forget_tokens()
    return True


async def watch_generation(interval: float = GENERATION_CHECK_SECONDS) -> None:
    """Read the shared generation every `interval` until cancelled (one task per server
    process, started with routing/cache.py's invalidation listener): the bound on how
    long a process that missed a broadcast keeps a revoked token. While Redis is away
    it reads only when axonflow_site/shared.py lets a trial through."""
    while True:
        await asyncio.sleep(interval)
        if not shared.usable():
            note_generation(None)  # Redis went away under another caller: drop once here too
            continue
        try:
            value = int(await shared.async_client().get(generation_key()) or 0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            shared.failed(exc, "the token generation watch")
            value = None
        else:
            shared.succeeded()
        note_generation(value)


# --- authentication -----------------------------------------------------------------------


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
