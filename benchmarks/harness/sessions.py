"""The connection scenarios: idle connections held open and a slow reader."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
from dataclasses import dataclass
from typing import Any

from .config import HOST, Result
from .loadgen import Ctx
from .procs import Server, proc_status_kb, reset_peak_rss
from .wsclient import handshake_request, masked_text, open_raw

# -- idle connections (5) --------------------------------------------------------------------


async def open_idle(port: int, count: int, concurrency: int) -> tuple[list[Any], int]:
    """Open ``count`` WebSocket connections (handshake done); (stream writers, failures).

    The writers must stay referenced: a collected StreamWriter closes its transport.
    """
    gate = asyncio.Semaphore(concurrency)
    request = handshake_request(port)

    async def one() -> Any:
        async with gate:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                writer.transport.abort()
                raise ConnectionError(head[:80])
            return writer

    done = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    ok = [t for t in done if not isinstance(t, BaseException)]
    return ok, count - len(ok)


async def server_connections(port: int) -> int | None:
    """The open connection count that tickerd's ``GET /healthz`` reports."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        reply = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.transport.abort()
    count = json.loads(reply.partition(b"\r\n\r\n")[2] or b"{}").get("connections")
    return count if isinstance(count, int) else None


async def idle_session(srv: Server, count: int, budget_s: float) -> Result:
    """Open the idle connections, then read tickerd's RSS and connection count."""
    rss0 = proc_status_kb(srv.pid)
    t0 = time.monotonic()
    writers, failed = await asyncio.wait_for(open_idle(srv.port, count, 200), budget_s)
    opened_s = time.monotonic() - t0
    try:
        await asyncio.sleep(1.0)  # let the server settle before reading its RSS
        rss1 = proc_status_kb(srv.pid)
        held = await server_connections(srv.port)
    finally:
        for w in writers:
            w.transport.abort()
    return {
        "requested": count,
        "opened": len(writers),
        "handshake_failures": failed,
        "server_connections": held,
        "open_s": round(opened_s, 2),
        "rss_before_kb": rss0,
        "rss_kb": rss1,
        "per_conn_kb": round((rss1 - rss0) / max(1, len(writers)), 2),
    }


def idle_connections(ctx: Ctx) -> Result:
    """The idle-connections scenario against its own tickerd."""
    budget = 20 + ctx.plan.idle_conns / 200
    with ctx.servers.tickerd(name="tickerd-idle") as srv:
        try:
            return asyncio.run(idle_session(srv, ctx.plan.idle_conns, budget))
        except (OSError, TimeoutError) as exc:
            return {"failed": f"{type(exc).__name__}: {exc}"}


# -- slow reader (6) -------------------------------------------------------------------------


@dataclass
class SlowReader:
    """Sends all-symbols requests in big pipelined writes and never reads a byte."""

    port: int
    pid: int
    requests: int
    batch: int = 100
    sent: int = 0
    peak_kb: int = 0
    cut_after_s: float | None = None
    how: str = ""

    def run(self, budget_s: float) -> Result:
        """Send until cut off or the volume is sent, within ``budget_s``; the figures."""
        rss0 = proc_status_kb(self.pid)
        hwm_reset = reset_peak_rss(self.pid)
        self.peak_kb = rss0
        sock = open_raw(self.port)
        try:
            sock.setblocking(False)
            self._pump(sock, budget_s)
        finally:
            sock.close()
        if hwm_reset:  # the kernel's own peak since the reset catches what sampling misses
            self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid, "VmHWM"))
        return {
            "requests_sent": self.sent,
            "cut_off": self.cut_after_s is not None,
            "cut_after_s": self.cut_after_s,
            "how": self.how,
            "rss_before_kb": rss0,
            "rss_peak_kb": self.peak_kb,
            "peak_from": "VmHWM" if hwm_reset else "sampled VmRSS",
            "growth_kb": self.peak_kb - rss0,
        }

    def _pump(self, sock: socket.socket, budget_s: float) -> None:
        frames = b"".join(
            masked_text(b'{"id":"%d","method":"ticker.price"}' % i) for i in range(self.batch)
        )
        poller = select.poll()
        poller.register(sock, select.POLLOUT | getattr(select, "POLLRDHUP", 0x2000))
        pending = memoryview(b"")
        t0 = time.monotonic()
        while (now := time.monotonic()) - t0 < budget_s:
            self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid))
            if self._hung_up(poller, now - t0):
                return
            if not pending and self.sent < self.requests:
                pending = memoryview(frames)
            elif not pending:
                time.sleep(0.01)  # the volume is sent: keep watching for the cut-off
                continue
            try:
                pending = pending[sock.send(pending) :]
            except BlockingIOError:
                continue
            except OSError as exc:
                self._cut(type(exc).__name__, now - t0)
                return
            if not pending:
                self.sent += self.batch

    def _hung_up(self, poller: select.poll, elapsed: float) -> bool:
        for _, events in poller.poll(10):
            if events & ~select.POLLOUT:
                self._cut(f"poll events 0x{events:x}", elapsed)
                return True
        return False

    def _cut(self, how: str, elapsed: float) -> None:
        self.cut_after_s, self.how = round(elapsed, 3), how


def slow_reader(ctx: Ctx) -> Result:
    """The slow-reader scenario against its own tickerd."""
    with ctx.servers.tickerd(name="tickerd-slow") as srv:
        reader = SlowReader(srv.port, srv.pid, ctx.plan.slow_requests)
        try:
            out = reader.run(budget_s=8.0 if ctx.plan.quick else 15.0)
        except OSError as exc:
            return {"failed": f"{type(exc).__name__}: {exc}"}
        time.sleep(0.3)
        out["rss_after_kb"] = proc_status_kb(srv.pid)
        out["server_logged_cut"] = "cutting off" in srv.tail(200)
        return out
