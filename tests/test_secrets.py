"""Keys at rest: encrypted column, rotation, references inside allowlists, scrubbing."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from axonflow_site.errors import InvalidConfig
from providers import secrets
from tests.conftest import TEST_KEYS

KEY = "sk-live-1234567890abcdefWXYZ"


def raw_column(as_tenant, config) -> str:
    with as_tenant(config.tenant), connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted FROM providers_providerconfig WHERE id = %s", [config.pk])
        return cursor.fetchone()[0]


def test_the_column_holds_no_plaintext(acme, make_provider, as_tenant):
    config = make_provider(acme, api_key=KEY)
    stored = raw_column(as_tenant, config)
    assert stored and KEY not in stored and "WXYZ" not in stored
    assert secrets.decrypt(stored) == KEY
    assert config.api_key_last4 == "WXYZ"


def test_rotate_keys_re_encrypts_every_secret(acme, globex, make_provider, as_tenant, settings):
    old = make_provider(acme, name="a", api_key=KEY)
    other = make_provider(globex, name="b", api_key=KEY + "2")
    new_key = Fernet.generate_key().decode()
    settings.AXONFLOW_ENCRYPTION_KEYS = [new_key, *TEST_KEYS]
    call_command("rotate_keys", stdout=io.StringIO())
    settings.AXONFLOW_ENCRYPTION_KEYS = [new_key]  # the old key is gone now
    assert secrets.decrypt(raw_column(as_tenant, old)) == KEY
    assert secrets.decrypt(raw_column(as_tenant, other)) == KEY + "2"


def test_a_key_that_fails_to_decrypt_is_invalid_config(acme, make_provider, settings):
    config = make_provider(acme, api_key=KEY)
    settings.AXONFLOW_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    secrets.invalidate(config)
    with pytest.raises(InvalidConfig) as exc:
        secrets.resolve_api_key(config)
    assert exc.value.code == "invalid_config" and KEY not in str(exc.value)


def test_env_reference_resolves_only_inside_the_allowlist(acme, make_provider, settings, monkeypatch):
    monkeypatch.setenv("AXONFLOW_KEY_OPENAI", "sk-from-env-0123456789")
    monkeypatch.setenv("DATABASE_URL", "postgres://secret")
    settings.AXONFLOW_SECRET_ENV_PREFIXES = ["AXONFLOW_KEY_"]
    config = make_provider(acme, secret_ref="env:AXONFLOW_KEY_OPENAI")
    assert secrets.resolve_api_key(config) == "sk-from-env-0123456789"
    with pytest.raises(InvalidConfig):
        secrets.check_reference("env:DATABASE_URL")


def test_references_are_refused_when_no_allowlist_is_set(settings):
    settings.AXONFLOW_SECRET_ENV_PREFIXES = []
    settings.AXONFLOW_SECRET_FILE_DIRS = []
    for ref in ("env:ANYTHING", "file:/etc/passwd", "arn:aws:secretsmanager:us-east-1:1:secret:x"):
        with pytest.raises(InvalidConfig):
            secrets.check_reference(ref)


def test_file_reference_cannot_escape_its_directory(tmp_path, settings, acme, make_provider):
    allowed = tmp_path / "keys"
    allowed.mkdir()
    (allowed / "openai").write_text("sk-from-file-0123456789\n")
    (tmp_path / "outside").write_text("nope")
    settings.AXONFLOW_SECRET_FILE_DIRS = [str(allowed)]
    config = make_provider(acme, secret_ref=f"file:{allowed}/openai")
    assert secrets.resolve_api_key(config) == "sk-from-file-0123456789"
    with pytest.raises(InvalidConfig):
        secrets.check_reference(f"file:{allowed}/../outside")


def test_scrub_removes_known_keys_and_credential_shapes():
    secrets.remember("my-very-private-key-42")
    text = "upstream said: bad key my-very-private-key-42; Authorization: Bearer abcdefghijklmnop1234"
    cleaned = secrets.scrub(text)
    assert "my-very-private-key-42" not in cleaned and "abcdefghijklmnop1234" not in cleaned
    assert secrets.REDACTED in cleaned


def test_an_expired_reference_is_served_stale_while_it_refreshes(acme, make_provider, settings, monkeypatch):
    import threading

    settings.AXONFLOW_SECRET_ENV_PREFIXES = ["AXONFLOW_KEY_"]
    monkeypatch.setenv("AXONFLOW_KEY_X", "sk-first-value-0123456789")
    config = make_provider(acme, secret_ref="env:AXONFLOW_KEY_X")
    settings.AXONFLOW_SECRET_TTL_SECONDS = 0  # every cached value is expired at once
    assert secrets.resolve_api_key(config) == "sk-first-value-0123456789"

    monkeypatch.setenv("AXONFLOW_KEY_X", "sk-second-value-0123456789")
    assert secrets.resolve_api_key(config) == "sk-first-value-0123456789"  # no wait on the request path
    for thread in [t for t in threading.enumerate() if t.name == "secret-refresh"]:
        thread.join(5)
    assert secrets.resolve_api_key(config) == "sk-second-value-0123456789"
