"""The Content-Security-Policy: strict (scripts and styles from this origin only), on every
console page and on /api/docs/, which serves Swagger UI from our own static files.
tests/browser/test_csp.py checks that the console and the docs really work under it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def policy(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in header.split(";")) if d}


def assert_strict(response) -> None:
    p = policy(response)
    assert p["script-src"] == ["'self'"] and p["style-src"] == ["'self'"]
    assert p["default-src"] == ["'self'"] and p["connect-src"] == ["'self'"]
    assert p["object-src"] == ["'none'"] and p["frame-ancestors"] == ["'none'"] and p["base-uri"] == ["'none'"]
    assert "unsafe" not in response.headers["Content-Security-Policy"]


def test_the_login_page_carries_the_policy(db):
    r = Client().get("/login/")
    assert r.status_code == 200
    assert_strict(r)
    assert r["X-Frame-Options"] == "DENY"


CONSOLE_PAGES = ["/", "/status/", "/requests/", "/routes/", "/tokens/", "/members/", "/audit/", "/playground/"]


@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_every_console_page_carries_the_policy(alice_client, path):
    r = alice_client.get(path)
    assert r.status_code == 200, path
    assert_strict(r)


def test_htmx_is_told_not_to_inject_its_indicator_style(alice_client):
    html = alice_client.get("/").content.decode()
    assert '<meta name="htmx-config" content=\'{"includeIndicatorStyles": false' in html


# --- templates hold no inline script or style the policy would block ------------------------

INLINE = {
    "inline <script>": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>"),
    "on… handler attribute": re.compile(r"\son[a-z]+\s*=", re.IGNORECASE),
    "style attribute": re.compile(r"\sstyle\s*=", re.IGNORECASE),
    "<style> element": re.compile(r"<style\b", re.IGNORECASE),
    "javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
}


@pytest.mark.parametrize("template", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_no_template_has_inline_script_or_style(template):
    text = re.sub(r"{#.*?#}|{% comment %}.*?{% endcomment %}", "", template.read_text(), flags=re.DOTALL)
    found = [what for what, pattern in INLINE.items() if pattern.search(text)]
    assert not found, f"{template.name}: {found} (the CSP blocks it: move it to static/js or static/css)"


# --- /api/docs/ -------------------------------------------------------------------------------


def asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_api_docs_reference_only_our_own_static_files(db):
    r = Client().get("/api/docs/")
    assert r.status_code == 200
    html = r.content.decode()
    urls = asset_urls(html)
    assert any("swagger-ui-bundle.js" in u for u in urls) and any("swagger-ui.css" in u for u in urls)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
    assert "cdn." not in html and "https://" not in html and "http://" not in html
    assert "<style" not in html and not re.search(r"<script(?![^>]*\bsrc=)", html)


def test_api_docs_assets_are_served_from_here(db):
    client = Client()
    for url in asset_urls(client.get("/api/docs/").content.decode()):
        r = client.get(url)
        assert r.status_code == 200, url
        body = b"".join(r.streaming_content) if r.streaming else r.content
        assert body, url


def test_the_api_docs_start_up_script_is_a_file_not_inline_and_names_no_outside_host(db):
    r = Client().get("/api/docs/?script=")
    assert r.status_code == 200 and r["Content-Type"].startswith("application/javascript")
    js = r.content.decode()
    assert "SwaggerUIBundle(" in js and '"validatorUrl": null' in js
    assert "https://" not in js and "http://" not in js


def test_api_docs_carry_the_policy_and_refuse_framing(db):
    r = Client().get("/api/docs/")
    assert_strict(r)
    assert r["X-Frame-Options"] == "DENY"


@pytest.mark.django_db(transaction=True)
def test_through_the_served_application_the_docs_and_the_console_carry_the_policy(gateway):
    # /api/ runs without settings.MIDDLEWARE (axonflow_site/mount.py): the docs view sets it.
    with gateway.client() as client:
        docs = client.get("/api/docs/")
        page = client.get("/login/")
    for r in (docs, page):
        assert_strict(r)
        assert r.headers["X-Frame-Options"] == "DENY"
