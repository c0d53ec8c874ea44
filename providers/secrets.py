"""Provider keys: encryption at rest, secret references, and scrubbing.

Keys are stored as MultiFernet tokens under AXONFLOW_ENCRYPTION_KEYS (the first key
encrypts, every key decrypts, so `rotate_keys` can move secrets to a new key). A
provider may instead name a reference, resolved only inside operator allowlists:

    env:NAME        NAME must start with one of AXONFLOW_SECRET_ENV_PREFIXES
    file:/path      the resolved path must lie in one of AXONFLOW_SECRET_FILE_DIRS
    arn:aws:secretsmanager:...   must start with one of AXONFLOW_SECRET_ARN_PREFIXES (needs boto3)

An allowlist entry containing `{tenant}` belongs to one tenant (SPEC §6): in
`AXONFLOW_{tenant}_` it stands for the slug upper-cased with every other character
`_` (acme-eu -> AXONFLOW_ACME_EU_), in directories and ARN prefixes for the slug as is.
Entries without it are shared by every tenant. A name that lies in another tenant's
entry belongs to that tenant, and of two tenants' entries the longer match wins (acme's
AXONFLOW_ACME_ does not reach acme-eu's AXONFLOW_ACME_EU_KEY); a tie is refused.

A refused reference never says why: "not allowed", "allowed but missing", "empty" and
"not a regular file" give the one message per scheme (REFUSED), when saved and when used.

Every resolved key is remembered by `scrub()`, which removes known keys (and anything
shaped like a bearer credential) from text before it is logged, stored or returned.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation

from axonflow_site.errors import InvalidConfig

if TYPE_CHECKING:
    from providers.models import ProviderConfig

log = logging.getLogger("axonflow.secrets")

REDACTED = "[REDACTED]"
TENANT = "{tenant}"
SLUG_RE = re.compile(r"[A-Za-z0-9_-]+")
MAX_FILE_BYTES = 65536
SLUGS_TTL_SECONDS = 60.0  # how old the list of tenants may be on the request path
REFUSED = {
    "env": "AXONFLOW_SECRET_ENV_PREFIXES",
    "file": "AXONFLOW_SECRET_FILE_DIRS",
    "arn": "AXONFLOW_SECRET_ARN_PREFIXES",
}
_known_secrets: set[str] = set()
# Every PIECE-character substring of a known secret: a cut-off key is still scrubbed.
PIECE = 8
_known_pieces: set[str] = set()
_cache: dict[tuple[int | None, str, str, str], tuple[float, str]] = {}
_slugs: tuple[float, frozenset[str]] | None = None
_lock = threading.Lock()
# Credential-shaped substrings, scrubbed even when we never saw the key.
_CREDENTIAL_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|axf_[A-Za-z0-9_\-]{16,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{12,}|AKIA[0-9A-Z]{16})"
)


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.AXONFLOW_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """Return the plain key or raise InvalidConfig (wrong or rotated-away key)."""
    try:
        return fernet().decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        raise InvalidConfig(
            "The stored API key cannot be decrypted with the configured AXONFLOW_ENCRYPTION_KEYS.",
            {"field": "api_key"},
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt a token under the first (newest) key."""
    return fernet().rotate(token.encode()).decode()


def set_api_key(config: ProviderConfig, plaintext: str) -> None:
    """Store `plaintext` encrypted on the config (not saved); empty clears it."""
    plaintext = plaintext.strip()
    config.api_key_encrypted = encrypt(plaintext) if plaintext else ""
    config.api_key_last4 = plaintext[-4:] if len(plaintext) >= 8 else ""
    remember(plaintext)
    invalidate(config)


def remember(secret: str) -> None:
    if secret and len(secret) >= 4:
        with _lock:
            _known_secrets.add(secret)
            _known_pieces.update(secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1))


def scrub(text: str | None) -> str:
    """Remove every known key, every piece of one (PIECE characters or more: what is
    left of a key when a message was cut short before it got here) and every
    credential-shaped string from `text`."""
    if not text:
        return ""
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _CREDENTIAL_PATTERNS.sub(REDACTED, _scrub_pieces(text))


def _scrub_pieces(text: str) -> str:
    """`text` with every run of characters covered by pieces of known secrets replaced."""
    if not _known_pieces:
        return text
    spans: list[list[int]] = []
    for i in range(len(text) - PIECE + 1):
        if text[i : i + PIECE] in _known_pieces:
            if spans and i <= spans[-1][1]:
                spans[-1][1] = i + PIECE
            else:
                spans.append([i, i + PIECE])
    for start, end in reversed(spans):
        text = text[:start] + REDACTED + text[end:]
    return text


