"""Login throttling (django-axes, axonflow_site/lockout.py): wrong passwords for one
username from one address lock that pair out for the cool-off, the right password
included; other users and other addresses are unaffected."""

from __future__ import annotations

import logging

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client

LIMIT = settings.AXES_FAILURE_LIMIT  # AXONFLOW_LOGIN_FAILURE_LIMIT, 5 by default
RIGHT = "password123"  # tests/factories.py


@pytest.fixture(autouse=True)
def _fast_hasher(settings):
    """Every attempt here checks a password; PBKDF2's work factor would make this file slow."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def sign_in(client: Client, username: str, password: str, address: str = "127.0.0.1", path: str = "/login/"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def fail(client: Client, username: str, times: int, address: str = "127.0.0.1") -> list:
    return [sign_in(client, username, f"wrong-{i}", address) for i in range(times)]


def test_the_default_limit_is_five():
    assert LIMIT == 5


def test_wrong_passwords_below_the_limit_only_say_they_did_not_match(alice):
    for r in fail(Client(), "alice", LIMIT - 1):
        assert r.status_code == 200 and b"didn't match" in r.content


def test_the_limit_th_wrong_password_locks_and_the_next_one_is_refused_as_locked(alice):
    client = Client()
    *before, last = fail(client, "alice", LIMIT)
    assert all(r.status_code == 200 for r in before)
    assert last.status_code == 429 and b"Too many sign-in attempts" in last.content
    r = sign_in(client, "alice", "wrong-again")  # the sixth
    assert r.status_code == 429 and b"Too many sign-in attempts" in r.content
    assert b"15 minutes" in r.content  # the cool-off, AXONFLOW_LOGIN_LOCKOUT_MINUTES
    assert not signed_in(client)


def test_the_right_password_is_refused_while_locked(alice):
    client = Client()
    fail(client, "alice", LIMIT)
    r = sign_in(client, "alice", RIGHT)
    assert r.status_code == 429 and b"Too many sign-in attempts" in r.content
    assert not signed_in(client)


def test_another_user_from_the_same_address_is_unaffected(alice, bob):
    fail(Client(), "alice", LIMIT + 1)
    client = Client()
    r = sign_in(client, "bob", RIGHT)
    assert r.status_code == 302 and signed_in(client)


def test_the_same_user_from_another_address_is_unaffected(alice):
    fail(Client(), "alice", LIMIT + 1, address="203.0.113.7")
    client = Client()
    r = sign_in(client, "alice", RIGHT, address="198.51.100.4")
    assert r.status_code == 302 and signed_in(client)


def test_after_the_cool_off_the_right_password_works_again(alice):
    fail(Client(), "alice", LIMIT)
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - settings.AXES_COOLOFF_TIME)
    client = Client()
    r = sign_in(client, "alice", RIGHT)
    assert r.status_code == 302 and signed_in(client)


def test_a_successful_sign_in_forgets_earlier_failures(alice):
    fail(Client(), "alice", LIMIT - 1)
    assert sign_in(Client(), "alice", RIGHT).status_code == 302
    r = fail(Client(), "alice", LIMIT - 1)[-1]
    assert r.status_code == 200 and b"didn't match" in r.content


def test_the_admin_login_is_throttled_too(db, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", RIGHT)
    client = Client()
    for i in range(LIMIT):
        sign_in(client, "root", f"wrong-{i}", path="/admin/login/")
    r = sign_in(client, "root", RIGHT, path="/admin/login/")
    assert r.status_code == 429 and not signed_in(client)


def test_the_lockout_never_logs_or_shows_the_passwords(alice, caplog):
    caplog.set_level(logging.DEBUG)
    client = Client()
    responses = [sign_in(client, "alice", f"hunter2-secret-{i}") for i in range(LIMIT + 1)]
    responses.append(sign_in(client, "alice", RIGHT))
    for i in range(LIMIT + 1):
        assert f"hunter2-secret-{i}" not in caplog.text
        assert all(f"hunter2-secret-{i}".encode() not in r.content for r in responses)
    assert RIGHT not in caplog.text


@pytest.mark.parametrize("username", ["alice", "ALICE", "nobody-by-this-name"])
def test_unknown_and_differently_cased_usernames_are_counted_too(alice, username):
    client = Client()
    last = fail(client, username, LIMIT)[-1]
    assert last.status_code == 429


@pytest.mark.django_db(transaction=True)
def test_the_served_application_locks_out_too(gateway, alice):
    # Through uvicorn and the ASGI stack, where axes' middleware runs in its async mode.
    import re

    with gateway.client(follow_redirects=False) as client:
        def attempt(password: str):
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get("/login/").text).group(1)
            return client.post("/login/", data={"username": "alice", "password": password, "csrfmiddlewaretoken": token})

        answers = [attempt(f"wrong-{i}") for i in range(LIMIT)]
        assert [r.status_code for r in answers] == [200] * (LIMIT - 1) + [429]
        right = attempt(RIGHT)
    assert right.status_code == 429 and "Too many sign-in attempts" in right.text
    assert "sessionid" not in client.cookies
