"""The whole ASGI application (`axonflow_site.asgi.application`: the lean /v1 handler in
front of Django) served by uvicorn from a background thread on 127.0.0.1, a random
port, as in production. Tests using it talk real HTTP, so they need committed data:
mark them `django_db(transaction=True)`.

    def test_it(gateway, acme):   # tests/conftest.py loads this module as a plugin
        client = gateway.client(make_token(acme))
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn
import uvloop


class Gateway:
    def __init__(self) -> None:
        from axonflow_site.asgi import application

        # lifespan off: no health loop, no usage writer thread; tests flush usage themselves.
        config = uvicorn.Config(
            application, host="127.0.0.1", port=0, lifespan="off", log_level="warning", loop="uvloop", http="httptools"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="gateway", daemon=True)
        self.port = 0

    def _serve(self) -> None:
        from providers.adapters.http import close_session

        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(self.server.serve())
            loop.run_until_complete(close_session())
        finally:
            loop.close()

    def start(self) -> Gateway:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = None, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="session")
def gateway():
    server = Gateway().start()
    yield server
    server.stop()
