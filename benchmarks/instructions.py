#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind: a figure that noise cannot move.

Usage, from the repository root with the dev venv's Python::

    python benchmarks/instructions.py                  # tickerd and the echo server
    python benchmarks/instructions.py --requests 40000 --json /tmp/instr.json

req/s figures swing with whatever else the machine does; instruction counts do not (the
same binary, inputs and environment give the same count, whatever runs beside it). Use this
to judge a hot-path change: run it before and after, on the same machine.

Each server (``tickerd serve --tick-rate 0``, ``benchmarks/stack_servers.py echo``, the
transport with no protocol, and ``tickerd-faults-cleared``: tickerd with its control plane,
where a latency fault was armed and cleared before counting, so its ratio to ``tickerd``
is what a fault leaves behind on the frame path; ``tickerd-ops-off``: ``--ops-port -1``,
where every other tickerd has its ops surface on) runs under ``valgrind --tool=callgrind`` with a fixed
``PYTHONHASHSEED``. The client here opens every connection and warms the server up first,
then zeroes callgrind's counters (``callgrind_control -z``), sends exactly ``--requests``
``ticker.price`` requests, verifies every reply (its id, ``"status":200`` for tickerd), and
dumps the counters (``callgrind_control -d``): the dump holds the instructions of those
requests alone, handshakes and start-up excluded. Two phases: pipelined (``--depth``
requests written at once on each connection, all replies read, repeated) and unpipelined
(one request in flight per connection).

Output: a Markdown table on stdout (``--json FILE`` also writes the figures). Exit status 1
when a server does not start or a reply fails verification.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180.0  # a Python start-up under valgrind is ~50x slower than native
IO_TIMEOUT_S = 60.0
SYMBOLS = (b"BTCUSDT", b"ETHUSDT", b"SOLUSDT", b"XRPUSDT")
# tickerd as benchmarked (its ops surface on), the transport alone, tickerd after a fault was
# armed and cleared, and tickerd with the ops surface off.
SERVERS = ("tickerd", "echo", "tickerd-faults-cleared", "tickerd-ops-off")
CONTROL_TOKEN = "instructions-benchmark"  # the control plane listens on loopback only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_argv(kind: str, port: int, side_port: int) -> list[str]:
    """The command line of one measured server; ``side_port`` for its control plane."""
    if kind == "echo":
        return [sys.executable, str(ROOT / "benchmarks" / "stack_servers.py"), "echo",
                "--port", str(port)]  # fmt: skip
    argv = [sys.executable, "-m", "tickerd", "serve", "--port", str(port), "--rest-port", "-1",
            "--tick-rate", "0", "--weight-limit", "1000000000", "--connect-limit", "0",
            "--log-level", "WARNING",
            "--ops-port", "-1" if kind == "tickerd-ops-off" else "0"]  # fmt: skip
    if kind == "tickerd-faults-cleared":
        argv += ["--control-port", str(side_port)]
    return argv


def control(port: int, op: str, body: dict[str, object]) -> None:
    """One control-plane operation (``POST /control/<op>``); raises unless it answers 200."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/control/{op}", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {CONTROL_TOKEN}"}, method="POST",
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(request, timeout=IO_TIMEOUT_S) as reply:
                if reply.status != 200:
                    raise RuntimeError(f"control {op}: HTTP {reply.status}")
                return
        except urllib.error.URLError as exc:  # the control plane may open after the WS port
            if not isinstance(exc.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def prepare(kind: str, side_port: int) -> None:
    """Bring a started server into the state its kind measures."""
    if kind == "tickerd-faults-cleared":
        # A latency fault swaps the connection's reply slot; clearing it must restore the
        # unarmed path, so this server should count what "tickerd" counts.
        control(side_port, "fault/latency", {"ms": 0})
        control(side_port, "fault/clear", {})


def masked_text(payload: bytes) -> bytes:
    """A client text frame (masked with a zero key: the mask is mandatory, not its value)."""
    n = len(payload)
    head = bytes((129, 128 | n)) if n < 126 else bytes((129, 128 | 126)) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


class Conn:
    """One raw WebSocket client connection with a frame reader."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("handshake refused")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())

    def frames(self, count: int) -> list[bytes]:
        """Read ``count`` server frames' payloads."""
        out: list[bytes] = []
        while len(out) < count:
            frame = self._parse()
            if frame is None:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                self.buf += chunk
            else:
                out.append(frame)
        return out

    def _parse(self) -> bytes | None:
        b = self.buf
        if len(b) < 2:
            return None
        n, at = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, at = int.from_bytes(b[2:4], "big"), 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, at = int.from_bytes(b[2:10], "big"), 10
        if len(b) < at + n:
            return None
        self.buf = b[at + n :]
        return b[at : at + n]


