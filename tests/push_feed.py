"""Driving a test server's push feed: start it, post ticks to its ingest."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any

PUSH_TOKEN = "push-test-token-0123456789"
PUSH_ENV = {"TICKERD_PUSH_TOKEN": PUSH_TOKEN}
PUSH_READY_RE = re.compile(r"tickerd push ready: http://127\.0\.0\.1:(\d+)")


def push_port(srv: Any) -> int:
    """The push ingest's port, from the server's ready line."""
    m = PUSH_READY_RE.search(srv.wait_log("tickerd push ready:"))
    assert m is not None
    return int(m.group(1))


def push_server(server: Any, *flags: str) -> tuple[Any, int]:
    """A server (the ``server`` fixture's factory) on the push feed, and its push port."""
    srv = server("--feed", "push", "--push-port", "0", *flags, env=PUSH_ENV)
    return srv, push_port(srv)


def push(port: int, ticks: list[dict[str, Any]]) -> None:
    """POST ``ticks`` to the ingest; it must answer 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = json.dumps({"ticks": ticks})
        conn.request("POST", "/ingest", body, {"Authorization": f"Bearer {PUSH_TOKEN}"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
    finally:
        conn.close()
