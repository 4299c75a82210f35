"""Fixtures for end-to-end tests: a real ``tickerd serve`` process and raw-socket clients.

``server(*flags, env=...)`` starts ``python -m tickerd serve --host 127.0.0.1 --port 0
--rest-port 0`` as a subprocess, learns its URL from the ``tickerd ready: ...`` log line and stops it with
SIGTERM at teardown. ``raw(srv)`` opens a plain TCP socket to it and speaks RFC 6455 by
hand, so tests can send what no well-behaved client library would (fragments, RSV bits,
reserved opcodes, bad close codes, unmasked frames) and see every byte that comes back.
All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

HOST = "127.0.0.1"
WS_PATH = "/ws-fapi/v1"
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
READY_RE = re.compile(r"tickerd ready: (wss?://127\.0\.0\.1:(\d+)(/\S*)) \((\d+) symbols\)")
REST_READY_RE = re.compile(r"tickerd REST ready: (https?://127\.0\.0\.1:\d+)")
CONTROL_READY_RE = re.compile(r"tickerd control ready: (http://\S+)")
OPS_READY_RE = re.compile(r"tickerd ops ready: (http://\S+)")
STREAMS_READY_RE = re.compile(r"tickerd streams ready: (wss?://\S+)")
# Every port a test server opens is a free one: the REST twin and the ops surface too
# (their defaults are 9001 and 9003).
DEFAULT_FLAGS = ("--host", HOST, "--port", "0", "--rest-port", "0", "--ops-port", "0")
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def avoid_window_edge(window_s: float = 60.0, margin_s: float = 3.0) -> None:
    """Sleep past the next ``window_s`` boundary if it is less than ``margin_s`` away.

    The rate limiter's windows are aligned to the wall-clock minute (and the connection
    attempt counter's to 5 minutes, a multiple of it): a test that counts weight must not
    straddle a boundary, or the count restarts halfway through.
    """
    left = window_s - time.time() % window_s
    if left < margin_s:
        time.sleep(left + 0.05)


# -- the server process ------------------------------------------------------------------


@dataclass
class Server:
    """A running ``tickerd serve`` subprocess."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    path: str
    symbols: int
    rest_url: str | None = None  # http://127.0.0.1:PORT of the REST twin, if it runs
    control_url: str | None = None  # http://127.0.0.1:PORT of the control plane, if on
    ops_url: str | None = None  # http://127.0.0.1:PORT of the ops surface, if on
    stream_url: str | None = None  # ws://127.0.0.1:PORT of --stream-port, if given
    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return HOST

    @property
    def pid(self) -> int:
        return self.process.pid

    def connect(self, query: str = "", **kw: Any) -> ClientConnection:
        """An ordinary ``websockets`` client connection (no proxy, no client pings)."""
        options: dict[str, Any] = {
            "proxy": None,
            "open_timeout": 5,
            "close_timeout": 2,
            "ping_interval": None,
            "compression": None,
        }
        options.update(kw)
        return ws_connect(f"{self.url}?{query}" if query else self.url, **options)

    def log(self) -> str:
        """Everything the server has written to stderr so far."""
        with self.lock:
            return "\n".join(self.lines)

    def wait_log(self, needle: str, timeout: float = 5.0) -> str:
        """Wait until a stderr line contains ``needle``; return that line."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                for line in self.lines:
                    if needle in line:
                        return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line with {needle!r} in {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    def rss_kb(self, field: str = "VmRSS") -> int:
        """A memory figure of the process from /proc/PID/status in kB: VmRSS (resident
        now) or VmHWM (peak resident)."""
        with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} line")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        return self.process.wait(timeout)


class ServerFactory:
    """Starts ``tickerd serve`` processes; stops every one of them at teardown."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def __call__(
        self,
        *flags: str,
        env: dict[str, str] | None = None,
        minute_margin: float = 3.0,
        nofile: tuple[int, int] | None = None,
    ) -> Server:
        """Start a server with extra ``flags`` (and extra environment ``env``; ``nofile``:
        the soft and hard RLIMIT_NOFILE it starts with).

        Returns once the server has logged that it is ready, and (unless ``minute_margin``
        is 0) not within ``minute_margin`` seconds of a rate-limit window boundary.
        """
        # TICKERD_PURE stays: a suite run on the pure path serves from the pure path too.
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TICKERD_") or k == "TICKERD_PURE"
        }
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        cmd = [sys.executable, "-m", "tickerd", "serve", *DEFAULT_FLAGS, *flags]
        if nofile is not None:  # set in a launcher that then execs the server (same pid)
            cmd = [sys.executable, "-c", _WITH_NOFILE, *map(str, nofile), *cmd]
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,  # a Ctrl-C in the terminal must not reach it
        )
        lines: list[str] = []
        lock = threading.Lock()
        ready = threading.Event()
        found: list[re.Match[str]] = []

        def drain() -> None:
            # Keep reading for the whole life of the process, so the pipe never fills.
            assert process.stderr is not None
            for raw_line in process.stderr:
                line = raw_line.decode("utf-8", "replace").rstrip("\n")
                with lock:
                    lines.append(line)
                if not found:
                    m = READY_RE.search(line)
                    if m:
                        found.append(m)
                        ready.set()
            ready.set()  # EOF: the process died before (or after) becoming ready

        threading.Thread(target=drain, name=f"tickerd-stderr-{process.pid}", daemon=True).start()
        if not ready.wait(READY_TIMEOUT_S) or not found:
            _stop(process)
            with lock:
                text = "\n".join(lines)
            raise AssertionError(f"tickerd did not become ready: {cmd}\n{text}")
        m = found[0]
        srv = Server(process, m.group(1), int(m.group(2)), m.group(3), int(m.group(4)))
        srv.lines = lines
        srv.lock = lock
        with lock:
            rest = [m for m in map(REST_READY_RE.search, lines) if m]
        srv.rest_url = rest[0].group(1) if rest else None
        with lock:
            control = [m for m in map(CONTROL_READY_RE.search, lines) if m]
        srv.control_url = control[0].group(1) if control else None
        with lock:
            ops = [m for m in map(OPS_READY_RE.search, lines) if m]
        srv.ops_url = ops[0].group(1) if ops else None
        with lock:
            streams = [m for m in map(STREAMS_READY_RE.search, lines) if m]
        srv.stream_url = streams[0].group(1) if streams else None
        self.started.append(srv)
        if minute_margin:
            avoid_window_edge(60.0, minute_margin)
        return srv

    def stop_all(self) -> None:
        for srv in self.started:
            _stop(srv.process)