def exchange(conns: list[Conn], depth: int, total: int, check_status: bool, start_id: int) -> None:
    """Send ``total`` requests, ``depth`` at a time per connection; verify every reply."""
    rid = start_id
    sent = 0
    while sent < total:
        batches: list[list[int]] = []
        for conn in conns:
            ids = list(range(rid, rid + min(depth, total - sent)))
            rid += len(ids)
            sent += len(ids)
            data = b"".join(
                masked_text(
                    b'{"id":%d,"method":"ticker.price","params":{"symbol":"%s"}}'
                    % (i, SYMBOLS[i % len(SYMBOLS)])
                )
                for i in ids
            )
            if data:
                conn.sock.sendall(data)
            batches.append(ids)
        for conn, ids in zip(conns, batches, strict=True):
            for i, reply in zip(ids, conn.frames(len(ids)), strict=True):
                if not reply.startswith(b'{"id":%d,' % i) or (
                    check_status and b'"status":200' not in reply[:40]
                ):
                    raise AssertionError(f"bad reply to {i}: {reply[:120]!r}")


def callgrind(pid: int, command: str) -> None:
    subprocess.run(["callgrind_control", command, str(pid)], check=True, timeout=IO_TIMEOUT_S,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def totals(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line")


def measure(kind: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    port, side_port = free_port(), free_port()
    out = work / f"{kind}.cg"
    env = dict(os.environ, PYTHONHASHSEED="0", TICKERD_CONTROL_TOKEN=CONTROL_TOKEN)
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
         *server_argv(kind, port, side_port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                probe = Conn(port, "/ws-fapi/v1")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} did not start") from None
                time.sleep(0.5)
        prepare(kind, side_port)
        conns = [probe] + [Conn(port, "/ws-fapi/v1") for _ in range(args.conns - 1)]
        check = kind != "echo"
        exchange(conns, args.depth, 20 * args.conns * args.depth, check, 1)  # warm-up
        figures: dict[str, float] = {}
        for phase, depth in (("pipelined", args.depth), ("unpipelined", 1)):
            callgrind(proc.pid, "-z")
            exchange(conns, depth, args.requests, check, 10_000_000)
            callgrind(proc.pid, "-d")
            dumps = sorted(work.glob(f"{kind}.cg.{proc.pid}.*"), key=lambda p: int(p.suffix[1:]))
            figures[phase] = totals(dumps[-1]) / args.requests
        return figures
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=IO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def hot_path() -> str:
    """Which request path the measured tickerd runs (it inherits this environment)."""
    done = subprocess.run(
        [sys.executable, "-c", "from tickerd import hotpath; print(hotpath.describe())"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per phase")
    parser.add_argument("--conns", type=int, default=10, help="connections")
    parser.add_argument("--depth", type=int, default=20, help="requests in flight, pipelined")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated, from {', '.join(SERVERS)} (default: all)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.requests < 1000 or args.conns < 1 or not 1 <= args.depth <= 1000:
        parser.error("--requests >= 1000, --conns >= 1, 1 <= --depth <= 1000")
    kinds = args.servers.split(",")
    if not {"tickerd", "echo"} <= set(kinds) <= set(SERVERS):
        parser.error(f"--servers: tickerd and echo, plus any of {', '.join(SERVERS[2:])}")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="tickerd-instr-") as tmp:
        for kind in kinds:
            try:
                results[kind] = measure(kind, args, Path(tmp))
            except (RuntimeError, AssertionError, OSError, subprocess.SubprocessError) as exc:
                print(f"instructions: {kind}: {exc}", file=sys.stderr)
                return 1
    print(f"tickerd hot path: {hot_path()}\n")
    print(f"instructions per request ({args.requests} requests per phase, {args.conns} "
          f"connections, pipelined depth {args.depth}):\n")  # fmt: skip
    print("| server | pipelined | unpipelined |\n|---|---:|---:|")
    for kind, fig in results.items():
        print(f"| {kind} | {fig['pipelined']:,.0f} | {fig['unpipelined']:,.0f} |")
    t, e = results["tickerd"], results["echo"]
    print(f"| tickerd over echo | {t['pipelined'] - e['pipelined']:,.0f} "
          f"| {t['unpipelined'] - e['unpipelined']:,.0f} |")  # fmt: skip
    for kind in (k for k in kinds if k not in ("tickerd", "echo")):
        k = results[kind]
        print(f"| {kind} / tickerd | {k['pipelined'] / t['pipelined']:.4f} "
              f"| {k['unpipelined'] / t['unpipelined']:.4f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
