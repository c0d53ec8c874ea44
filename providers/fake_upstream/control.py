"""The fake upstream's control API, for processes other than the one that started it.

    POST /_control/{label}            JSON Behaviour fields; replaces the label's behaviour
    GET  /_control/{label}            the label's current behaviour
    GET  /_control/{label}/requests   the label's recorded requests (oldest first)
    GET  /_control/stats              {label: {kind: count, "total": n, "failed": n}}
    POST /_control/reset              forget behaviours, recordings and counters

`{label}` is "-" for the default ("") label and "*" for the defaults of every label.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

from aiohttp import web

from providers.fake_upstream.core import CONTROL_PREFIX, DEFAULT_LABEL_ALIAS, DEFAULTS_ALIAS

if TYPE_CHECKING:
    from providers.fake_upstream.core import State


def _label(segment: str) -> str:
    return "" if segment == DEFAULT_LABEL_ALIAS else segment


async def control(http: web.Request, state: State) -> web.StreamResponse:
    parts = [p for p in http.path[len(CONTROL_PREFIX) :].split("/") if p]
    method = http.method
    if parts == ["stats"] and method == "GET":
        return web.json_response(state.stats())
    if parts == ["reset"] and method == "POST":
        state.reset()
        return web.json_response({"reset": True})
    if len(parts) == 2 and parts[1] == "requests" and method == "GET":
        label = _label(parts[0])
        return web.json_response([r.as_dict() for r in state.requests(label)])
    if len(parts) == 1 and method == "GET":
        label = parts[0]
        b = state.defaults if label == DEFAULTS_ALIAS else state.behaviour(_label(label))
        return web.json_response(asdict(b))
    if len(parts) == 1 and method == "POST":
        try:
            data = json.loads(await http.read() or b"{}")
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object of behaviour fields")
            label = parts[0] if parts[0] == DEFAULTS_ALIAS else _label(parts[0])
            b = state.configure(label, data)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(b))
    return web.json_response({"error": f"unknown control request {method} {http.path}"}, status=404)
