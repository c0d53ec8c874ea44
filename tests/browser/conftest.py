"""Headless Chromium (Debian's package) driven by Playwright against the live server."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("AXONFLOW_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
requires_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Chromium: apt-get install chromium (as .ci/run does)"
)
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    # Module scope: Playwright's sync API keeps an event loop running in this thread
    # while it is open, which would break every async test collected after it.
    from playwright.sync_api import sync_playwright

    # The running loop makes Django refuse the test thread's ORM calls; allow them only
    # while the browser is open, so async-safety checks still guard every other test.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    yield page
    context.close()
