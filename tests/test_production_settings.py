"""The documented production environment passes `manage.py check --deploy` with no
warning; its knobs read strictly; behind a TLS proxy the HTTPS redirect and HSTS work."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
# README "Running in production": what an operator sets.
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "AXONFLOW_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "ALLOWED_HOSTS": "axonflow.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://axonflow.example.com",
    "AXONFLOW_TRUST_X_FORWARDED_PROTO": "true",
}
OURS = ("AXONFLOW_", "DEBUG", "SECRET_KEY", "SECURE_", "SESSION_", "CSRF_", "ALLOWED_HOSTS")


def run(args: list[str], **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    clean.update(env)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)


def production_settings(**overrides) -> dict:
    names = [
        "SECURE_SSL_REDIRECT", "SECURE_PROXY_SSL_HEADER", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_CONTENT_TYPE_NOSNIFF",
        "X_FRAME_OPTIONS", "SECURE_REFERRER_POLICY", "SECURE_CROSS_ORIGIN_OPENER_POLICY", "SESSION_COOKIE_HTTPONLY",
        "SESSION_COOKIE_SAMESITE", "SESSION_COOKIE_AGE",
    ]  # fmt: skip
    code = f"import json, axonflow_site.settings as s; print(json.dumps({{n: getattr(s, n, None) for n in {names!r}}}))"
    result = run(["-c", code], **{**PRODUCTION, **overrides})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_check_deploy_is_clean_in_the_documented_production_environment():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_refuses_a_weak_secret_key():
    weak = {**PRODUCTION, "SECRET_KEY": "x" * 50}
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **weak)
    assert result.returncode != 0 and "security.W009" in result.stdout + result.stderr


def test_production_defaults_are_the_secure_ones():
    s = production_settings()
    assert s["SECURE_SSL_REDIRECT"] is True
    assert s["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert s["SECURE_HSTS_SECONDS"] == 31_536_000
    assert s["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True and s["SECURE_HSTS_PRELOAD"] is True
    assert s["SESSION_COOKIE_SECURE"] is True and s["CSRF_COOKIE_SECURE"] is True
    assert s["SECURE_CONTENT_TYPE_NOSNIFF"] is True and s["X_FRAME_OPTIONS"] == "DENY"
    assert s["SECURE_REFERRER_POLICY"] == "same-origin" and s["SECURE_CROSS_ORIGIN_OPENER_POLICY"] == "same-origin"
    assert s["SESSION_COOKIE_HTTPONLY"] is True and s["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert s["SESSION_COOKIE_AGE"] == 12 * 3600


def test_without_the_proxy_setting_no_forwarded_header_is_trusted():
    assert production_settings(AXONFLOW_TRUST_X_FORWARDED_PROTO="false")["SECURE_PROXY_SSL_HEADER"] is None


def test_each_knob_can_be_turned_down_explicitly():
    s = production_settings(
        SECURE_SSL_REDIRECT="false", SECURE_HSTS_SECONDS="3600", SECURE_HSTS_PRELOAD="false",
        SESSION_COOKIE_AGE="3600",
    )  # fmt: skip
    assert s["SECURE_SSL_REDIRECT"] is False and s["SECURE_HSTS_SECONDS"] == 3600
    assert s["SECURE_HSTS_PRELOAD"] is False and s["SESSION_COOKIE_AGE"] == 3600


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("SECURE_SSL_REDIRECT", "maybe", "SECURE_SSL_REDIRECT must be true or false"),
        ("AXONFLOW_TRUST_X_FORWARDED_PROTO", "yes please", "AXONFLOW_TRUST_X_FORWARDED_PROTO must be true or false"),
        ("SESSION_COOKIE_SECURE", "treu", "SESSION_COOKIE_SECURE must be true or false"),
        ("SECURE_HSTS_SECONDS", "-1", "SECURE_HSTS_SECONDS must be a whole number"),
        ("SECURE_HSTS_SECONDS", "1 year", "SECURE_HSTS_SECONDS must be a whole number"),
        ("SESSION_COOKIE_AGE", "0", "SESSION_COOKIE_AGE must be a whole number, at least 60"),
        ("AXONFLOW_LOGIN_FAILURE_LIMIT", "0", "AXONFLOW_LOGIN_FAILURE_LIMIT must be a whole number, at least 1"),
        ("AXONFLOW_LOGIN_LOCKOUT_MINUTES", "soon", "AXONFLOW_LOGIN_LOCKOUT_MINUTES must be a whole number"),
        ("SECURE_REDIRECT_EXEMPT", "^health(", "SECURE_REDIRECT_EXEMPT holds an invalid regular expression"),
    ],
)
def test_a_bad_value_fails_at_import(name, value, message):
    result = run(["-c", "import axonflow_site.settings"], **{**PRODUCTION, name: value})
    assert result.returncode != 0 and message in result.stderr


# --- behind the proxy, in process ----------------------------------------------------------


@pytest.fixture
def behind_tls_proxy(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = settings.SECURE_HSTS_PRELOAD = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    return settings


def test_plain_http_is_redirected_to_https(db, behind_tls_proxy):
    r = Client().get("/login/", HTTP_X_FORWARDED_PROTO="http")
    assert r.status_code == 301 and r["Location"] == "https://testserver/login/"


def test_https_from_the_proxy_is_served_with_hsts(db, behind_tls_proxy):
    r = Client().get("/login/", HTTP_X_FORWARDED_PROTO="https")
    assert r.status_code == 200
    assert r["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert r["X-Frame-Options"] == "DENY" and r["X-Content-Type-Options"] == "nosniff"
    assert r["Referrer-Policy"] == "same-origin" and r["Cross-Origin-Opener-Policy"] == "same-origin"


def test_an_exempt_path_is_not_redirected(db, behind_tls_proxy):
    assert Client().get("/healthz", HTTP_X_FORWARDED_PROTO="http").status_code != 301


def test_every_variable_the_settings_read_is_documented_in_the_readme_and_env_example():
    import re

    settings_py = (ROOT / "axonflow_site" / "settings.py").read_text()
    names = set(re.findall(r'(?:env(?:\.\w+)?|_flag|_whole)\(\s*"([A-Z][A-Z0-9_]+)"', settings_py))
    assert {"SECURE_SSL_REDIRECT", "AXONFLOW_TRUST_X_FORWARDED_PROTO", "AXONFLOW_LOGIN_FAILURE_LIMIT"} <= names
    readme, example = (ROOT / "README.md").read_text(), (ROOT / ".env.example").read_text()
    assert [n for n in sorted(names) if f"`{n}`" not in readme] == []
    assert [n for n in sorted(names) if not re.search(rf"^#? ?{n}=", example, re.MULTILINE)] == []
