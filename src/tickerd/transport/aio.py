"""aiohttp plumbing shared by the HTTP surfaces: REST, push ingest and the control plane."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

SHUTDOWN_TIMEOUT_S = 2.0

RequestFactory = Callable[
    [RawRequestMessage, StreamReader, RequestHandler, Any, "asyncio.Task[None]"],
    web.BaseRequest,
]


async def listen(runner: web.BaseRunner, host: str, port: int, **site: Any) -> int:
    """Set ``runner`` up and listen on ``host:port``; returns the port bound (for port 0).

    On failure (e.g. the port is taken) the runner is cleaned up before the error propagates.
    """
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True, **site).start()
    except BaseException:
        await runner.cleanup()
        raise
    return int(runner.addresses[0][1])


def bounded_requests(max_body_bytes: int) -> RequestFactory:
    """A request factory for ``web.Server`` whose requests refuse bodies over the bound."""

    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        loop = asyncio.get_running_loop()
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=max_body_bytes
        )

    return make


def bearer_matches(request: web.BaseRequest, token: bytes) -> bool:
    """Whether ``Authorization: Bearer <token>`` carries ``token`` (compared in constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token
    )
