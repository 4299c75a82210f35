"""Real processes for the scale-out tests: a redis-server per test and ``tickerd serve``
nodes, each started on free ports and ended by its PID (never by name)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from tickerd.cluster.reuseport import pin_index

REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sources_for(workers: int, per_worker: int = 1) -> list[list[str]]:
    """Loopback source addresses the reuseport pin sends to each worker."""
    found: list[list[str]] = [[] for _ in range(workers)]
    for i in range(2, 250):
        ip = f"127.0.0.{i}"
        slot = found[pin_index(ip, workers)]
        if len(slot) < per_worker:
            slot.append(ip)
        if all(len(s) >= per_worker for s in found):
            return found
    raise AssertionError("no loopback sources for every worker")


def _end(proc: subprocess.Popen[Any], timeout: float = 15.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class RedisServer:
    """One redis-server on a free port, no persistence, in its own temp dir."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tickerd-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS is not None
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)
            _end(self.proc, 5)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


_PORTS = re.compile(rb"supervisor: \d+ workers, WebSocket port (\d+), REST port (\d+)")
_READY = re.compile(rb"tickerd ready: ws://[^:]+:(\d+)")
_REST = re.compile(rb"tickerd REST ready: http://[^:]+:(\d+)")


class Node:
    """``tickerd serve`` as a subprocess; its stderr is collected by a thread."""

    def __init__(self, args: Sequence[str], workers: int) -> None:
        self.workers = workers
        cmd = [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "0",
               "--ops-port", "-1", "--workers", str(workers), *args]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.log = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ws_port = self.rest_port = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.rest_port:
            with self._lock:
                text = bytes(self.log)
            m = _PORTS.search(text)
            if m is None and workers == 1:
                ws, rest = _READY.search(text), _REST.search(text)
                if ws and rest:
                    self.ws_port, self.rest_port = int(ws.group(1)), int(rest.group(1))
            elif m is not None:
                self.ws_port, self.rest_port = int(m.group(1)), int(m.group(2))
            if self.proc.poll() is not None:
                raise AssertionError(f"tickerd exited: {text.decode(errors='replace')}")
            time.sleep(0.05)
        assert self.rest_port, bytes(self.log).decode(errors="replace")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.log += line

    def text(self) -> str:
        with self._lock:
            return bytes(self.log).decode(errors="replace")

    def get(
        self, path: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.rest_port, timeout=5, source_address=(source, 0)
        )
        try:
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def health(self, source: str = "127.0.0.1") -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.get("/healthz", source)[2])
        return doc

    def wait_healthy(self, sources: Sequence[str], timeout: float = 30) -> None:
        """Until every worker answers /healthz with a price book."""
        deadline = time.monotonic() + timeout
        for source in sources:
            while True:
                try:
                    if self.health(source).get("symbols", 0) > 0:
                        break
                except (OSError, ValueError):
                    pass
                assert time.monotonic() < deadline, self.text()
                time.sleep(0.1)

    def stop(self) -> int | None:
        return _end(self.proc)


@contextmanager
def node(args: Sequence[str], workers: int = 2) -> Iterator[Node]:
    n = Node(args, workers)
    try:
        yield n
    finally:
        n.stop()


def wait_for(check: Any, timeout: float, what: str) -> float:
    """Poll ``check()`` until true; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - start