_WITH_NOFILE = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)


@pytest.fixture
def server() -> Iterator[ServerFactory]:
    """Factory: ``server(*flags, env={...})`` starts a tickerd process on a free port."""
    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def module_server() -> Iterator[ServerFactory]:
    """Like ``server``, for a process shared by the tests of one module."""
    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.stop_all()


# -- raw RFC 6455 client -----------------------------------------------------------------


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    raw: bytes


@dataclass
class Frame:
    fin: bool
    rsv: int  # the three RSV bits, as 0..7 (RSV1 = 4)
    opcode: int
    payload: bytes
    masked: bool

    @property
    def close_code(self) -> int | None:
        assert self.opcode == OP_CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> bytes:
        assert self.opcode == OP_CLOSE
        return self.payload[2:]


class Closed(Exception):
    """The server closed the TCP connection (EOF or reset)."""


def frame_bytes(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    key: bytes | None = None,
) -> bytes:
    """One client frame, masked unless told otherwise (RFC 6455 §5.2)."""
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", first, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mbit | 127, n)
    if not mask:
        return head + payload
    key = key if key is not None else os.urandom(4)
    return head + key + _xor(payload, key)


def close_payload(code: int | None = None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


def _xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


class RawClient:
    """A blocking TCP client that does the WebSocket handshake and framing by hand."""

    frame = staticmethod(frame_bytes)  # build frames to batch into one ``send``

    def __init__(
        self,
        port: int,
        *,
        rcvbuf: int | None = None,
        timeout: float = 5.0,
        source: str | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:  # another loopback address (127.0.0.0/8): another client IP
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        self.port = port
        self.buf = bytearray()
        self.eof = False

    # -- bytes ---------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        """Read more bytes into the buffer; raise Closed at EOF, TimeoutError at deadline."""
        if self.eof:
            raise Closed("EOF")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing received in time")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            raise TimeoutError("nothing received in time") from None
        except ConnectionError as exc:
            self.eof = True
            raise Closed(repr(exc)) from exc
        if not chunk:
            self.eof = True
            raise Closed("EOF")
        self.buf += chunk

    def wait_closed(self, timeout: float = 5.0) -> bytes:
        """Read until the server closes the TCP connection; return the bytes seen first."""
        deadline = time.monotonic() + timeout
        seen = bytes(self.buf)
        self.buf.clear()
        while True:
            try:
                self._fill(deadline)
            except Closed:
                return seen
            seen += bytes(self.buf)
            self.buf.clear()

    # -- HTTP ----------------------------------------------------------------------------

    def handshake(
        self,
        path: str = WS_PATH,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = 5.0,
    ) -> HttpResponse:
        """Send an upgrade request; return the response (body read for non-101 answers)."""
        key = base64.b64encode(os.urandom(16)).decode()
        hdrs = {
            "Host": f"{HOST}:{self.port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
        }
        hdrs.update(headers or {})
        request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        self.send((request + "\r\n").encode("latin-1"))
        response = self.read_http(timeout)
        if response.status == 101:
            expect = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
            assert response.headers.get("sec-websocket-accept") == expect, response.raw
        return response

    def get(self, path: str, *, timeout: float = 5.0) -> HttpResponse:
        """A plain HTTP GET (no upgrade)."""
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nConnection: close\r\n\r\n"
        self.send(request.encode("latin-1"))
        return self.read_http(timeout)

    def read_http(self, timeout: float = 5.0) -> HttpResponse:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end])
        del self.buf[:end]
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        assert version.startswith("HTTP/1."), lines[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if int(status) != 101:
            length = headers.get("content-length")
            if length is not None:
                while len(self.buf) < int(length):
                    self._fill(deadline)
                body = bytes(self.buf[: int(length)])
                del self.buf[: int(length)]
            else:
                body = self.wait_closed(max(0.0, deadline - time.monotonic()))
        return HttpResponse(int(status), reason[0] if reason else "", headers, body, head + body)

    # -- frames --------------------------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes = b"", **kw: Any) -> None:
        self.send(frame_bytes(opcode, payload, **kw))

    def send_text(self, text: str | bytes, **kw: Any) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.send_frame(OP_TEXT, data, **kw)

    def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    def recv_frame(self, timeout: float = 5.0) -> Frame:
        """The next frame from the server, whatever it is."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            self._fill(deadline)

    def recv_data(self, timeout: float = 5.0) -> Frame:
        """The next frame that is not a ping (pings are answered with pongs)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if frame.opcode != OP_PING:
                return frame
            self.send_frame(OP_PONG, frame.payload)

    def recv_text(self, timeout: float = 5.0) -> bytes:
        """The payload of the next text frame (a complete, unfragmented message)."""
        frame = self.recv_data(timeout)
        assert frame.opcode == OP_TEXT and frame.fin and frame.rsv == 0, frame
        return frame.payload

    def expect_close(self, timeout: float = 5.0) -> Frame:
        """Skip pings; the next frame must be a close frame, returned."""
        frame = self.recv_data(timeout)
        assert frame.opcode == OP_CLOSE, f"expected a close frame, got {frame}"
        return frame

    def _parse(self) -> Frame | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            n = struct.unpack_from("!H", buf, 2)[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n = struct.unpack_from("!Q", buf, 2)[0]
            pos = 10
        masked = bool(b1 & 0x80)
        key = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            key = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos : pos + n])
        del buf[: pos + n]
        if masked:
            payload = _xor(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload, masked)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class RawFactory:
    def __init__(self) -> None:
        self.clients: list[RawClient] = []

    def __call__(
        self,
        srv: Server,
        *,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        handshake: bool = True,
        rcvbuf: int | None = None,
    ) -> RawClient:
        """A raw client connected to ``srv``; upgraded to WebSocket unless told otherwise."""
        client = RawClient(srv.port, rcvbuf=rcvbuf)
        self.clients.append(client)
        if handshake:
            response = client.handshake(path or srv.path, headers)
            assert response.status == 101, response.raw
        return client

    def close_all(self) -> None:
        for c in self.clients:
            c.close()


@pytest.fixture
def raw() -> Iterator[RawFactory]:
    """Factory: ``raw(srv)`` opens a raw WebSocket connection (closed at teardown)."""
    factory = RawFactory()
    try:
        yield factory
    finally:
        factory.close_all()
