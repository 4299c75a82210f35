#!/usr/bin/env python3
"""Cluster-mode figures: one worker on Redis against one plain process, and per-worker cost.

Usage, from the repository root with the dev venv's Python (redis-server and gcc on PATH)::

    python benchmarks/cluster.py                   # every scenario, ~1 minute
    python benchmarks/cluster.py --duration 3 --json /tmp/cluster.json

Scenarios, each with ``benchmarks/loadgen.c`` (built by ``harness.procs.build_loadgen``) pinned to
CPU 1 and the server to CPU 0:

* ``single``: one symbol, 50 connections × 20 in flight, the book idle;
* ``all-20k``: the all-symbols array, 50 × 4, while the synthetic feed writes 20 000
  ticks/s into the book (in cluster mode those ticks also go out on the book bus);

each against ``tickerd serve`` alone and ``tickerd serve --redis URL`` (one worker in
cluster mode: the shared limiter, the book bus and the feed lease all live), in the same
run; ``ratio`` is cluster/single.

``workers``: ``--workers 2 --redis URL``, two generators at once, each connecting from a
loopback source the reuseport pin sends to a different worker (``loadgen -B``); each
worker's rate and CPU share give its cost in CPU-µs per request: N workers on N cores
serve N / cost requests per second while the cost holds.

A redis-server is started on a free port for the run and stopped after it (by PID).
Output: a Markdown table; ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.procs import build_loadgen, stop_process

from tickerd.cluster.reuseport import pin_index

Result = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tickerd-bench-redis-")
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("benchmarks/cluster.py: redis-server is not installed")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class Server:
    """``tickerd serve`` on CPU 0; its ports read from its log."""

    def __init__(self, args: list[str], workers: int = 1) -> None:
        cmd = ["taskset", "-c", "0", sys.executable, "-m", "tickerd", "serve",
               "--port", "0", "--rest-port", "0", "--weight-limit", "1000000000",
               "--connect-limit", "0", "--ops-port", "-1", *args]  # fmt: skip
        if workers > 1:
            cmd += ["--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.ws_port = self.rest_port = self.control_port = 0
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 30
        seen = ""
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            seen += line
            m = re.search(r"WebSocket port (\d+), REST port (\d+)", line)
            if m:
                self.ws_port, self.rest_port = int(m.group(1)), int(m.group(2))
            m = re.search(r"control ready: http://[^:]+:(\d+)", line)
            if m:
                self.control_port = int(m.group(1))
            m = re.search(r"REST ready: http://[^:]+:(\d+)", line)
            if m and workers == 1:
                self.rest_port = int(m.group(1))
            m = re.search(r"tickerd ready: ws://[^:]+:(\d+)", line)
            if m and workers == 1:
                self.ws_port = int(m.group(1))
                break
            if workers > 1 and seen.count("tickerd ready") >= workers:
                break
            if not line and self.proc.poll() is not None:
                raise SystemExit(f"tickerd did not start:\n{seen}")
        # Keep draining the log so the server never blocks on a full pipe.
        self._drain = subprocess.Popen(["cat"], stdin=self.proc.stderr, stdout=subprocess.DEVNULL)
        time.sleep(1.0)

    def worker_pid(self, source: str) -> int:
        """The pid of the worker the pin sends ``source`` to (its /healthz says)."""
        with socket.create_connection(("127.0.0.1", self.rest_port), 5, (source, 0)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return int(json.loads(data.split(b"\r\n\r\n", 1)[1])["worker"]["pid"])

    def stop(self) -> None:
        stop_process(self.proc)
        self._drain.wait(5)


def loadgen(binary: Path, port: int, pid: int, args: list[str], source: str | None = None,
            duration: float = 3.0) -> subprocess.Popen[str]:  # fmt: skip
    cmd = ["taskset", "-c", "1", str(binary), "-p", str(port), "-P", str(pid), "-j",
           "-d", str(duration), "-w", "1", *args]  # fmt: skip
    if source is not None:
        cmd += ["-B", source]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen[str]) -> Result:
    out, _ = proc.communicate(timeout=120)
    doc: Result = json.loads(out.strip().splitlines()[-1])
    return doc


def staleness(redis_url: str, samples: int = 60) -> Result:
    """ms from a ``price.set`` answered by node A to node B serving the price (REST polled
    in a tight loop on a kept-alive connection), over ``samples`` prices."""
    import http.client

    token = "bench-token"
    args = ["--tick-rate", "0", "--redis", redis_url, "--control-port", "0",
            "--control-token", token]  # fmt: skip
    a, b = Server(args), Server(args)
    try:
        control = http.client.HTTPConnection("127.0.0.1", a.control_port, timeout=5)
        rest = http.client.HTTPConnection("127.0.0.1", b.rest_port, timeout=5)
        lags = []
        for i in range(samples):
            price = f"{20000 + i}.5"
            control.request("POST", "/control/price/set",
                            json.dumps({"symbol": "BTCUSDT", "price": price}),
                            {"Authorization": f"Bearer {token}"})  # fmt: skip
            control.getresponse().read()
            t0 = time.perf_counter()
            while True:
                rest.request("GET", "/fapi/v1/ticker/price?symbol=BTCUSDT")
                body = rest.getresponse().read()
                if price.encode() + b"0" in body or f'"{price}"'.encode() in body:
                    break
                if time.perf_counter() - t0 > 5:
                    raise SystemExit("a price did not arrive within 5 s")
            lags.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)
    finally:
        a.stop()
        b.stop()
    lags.sort()
    return {
        "samples": samples,
        "p50_ms": lags[len(lags) // 2],
        "p99_ms": lags[int(len(lags) * 0.99)],
        "max_ms": lags[-1],
    }


SCENARIOS = {
    "single": (["--tick-rate", "0"], ["-c", "50", "-k", "20", "-s", "BTCUSDT,ETHUSDT"]),
    "all-20k": (["--tick-rate", "20000"], ["-c", "50", "-k", "4", "-m", "all", "-L", "1000"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    binary = build_loadgen()
    redis = Redis()
    figures: Result = {}
    try:
        for name, (server_args, gen_args) in SCENARIOS.items():
            row: Result = {}
            for mode, extra in (("single", []), ("cluster", ["--redis", redis.url])):
                server = Server(server_args + extra)
                try:
                    r = result(loadgen(binary, server.ws_port, server.proc.pid, gen_args,
                                       duration=args.duration))  # fmt: skip
                finally:
                    server.stop()
                row[mode] = {"rps": r["rps"], "srv_cpu": r.get("srv_cpu"), "p50_us": r["p50_us"]}
            row["ratio"] = row["cluster"]["rps"] / row["single"]["rps"]
            figures[name] = row
        sources = []
        for i in range(2, 250):
            ip = f"127.0.0.{i}"
            if pin_index(ip, 2) == len(sources):
                sources.append(ip)
            if len(sources) == 2:
                break
        server = Server(["--tick-rate", "0", "--redis", redis.url], workers=2)
        try:
            gens = [(s, server.worker_pid(s)) for s in sources]
            procs = [
                loadgen(binary, server.ws_port, pid, SCENARIOS["single"][1], source=s,
                        duration=args.duration)
                for s, pid in gens
            ]  # fmt: skip
            workers = [result(p) for p in procs]
        finally:
            server.stop()
        figures["staleness"] = staleness(redis.url)
        figures["workers"] = [
            {"rps": w["rps"], "srv_cpu": w.get("srv_cpu"),
             "cpu_us_per_req": 1e6 * (w.get("srv_cpu") or 0) / w["rps"] if w["rps"] else None}
            for w in workers
        ]  # fmt: skip
    finally:
        redis.stop()
    s = figures["single"]
    print("| scenario | single req/s | cluster worker req/s | cluster/single |")
    print("|---|---:|---:|---:|")
    for name in SCENARIOS:
        row = figures[name]
        print(f"| {name} | {row['single']['rps']:,.0f} | {row['cluster']['rps']:,.0f} "
              f"| {row['ratio']:.2f} |")  # fmt: skip
    single_cost = 1e6 * (s["single"]["srv_cpu"] or 0) / s["single"]["rps"]
    print(f"\nsingle process: {single_cost:.2f} CPU-µs per request (single symbol)")
    for i, w in enumerate(figures["workers"]):
        print(f"worker {i} of 2 (cluster): {w['rps']:,.0f} req/s at {w['srv_cpu']:.2f} of a core"
              f" = {w['cpu_us_per_req']:.2f} CPU-µs per request")  # fmt: skip
    st = figures["staleness"]
    print(f"\nstaleness (price.set on one node until another serves it, {st['samples']} prices):"
          f" p50 {st['p50_ms']:.2f} ms, p99 {st['p99_ms']:.2f} ms, max {st['max_ms']:.2f} ms")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
