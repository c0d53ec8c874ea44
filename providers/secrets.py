"""Provider keys: encryption at rest, secret references, and scrubbing.

Keys are stored as MultiFernet tokens under AXONFLOW_ENCRYPTION_KEYS (the first key
encrypts, every key decrypts, so `rotate_keys` can move secrets to a new key). A
provider may instead name a reference, resolved only inside operator allowlists:

    env:NAME        NAME must start with one of AXONFLOW_SECRET_ENV_PREFIXES
    file:/path      the resolved path must lie in one of AXONFLOW_SECRET_FILE_DIRS
    arn:aws:secretsmanager:...   must start with one of AXONFLOW_SECRET_ARN_PREFIXES (needs boto3)

Every resolved key is remembered by `scrub()`, which removes known keys (and anything
shaped like a bearer credential) from text before it is logged, stored or returned.
"""

from __future__ import annotations

import os
import re
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from axonflow_site.errors import InvalidConfig

if TYPE_CHECKING:
    from providers.models import ProviderConfig

REDACTED = "[REDACTED]"
_known_secrets: set[str] = set()
_cache: dict[tuple[int | None, str, str], tuple[float, str]] = {}
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


def scrub(text: str | None) -> str:
    """Remove every known key and credential-shaped string from `text`."""
    if not text:
        return ""
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _CREDENTIAL_PATTERNS.sub(REDACTED, text)


def check_reference(ref: str) -> None:
    """Raise InvalidConfig unless `ref` is a well-formed reference inside the allowlists."""
    if ref.startswith("env:"):
        name = ref[4:]
        prefixes = settings.AXONFLOW_SECRET_ENV_PREFIXES
        if not name or not any(name.startswith(p) for p in prefixes if p):
            raise InvalidConfig(
                "Environment secret references must name a variable allowed by AXONFLOW_SECRET_ENV_PREFIXES.",
                {"field": "secret_ref"},
            )
    elif ref.startswith("file:"):
        path = Path(ref[5:])
        dirs = [Path(d).resolve() for d in settings.AXONFLOW_SECRET_FILE_DIRS if d]
        if not path.is_absolute() or not any(path.resolve().is_relative_to(d) for d in dirs):
            raise InvalidConfig(
                "File secret references must lie inside AXONFLOW_SECRET_FILE_DIRS.", {"field": "secret_ref"}
            )
    elif ref.startswith("arn:"):
        if not ref.startswith("arn:aws:secretsmanager:") or not any(
            ref.startswith(p) for p in settings.AXONFLOW_SECRET_ARN_PREFIXES if p
        ):
            raise InvalidConfig(
                "Secrets Manager ARNs must start with one of AXONFLOW_SECRET_ARN_PREFIXES.", {"field": "secret_ref"}
            )
    else:
        raise InvalidConfig("secret_ref must start with env:, file: or arn:.", {"field": "secret_ref"})


def _resolve_reference(ref: str) -> str:
    check_reference(ref)
    if ref.startswith("env:"):
        value = os.environ.get(ref[4:], "")
    elif ref.startswith("file:"):
        try:
            value = Path(ref[5:]).read_text().strip()
        except OSError:
            value = ""
    else:
        value = _read_secrets_manager(ref)
    if not value:
        raise InvalidConfig("The secret reference resolved to nothing.", {"field": "secret_ref"})
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
    except Exception as exc:  # botocore's error tree is wide; the message is what matters
        raise InvalidConfig(f"Secrets Manager lookup failed: {scrub(str(exc))}", {"field": "secret_ref"}) from None
    return response.get("SecretString", "")


def resolve_api_key(config: ProviderConfig) -> str:
    """The plain key for `config` ('' when it has none). Raises InvalidConfig.

    Cached per (config, stored value) for AXONFLOW_SECRET_TTL_SECONDS, so a changed key
    or reference is picked up at once and a rotated file or env value within the TTL.
    An expired reference is served stale while one background thread re-resolves it:
    this runs on the request path, and a Secrets Manager call must not block the loop.
    """
    cache_key = (config.pk, config.api_key_encrypted, config.secret_ref)
    hit = _cache.get(cache_key)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    if hit and config.secret_ref:
        _refresh_in_background(cache_key, config.secret_ref)
        return hit[1]
    return _resolve_and_cache(cache_key, config.secret_ref, config.api_key_encrypted)


def _resolve_and_cache(cache_key: tuple, ref: str, encrypted: str) -> str:
    if ref:
        value = _resolve_reference(ref)
    elif encrypted:
        value = decrypt(encrypted)
    else:
        value = ""
    remember(value)
    with _lock:
        _cache[cache_key] = (time.monotonic() + settings.AXONFLOW_SECRET_TTL_SECONDS, value)
    return value


_refreshing: set[tuple] = set()


def _refresh_in_background(cache_key: tuple, ref: str) -> None:
    with _lock:
        if cache_key in _refreshing:
            return
        _refreshing.add(cache_key)

    def refresh() -> None:
        try:
            _resolve_and_cache(cache_key, ref, "")
        except InvalidConfig:
            with _lock:  # the reference broke: drop it, so the next use raises
                _cache.pop(cache_key, None)
        finally:
            with _lock:
                _refreshing.discard(cache_key)

    threading.Thread(target=refresh, name="secret-refresh", daemon=True).start()


def invalidate(config: ProviderConfig) -> None:
    with _lock:
        for key in [k for k in _cache if k[0] == config.pk]:
            _cache.pop(key, None)
