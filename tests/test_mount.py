"""routing/mount.py: which application serves which path, over real HTTP."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("path", ["/api/v1/nothing/", "/api/v1/providers", "/api/"])
def test_unknown_api_paths_get_the_json_envelope(gateway, path):
    with gateway.client() as client:
        r = client.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_the_schema_and_its_docs_are_served(gateway):
    with gateway.client() as client:
        schema = client.get("/api/schema/")
        docs = client.get("/api/docs/")
    assert schema.status_code == 200 and b"/api/v1/completions" in schema.content
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_console_pages_keep_the_full_middleware(gateway):
    with gateway.client() as client:
        page = client.get("/login/")
        missing = client.get("/no-such-page/")
    assert page.headers["X-Frame-Options"] == "DENY" and "csrftoken" in page.headers["set-cookie"]
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
