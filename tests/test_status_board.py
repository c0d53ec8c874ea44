"""The console's live status board page."""

from __future__ import annotations


def test_the_board_shows_a_card_per_provider_of_the_active_tenant(alice_client, acme, globex, make_provider):
    mine = make_provider(acme, name="acme-openai")
    make_provider(globex, name="globex-secret")
    r = alice_client.get("/status/")
    assert r.status_code == 200
    page = r.content.decode()
    assert f'id="provider-{mine.pk}"' in page and "acme-openai" in page
    assert "globex-secret" not in page
    assert 'ws-connect="/ws/status/?window=5m"' in page and "hx-ws" in page


def test_the_board_needs_a_login(client, db):
    assert client.get("/status/").status_code == 302
