"""LOG_FORMAT=json on a real server process (issue 13, Must-show 4): every line it
writes parses as one JSON object, and every request's access line carries the request
id that its response header and its usage record show (the client's X-Request-ID when
well formed), with the tenant and the provider.
"""

from __future__ import annotations

import json
import signal
import sqlite3

import httpx

from tests.fixtures_stack import UVICORN

CHAT = "/v1/chat/completions"
BODY = {"model": "p0", "messages": [{"role": "user", "content": "hello"}]}


def test_every_line_is_json_and_every_request_line_carries_its_id(stack, start_server):
    server = start_server("json-logs", UVICORN, LOG_FORMAT="json", LOG_LEVEL="INFO")
    auth = {"Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        given = client.post(CHAT, json=BODY, headers={**auth, "X-Request-ID": "client-req-0001"})
        made = client.post(CHAT, json=BODY, headers=auth)
        refused = client.post(CHAT, json=BODY, headers={**auth, "X-Request-ID": "not well formed!"})
        with client.stream("POST", CHAT, json={**BODY, "stream": True}, headers=auth) as streamed:
            streamed.read()
        unauthorized = client.post(CHAT, json=BODY, headers={"Authorization": "Bearer axf_wrong"})
        api = client.get("/api/v1/status/", headers={**auth, "X-Request-ID": "api-req-0002"})
        page = client.get("/login/", headers={"X-Request-ID": "page-req-0003"})
    assert given.headers["x-request-id"] == "client-req-0001"
    assert api.headers["x-request-id"] == "api-req-0002"
    assert page.headers["x-request-id"] == "page-req-0003"
    assert refused.headers["x-request-id"] != "not well formed!"
    responses = [given, made, refused, streamed, unauthorized, api, page]
    assert [r.status_code for r in responses[:4]] == [200] * 4
    assert unauthorized.status_code == 401
    ids = [r.headers["x-request-id"] for r in responses]
    assert len(set(ids)) == len(ids)
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(30)  # writes the usage records before it exits

    lines = server.output().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]  # every line, or this raises
    for record in records:
        assert {"timestamp", "level", "logger", "message", "request_id", "tenant", "provider"} <= set(record)
    access = {r["request_id"]: r for r in records if r["logger"] == "uvicorn.access"}
    assert set(ids) <= set(access)
    for response in responses[:4]:
        line = access[response.headers["x-request-id"]]
        assert CHAT in line["message"] and " 200" in line["message"]
        assert (line["tenant"], line["provider"]) == ("bench", "p0")
    assert access[unauthorized.headers["x-request-id"]]["tenant"] == ""

    with sqlite3.connect(server.database) as db:
        stored = {row[0] for row in db.execute("SELECT request_id FROM routing_usagerecord")}
    assert stored == {r.headers["x-request-id"] for r in responses[:4]}
    assert stack.token not in server.output()
