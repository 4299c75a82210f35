"""The ops port of ``tickerd serve --workers N``: one surface for the whole process group.

The supervisor binds ``--ops-host``/``--ops-port`` itself (a taken port stops the start)
and runs this surface in a child process it supervises beside the workers, so the
supervisor stays a loop-free signal waiter. Each worker serves its own ops view on a unix
socket in a directory private to the supervisor's user (``worker-<i>.sock``, the names
fixed at start-up), with the extra route ``GET /group`` (:mod:`tickerd.ops.surface`).

Every request here reads every worker's ``/group`` at once, each bounded by
:data:`FETCH_TIMEOUT_S` and :data:`MAX_WORKER_BYTES`, and answers the merge
(:mod:`tickerd.ops.merge`): ``/metrics``, ``/status`` and the dashboard's live channel
show the group, a worker that did not answer is listed as down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ..loop import run
from ..transport.aio import Site, netloc
from .live import LiveChannel, PriceRow
from .merge import (
    CounterCarry,
    WorkerView,
    merge_metrics,
    merge_prices,
    merge_requests,
    merge_status,
)
from .status import MAX_LISTED
from .surface import (
    OPS_LIMITS,
    OPS_MAX_BODY_BYTES,
    json_response,
    ops_handler,
    page_response,
    static_pages,
    top_of,
)

log = logging.getLogger("tickerd.ops")

#: Seconds one worker has to answer a fetch; one that does not is shown as down.
FETCH_TIMEOUT_S = 2.0
#: Largest ``/group`` document read from one worker (its lists are bounded far below).
MAX_WORKER_BYTES = 8 * 1024 * 1024


class GroupPlan:
    """Made by the supervisor before it forks: the ops port's listening socket and the
    private directory of the workers' sockets (``paths[i]`` is worker ``i``'s)."""

    def __init__(self, host: str, port: int, count: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.sock = socket.create_server((host, port), family=family, backlog=128)
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise OSError(
                f"cannot listen on the ops port {netloc(host, port)}: {why} "
                "(--ops-port -1 turns the ops surface off)"
            ) from None
        self.host = host
        self.directory = tempfile.mkdtemp(prefix="tickerd-ops-")  # mode 0700
        self.paths = [os.path.join(self.directory, f"worker-{i}.sock") for i in range(count)]

    def close(self) -> None:
        """Close the socket and remove the directory (the supervisor, once it is done)."""
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class GroupSurface:
    """The group's ops surface on ``sock``, reading the workers at ``paths``."""

    def __init__(
        self,
        sock: socket.socket,
        host: str,
        paths: Sequence[str],
        *,
        shared: bool = False,
        timeout: float = FETCH_TIMEOUT_S,
    ) -> None:
        self.sock = sock
        self.host = host
        self.paths = list(paths)
        self.shared = shared
        self.timeout = timeout
        self.started = time.monotonic()
        self.live = LiveChannel(self._view)
        self.carry = CounterCarry()
        self._scrape = asyncio.Lock()  # scrapes read and update ``carry`` one at a time
        self.site = Site()
        self._pages = static_pages()

    @property
    def url(self) -> str:
        """``http://host:port`` of the group's ops surface."""
        return f"http://{netloc(self.host, self.site.port)}"

    # -- reading the workers -------------------------------------------------------------

    async def fetch(self, index: int, top: int) -> WorkerView:
        """Worker ``index``'s ``/group`` document, or why it could not be read."""
        try:
            async with asyncio.timeout(self.timeout):
                connector = aiohttp.UnixConnector(path=self.paths[index])
                async with (
                    aiohttp.ClientSession(connector=connector) as session,
                    session.get(f"http://worker/group?top={top}") as reply,
                ):
                    body = await reply.content.read(MAX_WORKER_BYTES + 1)
            if reply.status != 200:
                return WorkerView(index, None, f"answered {reply.status}")
            if len(body) > MAX_WORKER_BYTES:
                return WorkerView(index, None, f"answered more than {MAX_WORKER_BYTES} bytes")
            return WorkerView(index, orjson.loads(body))
        except TimeoutError:
            return WorkerView(index, None, f"no answer within {self.timeout:g} s")
        except (OSError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            return WorkerView(index, None, f"{type(exc).__name__}: {exc}")

    async def views(self, top: int) -> list[WorkerView]:
        """Every worker's view, read at once."""
        return list(await asyncio.gather(*(self.fetch(i, top) for i in range(len(self.paths)))))

    async def _view(self, top: int) -> tuple[dict[str, Any], list[PriceRow], int]:
        views = await self.views(top)
        doc = merge_status(views, top, uptime_s=self._uptime(), now_ms=time.time_ns() // 10**6)
        return doc, merge_prices(views), merge_requests(views)

    def _uptime(self) -> float:
        return time.monotonic() - self.started

    # -- routes --------------------------------------------------------------------------

    async def _root(self, request: web.BaseRequest) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard")

    async def _metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        async with self._scrape:
            views = await self.views(1)
            merged = merge_metrics(views, shared=self.shared, carry=self.carry)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(merged))
        return web.Response(
            body=generate_latest(registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
        )

    async def _status(self, request: web.BaseRequest) -> web.StreamResponse:
        top = top_of(request)
        if top is None:
            error = f"top must be a whole number from 1 to {MAX_LISTED}"
            return json_response({"error": error}, 400)
        doc, _, _ = await self._view(top)
        return json_response(doc)

    async def _page(self, request: web.BaseRequest) -> web.StreamResponse:
        return page_response(self._pages[request.path])

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the socket the supervisor bound."""
        routes = {
            "/": self._root,
            "/metrics": self._metrics,
            "/status": self._status,
            "/dashboard/live": self.live.handle,
        }
        handler = ops_handler(routes, self._pages, self._page)
        await self.site.serve(
            handler,
            self.host,
            0,
            sock=self.sock,
            max_body_bytes=OPS_MAX_BODY_BYTES,
            limits=OPS_LIMITS,
        )
        log.info("tickerd ops ready: %s (%d workers)", self.url, len(self.paths))

    async def stop(self) -> None:
        """Close the dashboards and stop listening."""
        await self.live.close()
        await self.site.stop()

    async def serve_forever(self) -> None:
        """Start, then run until SIGTERM or SIGINT."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await self.start()
        try:
            await stopping.wait()
        finally:
            await self.stop()


def serve_group(
    sock: socket.socket, host: str, paths: Sequence[str], *, shared: bool = False
) -> int:
    """The ops process's main: serve the group's ops surface; the exit status."""
    try:
        run(GroupSurface(sock, host, paths, shared=shared).serve_forever())
    except OSError as exc:
        print(f"tickerd: ops: {exc}", flush=True, file=sys.stderr)
        return 1
    return 0
