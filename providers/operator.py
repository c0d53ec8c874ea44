"""Operator states (SPEC §1 "Operator state"): drain a provider, force it unhealthy or
healthy, with a reason and an optional expiry, and clear it again.

The console and the REST API both call these two functions. They write the fields on
the ProviderConfig row; its model signals do the rest in every process: the audit
entry (action drain / force_unhealthy / force_healthy / clear_state, providers/audit.py)
and the routing caches' reload (events.provider_changed), so the router obeys the new
state at once (routing/selection.py). After commit, `events.operator_action` tells the
layers above (the board) who did what.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from axonflow_site import events
from axonflow_site.errors import ValidationFailed
from providers.audit import OPERATOR_ACTIONS
from providers.models import OperatorState, ProviderConfig
from tenants.audit import actor_label

STATES = (OperatorState.DRAINED, OperatorState.FORCED_UNHEALTHY, OperatorState.FORCED_HEALTHY)
REASON_MAX = 500
SAVED_FIELDS = ["operator_state", "operator_reason", "operator_by", "operator_at", "operator_until", "updated"]


def _fail(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", {"field": field})


def clean_state(value: Any) -> str:
    if not isinstance(value, str) or value not in STATES:
        raise _fail("state", f"must be one of {', '.join(STATES)}")
    return value


def clean_reason(value: Any) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _fail("reason", "must be a string")
    value = value.strip()
    if not value:
        raise _fail("reason", "is required: say why, for whoever looks next")
    if len(value) > REASON_MAX:
        raise _fail("reason", f"must be at most {REASON_MAX} characters")
    return value


def clean_until(value: Any, now: datetime.datetime) -> datetime.datetime | None:
    """None or "" for no expiry; an aware datetime, or an ISO 8601 string (a naive one,
    such as a browser's datetime-local value, is read as UTC). It must lie in the future."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value.strip()) if len(value) <= 40 else None
        except ValueError:  # well-formed but impossible, such as month 13
            parsed = None
        if parsed is None:
            raise _fail("until", "must be a date and time such as 2030-01-31T18:00 (UTC)")
        value = parsed
    if not isinstance(value, datetime.datetime):
        raise _fail("until", "must be a date and time")
    if timezone.is_naive(value):
        value = value.replace(tzinfo=datetime.UTC)
    try:
        value = value.astimezone(datetime.UTC)  # PostgreSQL takes offsets up to ±15:59 only
    except OverflowError:  # past year 9999 in UTC
        raise _fail("until", "is out of range") from None
    if value <= now:
        raise _fail("until", "must be in the future")
    return value


def set_operator_state(config: ProviderConfig, state: Any, reason: Any, until: Any = None) -> ProviderConfig:
    """Put `config` in `state` (drained, forced_unhealthy or forced_healthy) for `reason`,
    until `until` (None: until cleared). Records who (the current actor) and when.

    Raises ValidationFailed (details.field names the field) and changes nothing on bad
    input. Setting the state already in force, with the same reason and expiry, is a
    no-op, so a repeated post writes no second audit entry.
    """
    now = timezone.now()
    state, reason, until = clean_state(state), clean_reason(reason), clean_until(until, now)
    current = (config.operator_state_at(now), config.operator_reason, config.operator_until)
    if current == (state, reason, until):
        return config
    _write(config, state, reason, actor_label(), now, until)
    return config


def clear_operator_state(config: ProviderConfig) -> ProviderConfig:
    """Release `config` from any operator state (an expired one included). Clearing a
    provider that has none is a no-op."""
    if not (config.operator_state or config.operator_reason or config.operator_until):
        return config
    _write(config, OperatorState.NONE, "", "", None, None)
    return config


def _write(config, state, reason, by, at, until) -> None:
    config.operator_state, config.operator_reason, config.operator_by = state, reason, by
    config.operator_at, config.operator_until = at, until
    config.save(update_fields=SAVED_FIELDS)
    transaction.on_commit(
        functools.partial(
            events.operator_action.send,
            sender=None,
            tenant_id=config.tenant_id,
            provider_id=config.pk,
            action=OPERATOR_ACTIONS[state],
            actor=actor_label(),
            reason=reason,
            until=until,
        )
    )
