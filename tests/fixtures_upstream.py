"""Pytest fixtures for the fake upstream, shared by adapter, router and health tests.

`fake_upstream` is started once per session on 127.0.0.1 (random port) in its own
thread; `upstream` is the same server, reset (behaviours, recordings, counters) before
the test. Typical use:

    def test_it_fails_over(upstream, make_provider, acme):
        upstream.configure("a", failure_kind="429", fail_next=1)
        make_provider(acme, name="a", base_url=upstream.base_url("a", "openai"), api_key="sk-test-a...")
        ...
        assert upstream.counts("a")["chat"] == 1

Dead addresses: `closed_port()` (connect is refused) and the `unaccepting_port` fixture
(connect hangs until the connect clock ends it).

`make_config(type, base_url, api_key, **fields)` builds an unsaved ProviderConfig for
adapter tests and `adapter_for(upstream, type, label, key, **fields)` the adapter for a
label on the fake; `http_session` closes the pooled client session after an async test;
`assert_matches_spec(provider, schema, body)` checks a recorded body against the
trimmed official OpenAPI description in ../shared/provider-specs/served.

Stream helpers: `collect(stream)`, `stream_until_error(stream)` (the error and the
chunks before it), `assert_stream_matches_completion(provider, request)`, and
`items(...)` / `sse_events(...)` to feed a parse_stream() without a network.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from providers import registry, secrets
from providers.adapters.base import Chunk, CompletionRequest, Provider, ProviderError
from providers.fake_upstream import FakeUpstream
from providers.models import ProviderConfig

# shared/ sits beside the checkout (here and in CI); AXONFLOW_PROVIDER_SPECS overrides.
SPEC_DIR = Path(
    os.environ.get(
        "AXONFLOW_PROVIDER_SPECS", Path(__file__).resolve().parents[2] / "shared" / "provider-specs" / "served"
    )
)


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


def make_config(provider_type: str, base_url: str, api_key: str = "", **fields: Any) -> ProviderConfig:
    """An unsaved ProviderConfig (no database needed) with `api_key` encrypted on it,
    for adapter tests. `fields` are ProviderConfig fields (model, settings, timeout_seconds…)."""
    fields.setdefault("name", f"{provider_type}-test")
    fields.setdefault("model", "test-model")
    config = ProviderConfig(type=provider_type, base_url=base_url, **fields)
    if api_key:
        secrets.set_api_key(config, api_key)
    return config


def adapter_for(upstream, provider_type: str, label: str, key: str = "", **fields: Any) -> Provider:
    """registry.build() of a config named `label` that talks to `label` on the fake
    upstream; `fields` as for make_config (timeout_seconds defaults to 5)."""
    fields.setdefault("timeout_seconds", 5)
    return registry.build(
        make_config(provider_type, upstream.base_url(label, provider_type), key, name=label, **fields)
    )


async def collect(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in stream]


async def stream_until_error(
    stream: AsyncIterator[Any], error: type[Exception] = ProviderError
) -> tuple[Exception, list[Any]]:
    """(the `error` the stream raised, what it yielded before). Fails if it ends cleanly."""
    received: list[Any] = []
    with pytest.raises(error) as caught:
        async for item in stream:
            received.append(item)
    return caught.value, received


async def assert_stream_matches_completion(provider: Provider, request: CompletionRequest) -> list[Chunk]:
    """Complete `request`, then stream it: several deltas joining into the same text,
    a last chunk with finish reason "stop" and the same usage. Returns the chunks."""
    whole = await provider.complete(request)
    chunks = await collect(provider.stream(request))
    assert len([c for c in chunks if c.delta]) > 1
    assert "".join(c.delta for c in chunks) == whole.content
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage == whole.usage
    return chunks


async def items(*values: Any) -> AsyncIterator[Any]:
    """An async iterator over `values` (decoded NDJSON objects, event-stream frames)."""
    for value in values:
        yield value


def sse_events(*events: Any) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs as http.sse_events yields them. Each of `events` is the data
    (event "message") or an (event, data) pair; data that is not a str is JSON-encoded."""

    def pair(event: Any) -> tuple[str, str]:
        name, data = event if isinstance(event, tuple) else ("message", event)
        return name, data if isinstance(data, str) else json.dumps(data)

    return items(*(pair(e) for e in events))


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (connect is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def unaccepting_port():
    """A 127.0.0.1 port whose listen queue is full and never accepted from: Linux drops
    the SYNs of further connects (the accept queue overflows), so they hang until the
    connect clock ends them. Skips where the kernel answers them anyway."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    sockets = [server]
    try:
        for _ in range(3):
            sockets.append(filler := socket.socket())
            filler.setblocking(False)
            filler.connect_ex(address)
        try:  # a connect that completes would make the test a lie
            socket.create_connection(address, timeout=0.2).close()
            pytest.skip("this kernel completes connections to a full listen queue")
        except TimeoutError:
            pass
        yield address[1]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
async def http_session():
    """Close the adapters' pooled aiohttp session of this test's loop at the end."""
    from providers.adapters.http import close_session

    yield
    await close_session()


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
    # Some request schemas are an allOf without additionalProperties: false, while the
    # live API still rejects unknown arguments ("Unrecognized request argument supplied").
    unknown = set(body) - _properties(spec, spec["components"]["schemas"][schema])
    assert not unknown, f"fields not in the {provider} {schema} schema: {sorted(unknown)}"


def _properties(spec: dict, schema: dict) -> set[str]:
    """Top-level property names of `schema`, through $ref and allOf/anyOf/oneOf."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    names = set(schema.get("properties", {}))
    for key in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(key, []):
            names |= _properties(spec, part)
    return names