def tenant_slug(config: ProviderConfig) -> str:
    """The slug of the tenant owning `config` ('' when it has none).

    Uses the tenant already on the config (the routing snapshot, the health worker and
    the API set it); loads it otherwise, which only sync code may do: on an event loop
    an unloaded tenant counts as none, so tenant-bound rules refuse rather than guess."""
    field = config._meta.get_field("tenant")
    if not field.is_cached(config) and config.tenant_id is None:
        return ""
    try:
        tenant = config.tenant
    except SynchronousOnlyOperation:
        log.warning("provider %s: tenant not loaded on the event loop; tenant-bound secrets refused", config.pk)
        return ""
    return tenant.slug if tenant is not None else ""


# --- references ---------------------------------------------------------------------------


def refused(kind: str) -> InvalidConfig:
    """The one error for a reference that is not allowed, missing, empty or unreadable."""
    setting = REFUSED.get(kind)
    if setting is None:
        return InvalidConfig("secret_ref must start with env:, file: or arn:.", {"field": "secret_ref"})
    return InvalidConfig(
        f"secret_ref: this tenant may not use that {kind}: reference, or it does not resolve to a value "
        f"(see {setting}).",
        {"field": "secret_ref"},
    )


def env_slug(slug: str) -> str:
    """`slug` as it appears in environment variable names: acme-eu -> ACME_EU."""
    return re.sub(r"[^A-Z0-9]", "_", slug.upper())


def _expand(entry: str, kind: str, slug: str) -> str | None:
    """`entry` for tenant `slug` (None: a bound entry and no usable slug)."""
    if TENANT not in entry:
        return entry
    if not slug or not SLUG_RE.fullmatch(slug):
        return None
    return entry.replace(TENANT, env_slug(slug) if kind == "env" else slug)


def _depth(kind: str, target: Any, entry: str) -> int | None:
    """How specific the match of `target` (a name, an ARN or a resolved Path) under the
    expanded `entry` is, or None when it is not under it."""
    if kind == "file":
        try:
            directory = Path(entry).resolve()
        except (OSError, ValueError):
            return None
        return len(directory.parts) if directory.is_absolute() and target.is_relative_to(directory) else None
    return len(entry) if target.startswith(entry) else None


def _allowed(kind: str, target: Any, slug: str, slugs: Callable[[], frozenset[str]]) -> bool:
    """Whether tenant `slug` may use `target` under the allowlist of `kind`. `slugs`
    gives every tenant's slug; it is asked only when some entry is tenant-bound."""
    entries = [e.strip() for e in getattr(settings, REFUSED[kind]) if e and e.strip()]
    bound = [e for e in entries if TENANT in e]

    def depth(entry: str, owner: str) -> int | None:
        expanded = _expand(entry, kind, owner)
        return None if expanded is None else _depth(kind, target, expanded)

    own = max((d for e in bound if (d := depth(e, slug)) is not None), default=None)
    shared = any(_depth(kind, target, e) is not None for e in entries if TENANT not in e)
    if own is None and not shared:
        return False
    if not bound:
        return True
    # Another tenant's entry that matches at least as closely owns the name.
    floor = -1 if own is None else own
    for other in slugs() - {slug}:
        if any((d := depth(e, other)) is not None and d >= floor for e in bound):
            return False
    return True


def _parse(ref: str) -> tuple[str, Any]:
    """(scheme, target) for `ref`; raises the scheme's refusal when it is malformed."""
    kind = ref.split(":", 1)[0] if ":" in ref else ""
    if kind not in REFUSED:
        raise refused(kind)
    body = ref[len(kind) + 1 :]
    if not body or "\x00" in body:
        raise refused(kind)
    if kind == "file":
        path = Path(body)
        if not path.is_absolute():
            raise refused(kind)
        try:
            return kind, path.resolve()  # symlinks and .. resolved before containment
        except (OSError, RuntimeError, ValueError):
            raise refused(kind) from None
    if kind == "arn" and not ref.startswith("arn:aws:secretsmanager:"):
        raise refused(kind)
    return kind, ref if kind == "arn" else body


def _check(ref: str, slug: str, slugs: Callable[[], frozenset[str]]) -> tuple[str, Any]:
    kind, target = _parse(ref)
    try:
        allowed = _allowed(kind, target, slug, slugs)
    except Exception:  # the tenant list could not be read: refuse rather than guess
        log.warning("secret reference check failed for tenant %s", slug, exc_info=True)
        allowed = False
    if not allowed:
        raise refused(kind)
    return kind, target


def check_reference(ref: str, tenant: str) -> None:
    """Raise InvalidConfig unless tenant `tenant` (a slug) may use `ref` and, for env:
    and file:, it resolves to a value now. ARNs are checked against the allowlist only
    (looking them up is a network call). The error is the same for every refusal."""
    kind, target = _check(ref, tenant, _read_slugs)
    if kind != "arn":
        value = _local_value(kind, target)
        if not value:
            raise refused(kind)
        remember(value)


def _local_value(kind: str, target: Any) -> str:
    if kind == "env":
        return os.environ.get(target, "").strip()
    return _read_file(target)


