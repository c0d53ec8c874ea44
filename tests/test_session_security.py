"""Session hardening: a new session key at sign-in, nothing left after sign-out, and
cookies that scripts cannot read, sent only over HTTPS in production."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client


@pytest.fixture(autouse=True)
def _fast_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def sign_in(client: Client):
    return client.post("/login/", {"username": "alice", "password": "password123"})


def test_signing_in_gives_a_new_session_key(alice):
    client = Client()
    client.get("/login/")
    session = client.session
    session["before"] = "anonymous"
    session.save()
    before = session.session_key
    assert sign_in(client).status_code == 302
    assert client.session.session_key != before
    assert not Session.objects.filter(session_key=before).exists()


def test_signing_out_deletes_the_session_so_the_old_cookie_is_worthless(alice):
    client = Client()
    sign_in(client)
    stolen = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert client.get("/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert not Session.objects.filter(session_key=stolen).exists()
    replay = Client()
    replay.cookies[settings.SESSION_COOKIE_NAME] = stolen
    r = replay.get("/")
    assert r.status_code == 302 and r["Location"].startswith("/login/")


def test_sessions_last_twelve_hours_by_default():
    assert settings.SESSION_COOKIE_AGE == 12 * 3600
    assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE is False


def test_the_session_and_csrf_cookies_are_http_only_and_same_site_lax(alice):
    client = Client()
    client.get("/login/")
    sign_in(client)
    session = client.cookies[settings.SESSION_COOKIE_NAME]
    assert session["httponly"] and session["samesite"] == "Lax"
    assert session["max-age"] == 12 * 3600
    csrf = client.cookies[settings.CSRF_COOKIE_NAME]
    assert csrf["httponly"]  # htmx sends the token from the page (base.html), never from the cookie


def test_with_production_settings_the_cookies_are_secure(alice, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    client = Client()
    client.get("/login/", secure=True)
    client.post("/login/", {"username": "alice", "password": "password123"}, secure=True)
    assert client.cookies[settings.SESSION_COOKIE_NAME]["secure"]
    assert client.cookies[settings.CSRF_COOKIE_NAME]["secure"]


def test_a_console_post_without_the_csrf_token_is_refused_and_changes_nothing(alice, acme, make_provider):
    from providers.models import ProviderConfig
    from tenants.rls import tenant_context

    provider = make_provider(acme, name="a", weight=50)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    r = client.post(f"/providers/{provider.name}/weight/", {"weight": "5"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 403
    with tenant_context(acme.pk):
        assert ProviderConfig.objects.get(pk=provider.pk).weight == 50
    # The same post with the page's token goes through, so the refusal was the token's.
    page = client.get("/")
    assert page.status_code == 200, page.status_code
    page = page.content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    r = client.post(f"/providers/{provider.name}/weight/", {"weight": "5"}, HTTP_HX_REQUEST="true",
                    HTTP_X_CSRFTOKEN=token)  # fmt: skip
    assert r.status_code == 200
    with tenant_context(acme.pk):
        assert ProviderConfig.objects.get(pk=provider.pk).weight == 5
