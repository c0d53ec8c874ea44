"""An upstream refusing a provider's own key (401/403, SPEC §2 rule 4): requests fail
over, the provider's circuit opens at once, and the board, the status API and the
provider row say "credentials rejected" until a probe gets through again."""

from __future__ import annotations

import pytest

from providers.models import CREDENTIALS_REJECTED
from routing.health import breaker, db_thread
from routing.health.probes import check_now
from tenants.models import TokenScope
from tests.conftest import make_token

pytestmark = pytest.mark.django_db(transaction=True)
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]


def test_a_revoked_key_fails_over_and_marks_the_provider(gateway, two, upstream, acme, as_tenant):
    a, _b = two
    upstream.configure("a", failure_kind="401", failure_rate=1.0)
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as c:
        first = c.post(CHAT, json={"model": "auto", "messages": HELLO})
        db_thread.flush()
        second = c.post(CHAT, json={"model": "auto", "messages": HELLO})

    assert first.status_code == 200 and first.headers["x-axonflow-provider"] == "b"
    assert second.headers["x-axonflow-provider"] == "b"
    assert upstream.counts("a")["chat"] == 1  # the circuit opened on the first 401: a gets no more
    with as_tenant(acme):
        a.refresh_from_db()
    assert (a.health_status, a.health_source, a.health_reason) == ("unhealthy", "traffic", CREDENTIALS_REJECTED)


def test_the_board_and_the_status_api_say_credentials_rejected(alice_client, acme_api, acme, make_provider):
    config = make_provider(acme, name="revoked")
    breaker.reject_credentials(acme.pk, config.pk, 12.0, "HTTP 401: Invalid API key")
    db_thread.flush()

    board = alice_client.get("/status/")
    assert board.status_code == 200 and b"credentials rejected" in board.content
    status = acme_api.get("/api/v1/status/").json()
    [provider] = status["providers"]
    assert provider["health"]["status"] == "unhealthy" and provider["health"]["reason"] == CREDENTIALS_REJECTED


def test_a_probe_refused_with_401_says_so_and_a_good_probe_clears_it(acme, make_provider, upstream, as_tenant):
    config = make_provider(acme, name="p", base_url=upstream.base_url("p"), api_key="sk-test-pppp1111")
    upstream.configure("p", failure_kind="401", failure_rate=1.0, failure_scope="probe")
    check_now(config)
    with as_tenant(acme):
        config.refresh_from_db()
    assert config.health_reason == CREDENTIALS_REJECTED

    upstream.configure("p", failure_rate=0.0)
    check_now(config)
    with as_tenant(acme):
        config.refresh_from_db()
    assert config.health_reason == ""