def _read_file(path: Path) -> str:
    """A regular file's text (at most MAX_FILE_BYTES), '' for anything else. The path is
    already resolved; O_NOFOLLOW refuses a symlink swapped in since, O_NONBLOCK a FIFO."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError):
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        data = os.read(fd, MAX_FILE_BYTES + 1)
    except OSError:
        return ""
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        return ""
    try:
        return data.decode().strip()
    except UnicodeDecodeError:
        return ""


def _read_slugs() -> frozenset[str]:
    """Every tenant's slug, read now (sync code only; Tenant is not under RLS)."""
    global _slugs
    from tenants.models import Tenant

    slugs = frozenset(Tenant.objects.values_list("slug", flat=True))
    _slugs = (time.monotonic() + SLUGS_TTL_SECONDS, slugs)
    return slugs


def _request_slugs() -> frozenset[str]:
    """Every tenant's slug for a reference resolved while serving: read now in sync
    code; on an event loop a copy at most SLUGS_TTL_SECONDS old, re-read on a helper
    thread (the loop waits for one small query once a minute at most)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _read_slugs()
    cached = _slugs
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    box: dict[str, Any] = {}

    def read() -> None:
        from django.db import connections

        try:
            box["slugs"] = _read_slugs()
        finally:
            connections.close_all()

    thread = threading.Thread(target=read, name="tenant-slugs", daemon=True)
    thread.start()
    thread.join(5.0)
    if "slugs" not in box:
        raise RuntimeError("the tenant list could not be read")
    return box["slugs"]


def _resolve_reference(ref: str, slug: str) -> str:
    kind, target = _check(ref, slug, _request_slugs)
    value = _read_secrets_manager(target) if kind == "arn" else _local_value(kind, target)
    if not value:
        raise refused(kind)
    return value


def _read_secrets_manager(arn: str) -> str:
    try:
        import boto3
    except ImportError:
        raise InvalidConfig(
            "AWS Secrets Manager references need boto3: pip install 'axonflow[aws]'.", {"field": "secret_ref"}
        ) from None
    region = arn.split(":")[3]
    try:
        response = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=arn)
    except Exception as exc:  # botocore's error tree is wide; the tenant sees the one refusal
        log.warning("Secrets Manager lookup failed: %s", scrub(f"{type(exc).__name__}: {exc}")[:300])
        return ""
    value = response.get("SecretString", "")
    return value.strip() if isinstance(value, str) else ""


def resolve_api_key(config: ProviderConfig) -> str:
    """The plain key for `config` ('' when it has none). Raises InvalidConfig.

    A reference resolves only for the config's tenant (tenant_slug). Cached per
    (config, stored value, tenant) for AXONFLOW_SECRET_TTL_SECONDS, so a changed key
    or reference is picked up at once and a rotated file or env value within the TTL.
    An expired reference is served stale while one background thread re-resolves (and
    re-checks) it: this runs on the request path, and a Secrets Manager call must not
    block the loop.
    """
    slug = tenant_slug(config) if config.secret_ref else ""
    cache_key = (config.pk, config.api_key_encrypted, config.secret_ref, slug)
    hit = _cache.get(cache_key)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    if hit and config.secret_ref:
        _refresh_in_background(cache_key, config.secret_ref, slug)
        return hit[1]
    return _resolve_and_cache(cache_key, config.secret_ref, config.api_key_encrypted, slug)


def _resolve_and_cache(cache_key: tuple, ref: str, encrypted: str, slug: str) -> str:
    if ref:
        value = _resolve_reference(ref, slug)
    elif encrypted:
        value = decrypt(encrypted)
    else:
        value = ""
    remember(value)
    with _lock:
        _cache[cache_key] = (time.monotonic() + settings.AXONFLOW_SECRET_TTL_SECONDS, value)
    return value


_refreshing: set[tuple] = set()


def _refresh_in_background(cache_key: tuple, ref: str, slug: str) -> None:
    with _lock:
        if cache_key in _refreshing:
            return
        _refreshing.add(cache_key)

    def refresh() -> None:
        from django.db import connections

        try:
            _resolve_and_cache(cache_key, ref, "", slug)
        except InvalidConfig:
            with _lock:  # the reference broke (or is no longer this tenant's): drop it
                _cache.pop(cache_key, None)
        finally:
            connections.close_all()  # the tenant list may have been read on this thread
            with _lock:
                _refreshing.discard(cache_key)

    threading.Thread(target=refresh, name="secret-refresh", daemon=True).start()


def invalidate(config: ProviderConfig) -> None:
    with _lock:
        for key in [k for k in _cache if k[0] == config.pk]:
            _cache.pop(key, None)


def forget_tenants() -> None:
    """Drop the cached list of tenant slugs (tests; a new tenant is seen within a minute)."""
    global _slugs
    _slugs = None
