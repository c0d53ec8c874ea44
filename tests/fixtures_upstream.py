"""Pytest fixtures for the fake upstream, shared by adapter, router and health tests.

`fake_upstream` is started once per session on 127.0.0.1 (random port) in its own
thread; `upstream` is the same server, reset (behaviours, recordings, counters) before
the test. Typical use:

    def test_it_fails_over(upstream, make_provider, acme):
        upstream.configure("a", failure_kind="429", fail_next=1)
        make_provider(acme, name="a", base_url=upstream.base_url("a", "openai"), api_key="sk-test-a...")
        ...
        assert upstream.counts("a")["chat"] == 1

`assert_matches_spec(provider, schema, body)` checks a recorded body against the
trimmed official OpenAPI description in /work/shared/provider-specs/served.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import pytest

from providers.fake_upstream import FakeUpstream

SPEC_DIR = Path(os.environ.get("AXONFLOW_PROVIDER_SPECS", "/work/shared/provider-specs/served"))


@pytest.fixture(scope="session")
def fake_upstream():
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def upstream(fake_upstream):
    fake_upstream.reset()
    yield fake_upstream
    fake_upstream.reset()


@lru_cache(maxsize=8)
def _spec(provider: str) -> dict:
    return json.loads((SPEC_DIR / f"{provider}.json").read_text())


def assert_matches_spec(provider: str, schema: str, body: dict) -> None:
    """Validate `body` against components.schemas[schema] of the provider's spec.

    The specs are OpenAPI 3.1, i.e. JSON Schema 2020-12 plus a few OpenAPI keywords
    (`nullable`, `discriminator`) that jsonschema ignores as unknown annotations.
    Skips when the spec files are not present (outside this workspace).
    """
    if not (SPEC_DIR / f"{provider}.json").exists():
        pytest.skip(f"provider spec {provider}.json not available")
    import jsonschema

    spec = _spec(provider)
    wrapper = {"$ref": f"#/components/schemas/{schema}", "components": spec["components"]}
    errors = sorted(jsonschema.Draft202012Validator(wrapper).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
