"""The benchmark's own aiohttp load generator, for the points wrk cannot measure: a burst
of N simultaneous requests (wall time, errors) and streaming time to first byte.
127.0.0.1 only; every run is bounded in count and time."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from urllib.parse import urlsplit

import aiohttp

TIMEOUT = aiohttp.ClientTimeout(total=30)


def _local(url: str) -> str:
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        raise ValueError("the benchmark client only talks to 127.0.0.1")
    return url


async def _burst(url: str, body: dict, auth: str, count: int) -> dict:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    payload = json.dumps(body).encode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:

        async def one() -> bool:
            try:
                async with session.post(url, data=payload, headers=headers) as r:
                    await r.read()
                    return r.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False

        started = time.perf_counter()
        results = await asyncio.gather(*[one() for _ in range(count)])
        wall = time.perf_counter() - started
    return {"wall_s": round(wall, 3), "errors": results.count(False)}


def burst(url: str, body: dict, auth: str, count: int) -> dict:
    """Fire `count` requests at once on `count` connections; wall time until the last answer."""
    return asyncio.run(_burst(_local(url), body, auth, count))


async def _ttfb(url: str, body: dict, auth: str, count: int) -> dict:
    payload = json.dumps(body).encode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    samples = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url, data=payload, headers=headers) as r:
                first = await r.content.readany()
                samples.append((time.perf_counter() - started) * 1000)
                assert r.status == 200 and first, (r.status, first)
                await r.read()
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p99_ms": samples[int(len(samples) * 0.99) - 1]}


def time_to_first_byte(url: str, body: dict, auth: str, count: int) -> dict:
    """Sequential streaming requests: milliseconds until the first body bytes arrive."""
    return asyncio.run(_ttfb(_local(url), body, auth, count))
