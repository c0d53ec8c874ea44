"""Settings fail at import with a clear message, never later."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_settings(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AXONFLOW_", "DEBUG", "SECRET_KEY"))}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import axonflow_site.settings"], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_outside_debug_a_missing_encryption_key_refuses_to_start():
    result = load_settings(DEBUG="false", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "AXONFLOW_ENCRYPTION_KEYS is not set" in result.stderr


def test_outside_debug_a_missing_secret_key_refuses_to_start():
    result = load_settings(DEBUG="false")
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_a_malformed_encryption_key_is_refused():
    result = load_settings(DEBUG="false", SECRET_KEY="x" * 50, AXONFLOW_ENCRYPTION_KEYS="not-a-key")
    assert result.returncode != 0 and "not a Fernet key" in result.stderr


def test_production_settings_load_with_both_set():
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    result = load_settings(DEBUG="false", SECRET_KEY="x" * 50, AXONFLOW_ENCRYPTION_KEYS=key)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", ["0", "-5", "thirty", "2.5"])
def test_a_bad_shutdown_grace_period_is_refused(value):
    result = load_settings(DEBUG="true", AXONFLOW_SHUTDOWN_GRACE_SECONDS=value)
    assert result.returncode != 0
    assert "AXONFLOW_SHUTDOWN_GRACE_SECONDS must be a whole number, at least 1" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AXONFLOW_REDIS_TIMEOUT_SECONDS", "0"),
        ("AXONFLOW_REDIS_TIMEOUT_SECONDS", "soon"),
        ("AXONFLOW_REDIS_RETRY_SECONDS", "-1"),
        ("AXONFLOW_REDIS_RETRY_SECONDS", "nan"),
        ("AXONFLOW_STALE_IF_ERROR_SECONDS", "-1"),
        ("AXONFLOW_STALE_IF_ERROR_SECONDS", "inf"),
    ],
)
def test_a_bad_degradation_setting_is_refused(name, value):
    result = load_settings(DEBUG="true", **{name: value})
    assert result.returncode != 0
    assert f"{name} must be a number of seconds" in result.stderr
