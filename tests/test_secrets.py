"""Keys at rest: encrypted column, rotation, references inside allowlists, scrubbing.
(Tenant-bound allowlist entries: tests/test_tenant_secrets.py.)"""

from __future__ import annotations

import asyncio
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
        secrets.check_reference("env:DATABASE_URL", "acme")


def test_references_are_refused_when_no_allowlist_is_set(settings):
    settings.AXONFLOW_SECRET_ENV_PREFIXES = []
    settings.AXONFLOW_SECRET_FILE_DIRS = []
    for ref in ("env:ANYTHING", "file:/etc/passwd", "arn:aws:secretsmanager:us-east-1:1:secret:x"):
        with pytest.raises(InvalidConfig):
            secrets.check_reference(ref, "acme")


def test_file_reference_cannot_escape_its_directory(tmp_path, settings, acme, make_provider):
    allowed = tmp_path / "keys"
    allowed.mkdir()
    (allowed / "openai").write_text("sk-from-file-0123456789\n")
    (tmp_path / "outside").write_text("nope")
    settings.AXONFLOW_SECRET_FILE_DIRS = [str(allowed)]
    config = make_provider(acme, secret_ref=f"file:{allowed}/openai")
    assert secrets.resolve_api_key(config) == "sk-from-file-0123456789"
    with pytest.raises(InvalidConfig):
        secrets.check_reference(f"file:{allowed}/../outside", "acme")


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


# --- references: what resolves, and how a failure looks ------------------------------------


def env_only(settings, prefix="AXONFLOW_KEY_"):
    settings.AXONFLOW_SECRET_ENV_PREFIXES = [prefix]
    settings.AXONFLOW_SECRET_FILE_DIRS = []
    settings.AXONFLOW_SECRET_ARN_PREFIXES = []


def test_a_refused_reference_is_one_error_for_not_allowed_and_missing(settings, monkeypatch):
    env_only(settings)
    monkeypatch.setenv("DATABASE_URL", "postgres://secret-value")
    monkeypatch.delenv("AXONFLOW_KEY_MISSING", raising=False)
    monkeypatch.setenv("AXONFLOW_KEY_BLANK", "   ")
    errors = []
    for ref in ("env:DATABASE_URL", "env:NOT_SET_ANYWHERE", "env:AXONFLOW_KEY_MISSING", "env:AXONFLOW_KEY_BLANK"):
        with pytest.raises(InvalidConfig) as caught:
            secrets.check_reference(ref, "acme")
        errors.append((caught.value.code, caught.value.message, caught.value.details))
    assert len(set(map(repr, errors))) == 1
    assert errors[0][0] == "invalid_config" and errors[0][2] == {"field": "secret_ref"}
    assert "AXONFLOW_SECRET_ENV_PREFIXES" in errors[0][1] and "secret-value" not in errors[0][1]


@pytest.mark.parametrize("ref", ["vault:x", "env:", "file:", "arn:", "nothing", "file:relative/path", "env:A\x00B"])
def test_malformed_references_are_refused(settings, ref):
    env_only(settings, "")
    with pytest.raises(InvalidConfig) as caught:
        secrets.check_reference(ref, "acme")
    assert caught.value.details == {"field": "secret_ref"}


def test_an_arn_outside_secrets_manager_is_refused_like_any_other(settings):
    settings.AXONFLOW_SECRET_ARN_PREFIXES = ["arn:aws:"]
    with pytest.raises(InvalidConfig):
        secrets.check_reference("arn:aws:s3:::bucket/key", "acme")
    secrets.check_reference("arn:aws:secretsmanager:us-east-1:1:secret:x", "acme")  # allowlist only: no lookup


def test_a_directory_a_fifo_or_a_huge_file_resolves_to_nothing(tmp_path, settings):
    import os

    settings.AXONFLOW_SECRET_FILE_DIRS = [str(tmp_path)]
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")  # a blocking read here would stall the event loop
    (tmp_path / "huge").write_text("x" * (secrets.MAX_FILE_BYTES + 1))
    (tmp_path / "fine").write_text("sk-fine-0123456789\n")
    for name in ("dir", "fifo", "huge", "absent"):
        with pytest.raises(InvalidConfig):
            secrets.check_reference(f"file:{tmp_path}/{name}", "acme")
    secrets.check_reference(f"file:{tmp_path}/fine", "acme")


def complete(config):
    """Complete a prompt through `config`'s adapter, on an event loop as when serving."""
    from providers import registry
    from providers.adapters.base import CompletionRequest, Message

    return asyncio.run(registry.build(config).complete(CompletionRequest([Message("user", "hi")])))


def test_a_reference_that_fails_when_used_fails_the_provider_over(acme, make_provider, settings, monkeypatch):
    from providers.adapters.base import ProviderError

    env_only(settings)
    monkeypatch.setenv("NOT_ALLOWED_KEY", "sk-not-allowed-0123456789")
    monkeypatch.delenv("AXONFLOW_KEY_GONE", raising=False)
    messages = []
    for ref in ("env:NOT_ALLOWED_KEY", "env:AXONFLOW_KEY_GONE"):
        config = make_provider(acme, name=ref[4:].lower().replace("_", "-"), secret_ref=ref)
        with pytest.raises(ProviderError) as caught:  # before any connection is made
            complete(config)
        assert caught.value.retryable and caught.value.status_code is None
        assert caught.value.provider == config.name
        messages.append(caught.value.message)
    assert messages[0] == messages[1] and "sk-not-allowed" not in messages[0]


def test_a_key_the_encryption_keys_cannot_open_fails_the_provider_over(acme, make_provider, settings):
    from providers.adapters.base import ProviderError

    config = make_provider(acme, api_key=KEY)
    settings.AXONFLOW_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    secrets.invalidate(config)
    with pytest.raises(ProviderError) as caught:
        complete(config)
    assert caught.value.retryable and "AXONFLOW_ENCRYPTION_KEYS" in caught.value.message
    assert KEY not in str(caught.value)


def test_a_config_without_a_tenant_has_no_slug():
    from providers.models import ProviderConfig
    from tenants.models import Tenant

    assert secrets.tenant_slug(ProviderConfig(name="x")) == ""
    assert secrets.tenant_slug(ProviderConfig(name="x", tenant=Tenant(slug="acme-eu"))) == "acme-eu"


def test_env_names_upper_case_the_slug_and_turn_the_rest_into_underscores():
    assert secrets.env_slug("acme-eu") == "ACME_EU"
    assert secrets.env_slug("Acme_2.x") == "ACME_2_X"
