"""FakeUpstream: the fake served from a background thread with its own event loop, so
sync tests, async tests (on their own loops) and benchmarks can all talk to it over
TCP on 127.0.0.1.

    fake = FakeUpstream().start()
    fake.configure("prov-a", failure_kind="429", fail_next=1)
    base = fake.base_url("prov-a", "openai")      # http://127.0.0.1:PORT/prov-a/v1
    ...
    fake.requests("prov-a")[-1].body["model"]
    fake.counts("prov-a")["probe"]
    fake.stop()
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

from providers.fake_upstream.core import STATE, Behaviour, Recorded, State, make_app, wire_module


class FakeUpstream:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, defaults: Behaviour | None = None):
        self.host = host
        self.port = port
        self.app = make_app(defaults)
        self.state: State = self.app[STATE]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        """Serve in a daemon thread; returns once the port is bound."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    async def _bind(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def base_url(self, label: str = "", provider_type: str = "openai") -> str:
        """The base_url a ProviderConfig of `provider_type` should use to reach `label`."""
        prefix = f"/{label}" if label else ""
        return f"{self.url}{prefix}{getattr(wire_module(provider_type), 'BASE_PATH', '')}"

    # --- behaviour and observations ---------------------------------------------------

    def configure(self, label: str = "", **behaviour: Any) -> Behaviour:
        """Replace `label`'s behaviour (fields of Behaviour; "*" sets every label's defaults)."""
        return self.state.configure(label, behaviour)

    def requests(self, label: str | None = "") -> list[Recorded]:
        """Recorded requests of `label` (None = every label), oldest first."""
        return self.state.requests(label)

    def last(self, label: str = "") -> Recorded:
        found = self.requests(label)
        assert found, f"the fake upstream saw no request for label {label!r}"
        return found[-1]

    def counts(self, label: str = "") -> dict[str, int]:
        """{route kind: requests, "total": n, "failed": injected failures} for `label`."""
        return self.state.stats().get(label, {})

    def stats(self) -> dict[str, dict[str, int]]:
        return self.state.stats()

    def reset(self) -> None:
        self.state.reset()
