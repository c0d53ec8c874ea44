"""Issuing and revoking API tokens: the one rule set behind the console's tokens page
and `/api/v1/tokens/`.

A raw token exists only in `create_token`'s return value: it is stored as an HMAC
(tenants.models.hash_token) and shown afterwards by its prefix alone. Saving a token
drops the token cache in every process (routing/signals.py), so a revocation refuses
the token's next call wherever it lands. The audit entries come from the model signals
in tenants/audit.py.
"""

from __future__ import annotations

import datetime
import unicodedata

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from axonflow_site.errors import ValidationFailed
from tenants.models import ApiToken, Tenant, TokenScope

NAME_MAX_LENGTH = ApiToken._meta.get_field("name").max_length


def clean_name(name: object) -> str:
    """The name stripped of surrounding space: 1–100 printable characters."""
    if not isinstance(name, str):
        raise ValidationFailed("name: must be a string.", {"field": "name"})
    name = name.strip()
    if not name:
        raise ValidationFailed("name: give the token a name, e.g. the application that will use it.", {"field": "name"})
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationFailed(f"name: at most {NAME_MAX_LENGTH} characters.", {"field": "name"})
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise ValidationFailed("name: control characters are not allowed.", {"field": "name"})
    return name


def clean_scope(scope: object) -> str:
    if not isinstance(scope, str) or scope not in TokenScope.values:
        raise ValidationFailed(
            f"scope: must be one of {', '.join(TokenScope.values)}.", {"field": "scope", "choices": TokenScope.values}
        )
    return scope


def parse_expiry(value: object) -> datetime.datetime | None:
    """An expiry from a form or a JSON body: empty or None for none, otherwise an ISO 8601
    date and time (a time without an offset is UTC), returned aware in UTC.

    Raises ValidationFailed (details.field "expires_at") for anything else; whether it
    lies in the future is checked by `create_token`."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:  # well-formed but impossible, e.g. month 13
            parsed = None
        if parsed is None:
            raise ValidationFailed(
                "expires_at: expected an ISO 8601 date and time, e.g. 2030-01-31T12:00:00Z.", {"field": "expires_at"}
            )
    else:
        raise ValidationFailed("expires_at: must be a date-time string or null.", {"field": "expires_at"})
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=datetime.UTC)
    try:
        return parsed.astimezone(datetime.UTC)
    except (OverflowError, ValueError):
        raise ValidationFailed("expires_at: out of range.", {"field": "expires_at"}) from None


def create_token(
    tenant: Tenant, name: object, scope: object = TokenScope.COMPLETIONS, expires_at: object = None,
    rpm_limit: object = 0, tpm_limit: object = 0,
) -> tuple[ApiToken, str]:
    """Issue a token and return it with its raw value, which is never stored or shown again.

    Raises ValidationFailed (details.field names the field) for a name that is not 1–100
    printable characters, an unknown scope, or an expiry that is not in the future."""
    name = clean_name(name)
    scope = clean_scope(scope)
    expiry = parse_expiry(expires_at)
    if expiry is not None and expiry <= timezone.now():
        raise ValidationFailed("expires_at: must be in the future.", {"field": "expires_at"})
    limits = {field: clean_limit(value, field) for field, value in (("rpm_limit", rpm_limit), ("tpm_limit", tpm_limit))}
    return ApiToken.issue(tenant, name, scope, expires_at=expiry, **limits)


def clean_limit(value: object, field: str) -> int:
    """A per-minute limit: a whole number from 0 (none) to 10⁹."""
    if value is None or value == "":
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if type(value) is not int or not 0 <= value <= 10**9:
        raise ValidationFailed(f"{field}: a whole number, 0 (unlimited) or more.", {"field": field})
    return value


def revoke_token(token: ApiToken) -> bool:
    """Revoke the token from now on. Returns True if this call revoked it, False if it
    already was (revoking twice changes nothing, keeps the first time, audits once).

    The stored row is locked and re-read, so two concurrent revocations record one."""
    with transaction.atomic():
        stored = ApiToken.objects.select_for_update().get(pk=token.pk)
        if stored.revoked_at is not None:
            token.revoked_at = stored.revoked_at
            return False
        stored.revoked_at = timezone.now()
        stored.save(update_fields=["revoked_at"])
    token.revoked_at = stored.revoked_at
    return True
