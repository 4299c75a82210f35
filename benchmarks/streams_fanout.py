#!/usr/bin/env python3
"""Market-stream fan-out: events delivered to many subscribers, against a naive fan-out.

Usage, from the repository root with the dev venv's Python (gcc on PATH)::

    python benchmarks/streams_fanout.py                         # 1000 + 1000 subscribers
    python benchmarks/streams_fanout.py --subscribers 200 --duration 2 --json /tmp/f.json

Every server is pinned to CPU 0, every generator to CPU 1 (``taskset``), all on 127.0.0.1.
The book takes ``--rate`` trades a second (20 000) spread over the symbols of a
512-symbol exchangeInfo file: tickerd's own synthetic feed (``--tick-rate``, each tick a
trade), and the naive server's identical walk in process (``benchmarks/naive_streams.py``).
The subscribers are ``benchmarks/loadgen.c`` in stream mode (``-m stream``: one process per
group, each reading its sockets with epoll and counting the events it receives):
``--subscribers`` sockets on ``/ws/!miniTicker@arr`` and as many on ``/ws/btcusdt@aggTrade``,
both groups at once (under ``/market``, the route Binance serves them on).

Scenarios, each against the same book rate:

* ``fanout``: events delivered per second to each group, by tickerd and by the naive
  server in the same run; ``ratio`` is tickerd / naive per group (target >= 10), and the
  events per server CPU-second beside it;
* ``api``: tickerd's pipelined ``ticker.price`` rate (50 connections x 20 in flight) with
  the two groups of subscribers connected and receiving, over the rate with no subscriber
  (target >= 0.9).

A subscriber the server cut off, a failed handshake or a frame that is no event makes the
run fail; subscribers a server has not taken in when the connect phase times out (10 ms a
subscriber over 5 s) are dropped and the rest measured, the count beside each rate. Every process started here is stopped here (by its own handle), each bounded by a
timeout. Output: a Markdown table; ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.procs import build_loadgen, raise_nofile, stop_process, write_symbols_file

Result = dict[str, Any]
HERE = Path(__file__).resolve().parent
SYMBOLS = 512
GROUPS = {"arr": "/market/ws/!miniTicker@arr", "agg": "/market/ws/btcusdt@aggTrade"}
TARGETS = {"fanout": 10.0, "api": 0.9}
START_TIMEOUT_S = 30.0
API_ARGS = ["-c", "50", "-k", "20", "-s", "BTCUSDT,ETHUSDT"]


class Server:
    """A server on CPU 0; its port read from the line matching ``ready``."""

    def __init__(self, argv: list[str], ready: str) -> None:
        self.proc = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)  # fmt: skip
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        seen = ""
        self.port = 0
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            seen += line
            m = re.search(ready, line)
            if m:
                self.port = int(m.group(1))
                break
            if not line and self.proc.poll() is not None:
                break
        if not self.port:
            self.stop()
            raise SystemExit(f"benchmarks/streams_fanout.py: {argv[0]} did not start:\n{seen}")
        # Keep draining the output so the server never blocks on a full pipe.
        self._drain = subprocess.Popen(["cat"], stdin=self.proc.stdout, stdout=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)
        if hasattr(self, "_drain"):
            self._drain.wait(5)


def tickerd(symbols: Path, rate: float) -> Server:
    return Server([sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "-1",
                   "--ops-port", "-1", "--weight-limit", "1000000000", "--connect-limit", "0",
                   "--symbols-file", str(symbols), "--tick-rate", f"{rate:g}"],
                  r"tickerd ready: ws://[^:]+:(\d+)")  # fmt: skip


def naive(symbols: Path, rate: float) -> Server:
    return Server([sys.executable, str(HERE / "naive_streams.py"), "--port", "0",
                   "--symbols-file", str(symbols), "--rate", f"{rate:g}"],
                  r"naive streams ready: ws://[^:]+:(\d+)")  # fmt: skip


def loadgen(binary: Path, server: Server, args: list[str], warmup: float,
            duration: float) -> subprocess.Popen[str]:  # fmt: skip
    cmd = ["taskset", "-c", "1", str(binary), "-p", str(server.port), "-P", str(server.pid),
           "-j", "-w", f"{warmup:g}", "-d", f"{duration:g}", *args]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(proc: subprocess.Popen[str], timeout: float) -> Result:
    """A generator's JSON line; SystemExit naming the failure when it reported errors."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)
        raise SystemExit("benchmarks/streams_fanout.py: a generator timed out") from None
    lines = out.strip().splitlines()
    if not lines:
        raise SystemExit(f"benchmarks/streams_fanout.py: loadgen failed: {err.strip()[-300:]}")
    doc: Result = json.loads(lines[-1])
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks/streams_fanout.py: loadgen reported {doc['errors']} "
                         f"(lost {doc['lost']}): {err.strip()[-300:]}")  # fmt: skip
    return doc


def subscribers(binary: Path, server: Server, count: int, warmup: float,
                duration: float) -> dict[str, subprocess.Popen[str]]:  # fmt: skip
    return {g: loadgen(binary, server, ["-m", "stream", "-u", path, "-c", str(count)], warmup,
                       duration) for g, path in GROUPS.items()}  # fmt: skip


def fanout_figures(groups: dict[str, Result]) -> Result:
    """Events per second and per server CPU-second of each group (from its generator)."""
    out: Result = {}
    for g, doc in groups.items():
        cpu = doc.get("srv_cpu") or 0.0
        out[g] = {"events_per_s": doc["rps"], "srv_cpu": cpu, "bytes_in": doc["bytes_in"],
                  "opened": doc["opened"], "events_per_cpu_s": doc["rps"] / cpu if cpu else None}  # fmt: skip
    return out


def ratios(figures: Result) -> Result:
    """tickerd / naive per group, delivered events per second and per server CPU-second;
    the API rate with subscribers over the rate without."""
    out: Result = {}
    for g in GROUPS:
        t, n = figures["fanout"]["tickerd"][g], figures["fanout"]["naive"][g]
        out[f"{g}_ratio"] = t["events_per_s"] / n["events_per_s"] if n["events_per_s"] else None
        # Both groups share the server's CPU: its events of all groups per CPU-second.
        out[f"{g}_events"] = t["events_per_s"]
    per_cpu = {}
    for who in ("tickerd", "naive"):
        f = figures["fanout"][who]
        cpu = max(f[g]["srv_cpu"] for g in GROUPS)
        per_cpu[who] = sum(f[g]["events_per_s"] for g in GROUPS) / cpu if cpu else None
    t_cpu, n_cpu = per_cpu["tickerd"], per_cpu["naive"]
    out["per_cpu_ratio"] = t_cpu / n_cpu if t_cpu and n_cpu else None
    api = figures["api"]
    out["api_ratio"] = api["with"]["rps"] / api["without"]["rps"] if api["without"]["rps"] else None
    return out


def measure(binary: Path, symbols: Path, a: argparse.Namespace) -> Result:
    """Every scenario once (see the module docstring)."""
    wait = a.warmup + a.duration + 30
    figures: Result = {"fanout": {}, "api": {}}
    for who, start in (("tickerd", tickerd), ("naive", naive)):
        server = start(symbols, a.rate)
        print(
            f"  {who}: {a.subscribers} + {a.subscribers} subscribers", file=sys.stderr, flush=True
        )
        try:
            procs = subscribers(binary, server, a.subscribers, a.warmup, a.duration)
            figures["fanout"][who] = fanout_figures({g: outcome(p, wait) for g, p in procs.items()})
            if who == "tickerd":
                without = outcome(loadgen(binary, server, API_ARGS, a.warmup, a.duration), wait)
                # The subscribers connect and receive through the whole API run.
                procs = subscribers(binary, server, a.subscribers, a.warmup + 2, a.duration + 1)
                time.sleep(2.0)
                with_subs = outcome(loadgen(binary, server, API_ARGS, a.warmup, a.duration), wait)
                held = {g: outcome(p, wait) for g, p in procs.items()}
                figures["api"] = {
                    "without": {"rps": without["rps"], "srv_cpu": without["srv_cpu"]},
                    "with": {"rps": with_subs["rps"], "srv_cpu": with_subs["srv_cpu"],
                             "events_per_s": {g: d["rps"] for g, d in held.items()}},
                }  # fmt: skip
        finally:
            server.stop()
    figures["ratios"] = ratios(figures)
    figures["setup"] = {"subscribers": a.subscribers, "rate": a.rate, "symbols": SYMBOLS,
                        "duration": a.duration, "warmup": a.warmup}  # fmt: skip
    return figures


def table(figures: Result) -> list[str]:
    """The Markdown lines of the figures."""
    r = figures["ratios"]
    lines = ["| group | tickerd events/s (subscribers) | naive events/s (subscribers) | tickerd / naive |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for g, path in GROUPS.items():
        t, n = figures["fanout"]["tickerd"][g], figures["fanout"]["naive"][g]
        lines.append(f"| {path} | {t['events_per_s']:,.0f} ({t['opened']}) "
                     f"| {n['events_per_s']:,.0f} ({n['opened']}) | {r[f'{g}_ratio']:.2f} |")  # fmt: skip
    api = figures["api"]
    lines += ["", f"events per server CPU-second, tickerd / naive: {r['per_cpu_ratio']:.2f}",
              f"ticker.price pipelined: {api['without']['rps']:,.0f} req/s without subscribers, "
              f"{api['with']['rps']:,.0f} with them: {r['api_ratio']:.3f}"]  # fmt: skip
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--subscribers", type=int, default=1000, help="per group (default 1000)")
    p.add_argument("--rate", type=float, default=20_000.0, help="trades/s into the book")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    if not 1 <= a.subscribers <= 5000 or not 0 < a.duration <= 30 or not 0 <= a.warmup <= 10:
        p.error("need 1-5000 subscribers, a duration of at most 30 s, a warm-up of at most 10 s")
    raise_nofile()
    binary = build_loadgen()
    with tempfile.TemporaryDirectory(prefix="tickerd-fanout-") as tmp:
        figures = measure(binary, write_symbols_file(Path(tmp), SYMBOLS), a)
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2))
    print("\n".join(table(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
