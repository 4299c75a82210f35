#!/usr/bin/env python3
"""tickerd's benchmark harness: one command, every scenario, ratios within one run.

Usage, from the repository root with the dev venv's Python::

    python benchmarks/run.py                        # 3 reps, 1 s warm-up + 3 s per measurement
    python benchmarks/run.py --quick                # smoke run, under a minute (see below)
    python benchmarks/run.py --reps 5 --duration 5 --wsload /path/to/wsload
    python benchmarks/run.py --render benchmarks/RESULTS.json   # re-write the .md, no measuring

It compiles ``benchmarks/loadgen.c`` with the system gcc (-O2, into ``benchmarks/.build/``)
when stale, writes a 512-symbol exchangeInfo file into a temporary directory, then for each
repetition starts every server in turn (the order rotates per repetition) pinned to CPU 0,
drives it with loadgen pinned to CPU 1 over loopback, and computes every ratio within that
repetition. The report gives the per-repetition values, their median and spread (min-max).

Servers: ``naive`` (benchmarks/naive_server.py: websockets + stdlib json), ``echo`` and
``constant`` (benchmarks/stack_servers.py: tickerd's own transport without the protocol),
``tickerd`` (``tickerd serve --tick-rate 0``) and ``tickerd-ticking`` (``--tick-rate 1000``).

Scenarios: single-pipelined (50 conns x 20 in flight), single-unpipelined (200 x 1),
open-loop-20k (20 000 req/s offered, latency from the intended send time), all-symbols
(512 symbols, 50 x 4), idle-connections (10 000 open WebSockets, tickerd's RSS),
slow-reader (all-symbols requests, never read: RSS growth and the cut-off), book-updates
(PriceBook.apply, batches of 1000), replay-parse, and generator-ceiling (loadgen against
the echo server). With ``--wsload PATH`` an independent generator re-measures
single-pipelined against naive and tickerd.

The generator sleeps in epoll between events, as real clients and the independent wsload
do; ``--spin USEC`` makes it poll that long first (loadgen ``-b``), which spares a server
the generator's loopback wake-ups (the "loopback caveat" in loadgen.c) and so flatters
the naive server's one-write-per-reply most.

Noise control: before each run the harness waits (at most 3 s) for a lull in other work on
CPU 0, records that other work's share of CPU 0 during the run (``cpu0 other``), and
measures again, once, a run meant to saturate the server whose ``srv_cpu`` stayed below 0.9.
``--quick`` (the test suite's smoke run): 1 repetition, 0.5 s warm-up + 1 s, 1000 idle
connections, a smaller slow-reader volume and replay file, no waiting and no re-runs.

replay-parse measures ``parse_rows(path, universe)`` of ``tickerd.feeds.replay`` (or, until
that module exists, of ``tickerd.feeds.binance_files``) on a generated trades file, and
reports "not measured: replay feed not built" when neither has it.

Output: RESULTS.md (``--out``) and the raw results as JSON beside it (same name, ``.json``).
The default ``--out`` is the committed ``benchmarks/RESULTS.md`` for a full run and
``benchmarks/.build/quick/RESULTS.md`` (not committed) for ``--quick``, so a smoke run never
replaces the published figures.
Throughput targets are ratios within a repetition; latency, CPU per request, RSS and
ticks/s targets are absolute by nature. Exit status: 0 when every measurement was made
(whether or not it met its target), 1 when one could not be made (a server that did not
start, a reply that failed verification, a timeout), 2 on bad usage.
Every subprocess has a timeout, servers are stopped in ``finally`` blocks, and the whole run
is bounded by an alarm set from the estimate printed at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import functools
import importlib.util
import json
import os
import platform
import re
import resource
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from types import FrameType
from typing import Any, Self

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / ".build"
DEFAULT_OUT = HERE / "RESULTS.md"
QUICK_OUT = BUILD / "quick" / "RESULTS.md"  # smoke figures never overwrite the committed ones
LOADGEN_SRC = HERE / "loadgen.c"
HOST = "127.0.0.1"
WS_PATH = "/ws-fapi/v1"
SERVER_CPU, GEN_CPU = 0, 1
ALL_SYMBOLS = 512
NOFILE = 20_000
SATURATED = 0.9  # srv_cpu below this, in a scenario meant to saturate: measure again once
# loadgen -b: after an event the generator polls this long before sleeping, so a server is not
# charged the generator's loopback wake-ups (loadgen.c, "Loopback caveat"). Without it the
# naive server, which writes once per reply, pays one wake-up per reply and tickerd/naive
# comes out ~25 % higher than the independent wsload measures. Not for all-symbols: there
# the polling generator itself becomes the bottleneck.
SPIN_US = 0
QUIET_WAIT_S = 3.0  # longest wait for a lull in other work on the server CPU before a run
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
SYMS = "BTCUSDT,ETHUSDT"

SCENARIOS: dict[str, str] = {
    "single-pipelined": "single symbol, 50 conns x 20 in flight",
    "single-unpipelined": "single symbol, 200 conns x 1 in flight",
    "open-loop-20k": "20 000 req/s offered (open loop, -S); echo shows the stack's floor",
    "all-symbols": f"all {ALL_SYMBOLS} symbols, 50 conns x 4 in flight",
    "idle-connections": "idle WebSocket connections held open, tickerd's RSS",
    "slow-reader": "one client requesting all symbols and never reading",
    "book-updates": "PriceBook.apply, batches of 1000 pre-built ticks",
    "replay-parse": "replay-file parse throughput",
    "generator-ceiling": "loadgen -E against the echo server (50 x 20)",
}

Result = dict[str, Any]


# -- plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one invocation measures, and for how long."""

    reps: int
    duration: float
    warmup: float
    idle_conns: int
    slow_requests: int
    rerun: bool
    quick: bool
    out: Path
    wsload: Path | None
    pin: bool
    nice: int
    spin_us: int
    render: Path | None

    def estimate_s(self) -> float:
        """A generous guess of the whole run's wall time."""
        runs = 12 + (2 if self.wsload else 0)
        per_run = self.warmup + self.duration + 1.5 + (0 if self.quick else QUIET_WAIT_S / 2)
        rep = runs * per_run + 7 * 1.5 + self.idle_conns / 1000 + 12
        return 20 + self.reps * rep * (1.3 if self.rerun else 1.0)


def parse_args(argv: list[str]) -> Plan:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    p.add_argument("--duration", type=float, default=None, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 rep, 1 s, fewer conns")
    p.add_argument("--idle-conns", type=int, default=None, help="default 10000 (quick 1000)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"report path (default {DEFAULT_OUT.relative_to(HERE.parent)}; "
        f"--quick: {QUICK_OUT.relative_to(HERE.parent)}); the JSON goes beside it",
    )
    p.add_argument("--wsload", type=Path, default=None, help="external generator to cross-check")
    p.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="only re-write --out from an earlier run's JSON; measure nothing")  # fmt: skip
    p.add_argument("--spin", type=int, default=SPIN_US, metavar="USEC",
                   help=f"loadgen -b for the single-symbol closed-loop runs (default {SPIN_US}; "
                        "0: let the generator sleep)")  # fmt: skip
    p.add_argument("--nice", type=int, default=0,
                   help="niceness of the harness and its children (e.g. -10 on a box shared "
                        "with other work, as root; default 0)")  # fmt: skip
    a = p.parse_args(argv)
    q = bool(a.quick)
    plan = Plan(
        reps=a.reps if a.reps is not None else (1 if q else 3),
        duration=a.duration if a.duration is not None else (1.0 if q else 3.0),
        warmup=a.warmup if a.warmup is not None else (0.5 if q else 1.0),
        idle_conns=a.idle_conns if a.idle_conns is not None else (1000 if q else 10_000),
        slow_requests=1500 if q else 6000,
        rerun=not q,
        quick=q,
        out=(a.out if a.out is not None else QUICK_OUT if q else DEFAULT_OUT).resolve(),
        wsload=a.wsload.resolve() if a.wsload else None,
        pin=not a.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"),
        nice=a.nice,
        spin_us=a.spin,
        render=a.render,
    )
    if plan.reps < 1 or plan.duration <= 0 or plan.warmup < 0 or plan.duration + plan.warmup > 60:
        p.error("need reps >= 1, duration > 0, warm-up >= 0 and duration + warm-up <= 60")
    if plan.wsload is not None and not os.access(plan.wsload, os.X_OK):
        p.error(f"--wsload {plan.wsload}: not an executable file")
    return plan


# -- building and inputs ---------------------------------------------------------------------


def build_loadgen() -> Path:
    """Compile loadgen.c into benchmarks/.build/loadgen unless the binary is newer."""
    binary = BUILD / "loadgen"
    if binary.exists() and binary.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return binary
    BUILD.mkdir(exist_ok=True)
    tmp = BUILD / f"loadgen.{os.getpid()}.tmp"
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(LOADGEN_SRC)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr}")
    os.replace(tmp, binary)  # atomic: a concurrent run sees the old or the new binary
    return binary


def write_symbols_file(directory: Path, total: int) -> Path:
    """The bundled TRADING entries plus clones of BTCUSDT named S0001USDT... up to ``total``."""
    text = resources.files("tickerd.data").joinpath("exchange_info.json").read_text("utf-8")
    doc = json.loads(text)
    entries = [e for e in doc["symbols"] if e.get("status") == "TRADING"]
    btc = next(e for e in entries if e["symbol"] == "BTCUSDT")
    names = {e["symbol"] for e in entries}
    i = 0
    while len(entries) < total:
        i += 1
        name = f"S{i:04d}USDT"
        if name in names:
            continue
        clone = copy.deepcopy(btc)
        clone.update(symbol=name, pair=name, baseAsset=f"S{i:04d}")
        entries.append(clone)
        names.add(name)
    doc["symbols"] = entries
    path = directory / f"exchange_info_{total}.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def tickerd_has_flag(flag: str) -> bool:
    cmd = [sys.executable, "-m", "tickerd", "serve", "--help"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    return flag in done.stdout


# -- /proc -----------------------------------------------------------------------------------


def proc_status_kb(pid: int, key: str = "VmRSS") -> int:
    """A memory figure of a process in kB from /proc/PID/status (0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux >= 4.0, needs ptrace rights)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def proc_cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def cpu_busy_ticks(cpu: int) -> int:
    """Busy (not idle, not iowait) clock ticks of one CPU since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return sum(v[:8]) - v[3] - v[4]
    return 0


def wait_quiet(limit_s: float, window_s: float = 0.25, busy: float = 0.25) -> float:
    """Wait (at most ``limit_s``) for a window in which the server CPU is mostly idle.

    The server under test is idle between runs, so what keeps CPU 0 busy then is other
    work on the machine; starting a run in a lull makes noise less likely. Returns the wait.
    """
    hz, t0 = os.sysconf("SC_CLK_TCK"), time.monotonic()
    while (waited := time.monotonic() - t0) < limit_s:
        before = cpu_busy_ticks(SERVER_CPU)
        time.sleep(window_s)
        if (cpu_busy_ticks(SERVER_CPU) - before) / hz / window_s < busy:
            break
    return round(waited, 2)


@contextmanager
def cpu_noise(pid: int, out: Result) -> Iterator[None]:
    """Record in ``out["cpu0_other"]`` the share of the server's CPU used by other processes."""
    t0, busy0, mine0 = time.monotonic(), cpu_busy_ticks(SERVER_CPU), proc_cpu_ticks(pid)
    yield
    wall = time.monotonic() - t0
    hz = os.sysconf("SC_CLK_TCK")
    other = (cpu_busy_ticks(SERVER_CPU) - busy0) - (proc_cpu_ticks(pid) - mine0)
    out["cpu0_other"] = round(max(0.0, other / hz / wall), 3) if wall > 0 else None


# -- processes -------------------------------------------------------------------------------


def child_setup(cpu: int | None) -> Callable[[], None]:
    """A preexec function: pin to ``cpu`` (if any) and raise RLIMIT_NOFILE."""

    def setup() -> None:
        raise_nofile()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return setup


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@dataclass
class Server:
    """A benchmark server subprocess pinned to the server CPU, its output in a log file."""

    name: str
    argv: list[str]
    ready: re.Pattern[str]
    workdir: Path
    pin: bool
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    symbols: int = 0
    log: Path = field(default_factory=Path)

    def __enter__(self) -> Self:
        self.log = self.workdir / f"{self.name}.{time.monotonic_ns()}.log"
        with open(self.log, "wb") as sink:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                # The harness runs no threads, so a preexec function is safe here.
                preexec_fn=child_setup(SERVER_CPU if self.pin else None),  # noqa: PLW1509
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            m = self.ready.search(self.log.read_text("utf-8", "replace"))
            if m:
                self.port = int(m.group(1))
                self.symbols = int(m.group(2)) if m.lastindex and m.lastindex >= 2 else 0
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"server {self.name} did not become ready:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        with suppress(OSError):
            return "\n".join(self.log.read_text("utf-8", "replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


READY_LINE = re.compile(r"READY (\d+)")
TICKERD_READY = re.compile(r"tickerd ready: ws://127\.0\.0\.1:(\d+)/\S* \((\d+) symbols\)")


@dataclass(frozen=True)
class Servers:
    """How to start each kind of server in this run."""

    workdir: Path
    symbols_file: Path
    symbols: int
    pin: bool
    rest_off: bool

    def naive(self) -> Server:
        argv = [sys.executable, str(HERE / "naive_server.py"), "--host", HOST, "--port", "0",
                "--weight-limit", "1000000000", "--symbols", str(self.symbols)]  # fmt: skip
        return Server("naive", argv, READY_LINE, self.workdir, self.pin)

    def stack(self, kind: str, body_bytes: int = 0) -> Server:
        argv = [sys.executable, str(HERE / "stack_servers.py"), kind, "--port", "0"]
        if kind == "constant":
            argv += ["--body-bytes", str(body_bytes)]
        return Server(kind, argv, READY_LINE, self.workdir, self.pin)

    def tickerd(self, tick_rate: int = 0, *extra: str, name: str = "tickerd") -> Server:
        argv = [sys.executable, "-m", "tickerd", "serve", "--host", HOST, "--port", "0",
                "--weight-limit", "1000000000", "--connect-limit", "0",
                "--tick-rate", str(tick_rate), "--symbols-file", str(self.symbols_file),
                *(["--rest-port", "-1"] if self.rest_off else []), *extra]  # fmt: skip
        return Server(name, argv, TICKERD_READY, self.workdir, self.pin)


# -- load generators -------------------------------------------------------------------------


@dataclass(frozen=True)
class Gen:
    """The compiled loadgen and how long each run lasts."""

    binary: Path
    plan: Plan

    def run(self, srv: Server, args: list[str], saturate: bool) -> Result:
        """One measurement; measured again once if it should saturate the server and did not."""
        first = self.once(srv, args)
        cpu = first.get("srv_cpu")
        if not (saturate and self.plan.rerun and isinstance(cpu, float) and cpu < SATURATED):
            return first
        second = self.once(srv, args)
        second["rerun_after"] = {k: first.get(k) for k in ("rps", "srv_cpu", "cpu0_other")}
        return second

    def once(self, srv: Server, args: list[str]) -> Result:
        p = self.plan
        argv = [str(self.binary), "-h", HOST, "-p", str(srv.port), "-u", WS_PATH,
                "-w", str(p.warmup), "-d", str(p.duration), "-P", str(srv.pid), "-j", *args]  # fmt: skip
        out: Result = {"argv": "loadgen " + shlex.join(argv[1:])}
        if p.pin and not p.quick:
            out["waited_s"] = wait_quiet(QUIET_WAIT_S)
        with cpu_noise(srv.pid, out):
            out.update(run_json(argv, p.warmup + p.duration + 20, self.plan.pin))
        return out


def run_json(argv: list[str], timeout: float, pin: bool) -> Result:
    """Run a generator on the generator CPU; its last JSON line, or {"failed": why}."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=child_setup(GEN_CPU if pin else None),
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"failed": f"exit {done.returncode}: {done.stderr.strip()[-400:]}"}
    result: Result = json.loads(lines[-1])
    result["exit"] = done.returncode
    if done.returncode != 0:
        result["failed"] = f"exit {done.returncode} (verification errors or lost replies)"
    return result


def wsload_run(plan: Plan, srv: Server) -> Result:
    """The external generator on single-pipelined (50 x 20), for the cross-check."""
    assert plan.wsload is not None
    argv = [str(plan.wsload), "-H", HOST, "-p", str(srv.port), "-u", WS_PATH, "-s", SYMS,
            "-c", "50", "-k", "20", "-w", str(plan.warmup), "-d", str(plan.duration),
            "-P", str(srv.pid), "-q"]  # fmt: skip
    out = run_json(argv, plan.warmup + plan.duration + 30, plan.pin)
    out["argv"] = "wsload " + shlex.join(argv[1:])
    return out


# -- a raw WebSocket client (handshake and frames by hand) -----------------------------------


def handshake_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {WS_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked_text(payload: bytes) -> bytes:
    """One masked client text frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return head + mask + body


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return bytes(buf)


def open_raw(port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the server with the WebSocket handshake done."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.sendall(handshake_request(port))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"handshake refused: {head[:200]!r}")
    return sock


def read_frame(sock: socket.socket) -> bytes:
    """The payload of the next (unfragmented, unmasked) server frame."""
    _, b1 = recv_exact(sock, 2)
    n = b1 & 127
    if n == 126:
        n = int.from_bytes(recv_exact(sock, 2), "big")
    elif n == 127:
        n = int.from_bytes(recv_exact(sock, 8), "big")
    return recv_exact(sock, n)


def all_symbols_reply(port: int) -> tuple[int, int, int]:
    """(symbols, bytes of the result array, bytes of the whole reply) of one all-symbols call."""
    with open_raw(port) as sock:
        sock.sendall(masked_text(b'{"id":"1","method":"ticker.price"}'))
        payload = read_frame(sock)
    start = payload.index(b'"result":') + len(b'"result":')
    end = payload.rindex(b',"rateLimits"')
    return len(json.loads(payload)["result"]), end - start, len(payload)


# -- throughput scenarios (1-4, generator ceiling, wsload) ------------------------------------


@dataclass(frozen=True)
class Ctx:
    """Everything a repetition needs."""

    plan: Plan
    gen: Gen
    servers: Servers
    body_bytes: int  # tickerd's all-symbols result array
    min_all_len: int  # shortest acceptable all-symbols reply


OPEN_LOOP = ["-s", SYMS, "-c", "50", "-r", "20000", "-S"]


def single_runs(ctx: Ctx, srv: Server, rep: Result, echo: bool) -> None:
    flag = (["-E"] if echo else []) + (["-b", str(ctx.plan.spin_us)] if ctx.plan.spin_us else [])
    pipelined = ctx.gen.run(srv, ["-s", SYMS, "-c", "50", "-k", "20", *flag], True)
    rep["single-pipelined"][srv.name] = pipelined
    if ctx.plan.wsload and not echo:
        rep["wsload"][srv.name] = wsload_run(ctx.plan, srv)
    unpipelined = ctx.gen.run(srv, ["-s", SYMS, "-c", "200", "-k", "1", *flag], True)
    rep["single-unpipelined"][srv.name] = unpipelined


def all_runs(ctx: Ctx, srv: Server, rep: Result, name: str) -> None:
    args = ["-m", "all", "-L", str(ctx.min_all_len), "-c", "50", "-k", "4"]
    rep["all-symbols"][name] = ctx.gen.run(srv, args, True)


def block_naive(ctx: Ctx, rep: Result) -> None:
    with ctx.servers.naive() as srv:
        single_runs(ctx, srv, rep, echo=False)
        all_runs(ctx, srv, rep, "naive")


def block_echo(ctx: Ctx, rep: Result) -> None:
    with ctx.servers.stack("echo") as srv:
        single_runs(ctx, srv, rep, echo=True)
        rep["open-loop-20k"]["echo"] = ctx.gen.run(srv, [*OPEN_LOOP, "-E"], False)


def block_constant(ctx: Ctx, rep: Result) -> None:
    with ctx.servers.stack("constant", ctx.body_bytes) as srv:
        all_runs(ctx, srv, rep, "constant")


def block_tickerd(ctx: Ctx, rep: Result) -> None:
    with ctx.servers.tickerd() as srv:
        single_runs(ctx, srv, rep, echo=False)
        rep["open-loop-20k"]["tickerd"] = ctx.gen.run(srv, OPEN_LOOP, False)
        all_runs(ctx, srv, rep, "tickerd")


def block_ticking(ctx: Ctx, rep: Result) -> None:
    with ctx.servers.tickerd(1000, name="tickerd-ticking") as srv:
        all_runs(ctx, srv, rep, "tickerd-ticking")


BLOCKS: list[Callable[[Ctx, Result], None]] = [
    block_naive,
    block_echo,
    block_tickerd,
    block_constant,
    block_ticking,
]


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


# -- in-process micro-benchmarks (7, 8) ------------------------------------------------------


@contextmanager
def on_cpu(cpu: int | None) -> Iterator[None]:
    """Run the body pinned to ``cpu`` (None: as is), then restore the affinity."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def rate(step: Callable[[list[Any]], None], batches: list[list[Any]], seconds: float) -> float:
    """Items per second through ``step``, batch after batch, for about ``seconds``."""
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for batch in batches:
            step(batch)
            n += len(batch)
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - t0)


def book_updates(symbols_file: Path, seconds: float, pin: bool) -> Result:
    from tickerd.book import PriceBook
    from tickerd.models import Tick
    from tickerd.symbols import SymbolUniverse

    universe = SymbolUniverse.load(symbols_file)
    names = [s.symbol for s in universe.trading()]
    batches = [
        [Tick(names[(b * 1000 + i) % len(names)], f"{100 + i % 997}.10", 1_700_000_000_000 + i)
         for i in range(1000)]
        for b in range(50)
    ]  # fmt: skip
    book = PriceBook(universe)
    plain: dict[str, Any] = {}

    def dict_loop(batch: list[Any]) -> None:
        for tick in batch:
            plain[tick.symbol] = tick

    with on_cpu(SERVER_CPU if pin else None):
        apply_rate = rate(book.apply, batches, seconds)
        dict_rate = rate(dict_loop, batches, seconds)
    return {
        "apply_ticks_per_s": round(apply_rate),
        "dict_ticks_per_s": round(dict_rate),
        "ratio_to_dict": round(apply_rate / dict_rate, 3),
    }


REPLAY_MODULES = ("tickerd.feeds.replay", "tickerd.feeds.binance_files")


def replay_parser() -> tuple[str, Callable[..., Iterable[Any]]] | None:
    """The replay's file parser, ``parse_rows(path, universe)``, wherever it lives yet."""
    for name in REPLAY_MODULES:
        with suppress(ImportError):
            if importlib.util.find_spec(name) is None:
                continue
            parser = getattr(importlib.import_module(name), "parse_rows", None)
            if callable(parser):
                return name, parser
    return None


def write_trades_file(directory: Path, rows: int) -> Path:
    """A Binance USDⓈ-M trades CSV (no header, ms times) of BTCUSDT with ``rows`` rows."""
    path = directory / "BTCUSDT-trades-2024-01-01.csv"
    t0 = 1_704_067_200_000
    lines = (
        f"{i + 1},{97000 + (i % 500) / 10:.1f},0.010,{(97000 + (i % 500) / 10) * 0.01:.4f},"
        f"{t0 + i // 10},{'true' if i % 3 else 'false'}\n"
        for i in range(rows)
    )
    path.write_text("".join(lines), encoding="ascii")
    return path


def replay_parse(directory: Path, rows: int) -> Result:
    """Rows per second through the replay parser, on a generated trades file."""
    found = replay_parser()
    if found is None:
        return {"status": "not measured: replay feed not built"}
    name, parse_rows = found
    path = write_trades_file(directory, rows)
    try:
        from tickerd.symbols import SymbolUniverse

        universe = SymbolUniverse.default()
        t0 = time.perf_counter()
        parsed = sum(1 for _ in parse_rows(path, universe))
        seconds = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - a parser still being built must not sink the run
        return {"status": f"not measured: {name}.parse_rows failed: {exc!r}"[:300]}
    if parsed != rows:
        return {"status": f"not measured: {name}.parse_rows gave {parsed} of {rows} rows"}
    return {"status": f"measured: {name}.parse_rows", "rows": rows,
            "rows_per_s": round(rows / seconds)}  # fmt: skip


# -- a repetition ----------------------------------------------------------------------------


def empty_rep() -> Result:
    keys = ["single-pipelined", "single-unpipelined", "open-loop-20k", "all-symbols", "wsload"]
    return {k: {} for k in keys}


def run_rep(ctx: Ctx, index: int) -> Result:
    rep = empty_rep()
    k = index % len(BLOCKS)
    order = BLOCKS[k:] + BLOCKS[:k]  # rotate, so no server always goes first
    rep["order"] = [b.__name__.removeprefix("block_") for b in order]
    for block in order:
        guarded(block.__name__, functools.partial(block, ctx, rep), rep)
    rep["idle-connections"] = guarded_result(lambda: idle_connections(ctx))
    rep["slow-reader"] = guarded_result(lambda: slow_reader(ctx))
    seconds = 0.3 if ctx.plan.quick else 1.0
    rep["book-updates"] = book_updates(ctx.servers.symbols_file, seconds, ctx.plan.pin)
    rows = 100_000 if ctx.plan.quick else 1_000_000
    with on_cpu(SERVER_CPU if ctx.plan.pin else None):
        rep["replay-parse"] = replay_parse(ctx.servers.workdir, rows)
    return rep


def guarded(name: str, body: Callable[[], None], rep: Result) -> None:
    """Run one server block; a server that fails to start is recorded, not fatal."""
    try:
        body()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        rep.setdefault("errors", []).append(f"{name}: {exc}")
        print(f"  ! {name}: {exc}", file=sys.stderr)


def guarded_result(body: Callable[[], Result]) -> Result:
    try:
        return body()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return {"failed": f"{type(exc).__name__}: {exc}"}


# -- metrics ---------------------------------------------------------------------------------


def ok(r: Result | None) -> bool:
    """Whether a generator result holds a verified measurement."""
    return r is not None and "failed" not in r and isinstance(r.get("rps"), (int, float))


def rps_ratio(scenario: str, a: str, b: str) -> Callable[[Result], float | None]:
    def value(rep: Result) -> float | None:
        ra, rb = rep.get(scenario, {}).get(a), rep.get(scenario, {}).get(b)
        if not (ok(ra) and ok(rb)) or not rb["rps"]:
            return None
        return float(ra["rps"]) / float(rb["rps"])

    return value


def per_cpu_ratio(scenario: str, a: str, b: str) -> Callable[[Result], float | None]:
    """The ratio of requests per server CPU-second: less sensitive to a starved core."""

    def value(rep: Result) -> float | None:
        ra, rb = rep.get(scenario, {}).get(a), rep.get(scenario, {}).get(b)
        if not (ok(ra) and ok(rb)) or not (ra.get("srv_cpu") and rb.get("srv_cpu") and rb["rps"]):
            return None
        return float(ra["rps"] / ra["srv_cpu"]) / float(rb["rps"] / rb["srv_cpu"])

    return value


def field_of(scenario: str, *path: str) -> Callable[[Result], float | None]:
    def value(rep: Result) -> float | None:
        node: Any = rep.get(scenario)
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and "failed" in node:
            return None
        return float(node) if isinstance(node, (int, float)) and node is not True else None

    return value


def lg_field(scenario: str, server: str, key: str) -> Callable[[Result], float | None]:
    def value(rep: Result) -> float | None:
        r = rep.get(scenario, {}).get(server)
        return float(r[key]) if ok(r) and isinstance(r.get(key), (int, float)) else None

    return value


def cpu_per_request(server: str) -> Callable[[Result], float | None]:
    """Server CPU µs per request at the offered rate: srv_cpu x 1e6 / rps."""

    def value(rep: Result) -> float | None:
        r = rep.get("open-loop-20k", {}).get(server)
        if not ok(r) or not r["rps"] or not isinstance(r.get("srv_cpu"), (int, float)):
            return None
        return float(r["srv_cpu"]) * 1e6 / float(r["rps"])

    return value


def idle_rss_mb(rep: Result) -> float | None:
    r = rep.get("idle-connections", {})
    want = r.get("requested")
    if "failed" in r or not want or r.get("opened") != want or r.get("server_connections") != want:
        return None  # not every connection was open on both sides: no valid figure
    return float(r["rss_kb"]) / 1024


def slow_growth_mb(rep: Result) -> float | None:
    r = rep.get("slow-reader", {})
    return None if "failed" in r else float(r["growth_kb"]) / 1024


def slow_cut_s(rep: Result) -> float | None:
    r = rep.get("slow-reader", {})
    cut = r.get("cut_after_s")
    return float(cut) if isinstance(cut, (int, float)) else (float("inf") if r else None)


def gen_ceiling(rep: Result) -> float | None:
    """The generator's own CPU against echo, if the server was saturated (srv_cpu >= 0.9)."""
    r = rep.get("single-pipelined", {}).get("echo")
    if not ok(r) or not isinstance(r.get("srv_cpu"), (int, float)):
        return None
    return float(r["gen_cpu"]) if r["srv_cpu"] >= SATURATED else float("inf")


@dataclass(frozen=True)
class Metric:
    """One headline row: a value per repetition, its median against a target."""

    scenario: str
    label: str
    value: Callable[[Result], float | None]
    fmt: str  # "x" ratio, "us", "mb", "rate", "cpu", "s"
    target: tuple[str, float] | None = None  # (">=" | "<=" | "<", bound)
    saturation: tuple[str, tuple[str, ...]] | None = None  # scenario, servers


def metrics() -> list[Metric]:
    s1, s2, s3, s4 = "single-pipelined", "single-unpipelined", "open-loop-20k", "all-symbols"
    trio = ("naive", "echo", "tickerd")
    four = ("naive", "constant", "tickerd", "tickerd-ticking")
    return [
        Metric(s1, "tickerd / naive", rps_ratio(s1, "tickerd", "naive"), "x", (">=", 7.0), (s1, trio)),
        Metric(s1, "tickerd / echo", rps_ratio(s1, "tickerd", "echo"), "x", None, (s1, trio)),
        Metric(s1, "tickerd / naive per server CPU-s", per_cpu_ratio(s1, "tickerd", "naive"), "x"),
        Metric(s1, "tickerd req/s", lg_field(s1, "tickerd", "rps"), "rate"),
        Metric(s2, "tickerd / naive", rps_ratio(s2, "tickerd", "naive"), "x", (">=", 2.5), (s2, trio)),
        Metric(s2, "tickerd / echo", rps_ratio(s2, "tickerd", "echo"), "x", None, (s2, trio)),
        Metric(s2, "tickerd / naive per server CPU-s", per_cpu_ratio(s2, "tickerd", "naive"), "x"),
        Metric(s3, "p50 latency", lg_field(s3, "tickerd", "p50_us"), "us"),
        Metric(s3, "p99 latency", lg_field(s3, "tickerd", "p99_us"), "us", ("<=", 150)),
        Metric(s3, "p99.9 latency", lg_field(s3, "tickerd", "p999_us"), "us"),
        Metric(s3, "server CPU per request", cpu_per_request("tickerd"), "us", ("<=", 20)),
        Metric(s3, "echo p99 (the stack's floor)", lg_field(s3, "echo", "p99_us"), "us"),
        Metric(s3, "echo CPU per request (the stack's floor)", cpu_per_request("echo"), "us"),
        Metric(s4, "tickerd / naive", rps_ratio(s4, "tickerd", "naive"), "x", (">=", 25), (s4, four)),
        Metric(s4, "tickerd / constant", rps_ratio(s4, "tickerd", "constant"), "x", (">=", 0.9), (s4, four)),
        Metric(s4, "ticking / static", rps_ratio(s4, "tickerd-ticking", "tickerd"), "x", (">=", 0.8), (s4, four)),
        Metric(s4, "tickerd / naive per server CPU-s", per_cpu_ratio(s4, "tickerd", "naive"), "x"),
        Metric("idle-connections", "tickerd RSS", idle_rss_mb, "mb", ("<=", 300)),
        Metric("slow-reader", "RSS growth", slow_growth_mb, "mb", ("<=", 50)),
        Metric("slow-reader", "cut off after", slow_cut_s, "s", ("<=", 10)),
        Metric("book-updates", "ticks/s applied", field_of("book-updates", "apply_ticks_per_s"), "rate", (">=", 1e6)),
        Metric("book-updates", "apply / plain dict loop", field_of("book-updates", "ratio_to_dict"), "x"),
        Metric("replay-parse", "rows/s parsed", field_of("replay-parse", "rows_per_s"), "rate", (">=", 1e6)),
        Metric("generator-ceiling", "echo req/s", lg_field(s1, "echo", "rps"), "rate"),
        Metric("generator-ceiling", "gen_cpu (server saturated)", gen_ceiling, "cpu", ("<", 1.0), (s1, ("echo",))),
    ]  # fmt: skip


def passes(value: float, target: tuple[str, float]) -> bool:
    op, bound = target
    return {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]


def fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    if value == float("inf"):
        return "never" if kind == "s" else "unsaturated"
    return {
        "x": f"{value:.3f}×" if value < 2 else f"{value:.2f}×",
        "us": f"{value:,.0f} µs" if value >= 100 else f"{value:.1f} µs",
        "mb": f"{value:.1f} MB",
        "rate": f"{value:,.0f}/s",
        "cpu": f"{value:.2f}",
        "s": f"{value:.2f} s",
    }[kind]


def min_srv_cpu(reps: list[Result], sat: tuple[str, tuple[str, ...]] | None) -> str:
    if sat is None:
        return ""
    scenario, names = sat
    cpus = [
        float(r["srv_cpu"])
        for rep in reps
        for n in names
        if ok(r := rep.get(scenario, {}).get(n)) and isinstance(r.get("srv_cpu"), (int, float))
    ]
    return f"{min(cpus):.2f}" if cpus else "n/a"


def not_measured(reps: list[Result], scenario: str) -> bool:
    """Whether the scenario says it cannot be measured yet (a feature not built)."""
    return all(
        str(rep.get(scenario, {}).get("status", "")).startswith("not measured") for rep in reps
    )


def summarise(reps: list[Result]) -> list[Result]:
    rows = []
    for m in metrics():
        values = [m.value(rep) for rep in reps]
        got = [v for v in values if v is not None]
        median = statistics.median(got) if got else None
        if m.target is None:
            verdict = "info"
        elif median is None and not_measured(reps, m.scenario):
            verdict = "not measured"
        elif median is None:
            verdict = "ERR"
        else:
            verdict = "PASS" if passes(median, m.target) else "MISS"
        rows.append({
            "scenario": m.scenario, "metric": m.label, "values": values, "median": median,
            "min": min(got) if got else None, "max": max(got) if got else None,
            "target": f"{m.target[0]} {fmt(m.target[1], m.fmt)}" if m.target else "",
            "verdict": verdict, "fmt": m.fmt, "min_srv_cpu": min_srv_cpu(reps, m.saturation),
        })  # fmt: skip
    return rows


def wsload_check(reps: list[Result]) -> list[Result]:
    """Per repetition: tickerd/naive by wsload and by loadgen, and how far apart they are."""
    out = []
    for i, rep in enumerate(reps):
        ours = rps_ratio("single-pipelined", "tickerd", "naive")(rep)
        theirs = rps_ratio("wsload", "tickerd", "naive")(rep)
        gap = theirs / ours - 1 if ours and theirs else None
        out.append({"rep": i + 1, "loadgen": ours, "wsload": theirs, "gap": gap})
    return out


# -- the report ------------------------------------------------------------------------------


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> Result:
    model = "unknown"
    with suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        model = next(
            (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model
        )
    gcc = subprocess.run(
        ["gcc", "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gcc": gcc.stdout.splitlines()[0] if gcc.stdout else "unknown",
        "packages": {p: package_version(p) for p in ("tickerd", "picows", "uvloop", "orjson", "websockets")},
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }  # fmt: skip


# What is known about a target that misses, printed under the headline when it does.
MISS_NOTES = {
    ("open-loop-20k", "server CPU per request"): (
        "At 20 000 req/s nothing is pipelined: every request costs the server a wake-up, a "
        "read and a write. The echo server on the same transport (no protocol at all) "
        "already needs more CPU per request than the target allows — see the echo row — so "
        "what remains is the stack, not tickerd's protocol work (about 2 µs a request, "
        "py-spy: read, epoll and write take ~75 % of the server's time, Python under 20 %). "
        "Closing it needs a cheaper wake-up path than uvloop's per-event callbacks."
    ),
}


def md_misses(rows: list[Result]) -> list[str]:
    out = []
    for r in rows:
        note = MISS_NOTES.get((r["scenario"], r["metric"]))
        if r["verdict"] == "MISS" and note:
            out += ["", f"**{r['scenario']}, {r['metric']} (MISS):** {note}"]
    return out


def md_headline(rows: list[Result]) -> list[str]:
    out = [
        "| scenario | metric | per rep | median | spread (min–max) | target | result | min srv_cpu |",
        "|---|---|---|---:|---|---|---|---:|",
    ]
    for r in rows:
        k = r["fmt"]
        per_rep = " / ".join(fmt(v, k) for v in r["values"])
        spread = f"{fmt(r['min'], k)} – {fmt(r['max'], k)}" if r["min"] is not None else "n/a"
        out.append(
            f"| {r['scenario']} | {r['metric']} | {per_rep} | **{fmt(r['median'], k)}** | "
            f"{spread} | {r['target']} | {r['verdict']} | {r['min_srv_cpu']} |"
        )
    return out


def lg_row(rep_no: int, server: str, r: Result | None, saturating: bool) -> str:
    if not r:
        return f"| {rep_no} | {server} | not run | | | | | | | |"
    if not ok(r):
        return f"| {rep_no} | {server} | failed: {r.get('failed', '?')} | | | | | | | |"
    rerun = r.get("rerun_after")
    note = f"re-run (first: srv_cpu {rerun['srv_cpu']})" if rerun else ""
    if r.get("failed"):
        note += f" {r['failed']}: {r.get('errors')} lost {r.get('lost')}"
    sat = " †" if saturating and (r.get("srv_cpu") or 0) < SATURATED else ""
    return (
        f"| {rep_no} | {server} | {r['rps']:,.0f} | {r.get('srv_cpu')}{sat} | {r['gen_cpu']} | "
        f"{r.get('cpu0_other', '')} | {r['p50_us']:,} | {r['p99_us']:,} | "
        f"{r['syscalls_per_resp']} | {note} |"
    )


def md_loadgen(reps: list[Result], scenario: str, servers: list[str]) -> list[str]:
    out = [
        "| rep | server | req/s | srv_cpu | gen_cpu | cpu0 other | p50 µs | p99 µs | syscalls/resp | note |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, rep in enumerate(reps, 1):
        saturating = scenario != "open-loop-20k"  # an offered rate is meant to leave headroom
        out += [lg_row(i, s, rep.get(scenario, {}).get(s), saturating) for s in servers]
    return out


def md_records(reps: list[Result], scenario: str, keys: list[str]) -> list[str]:
    out = ["| rep | " + " | ".join(keys) + " |", "|---:|" + "---|" * len(keys)]
    for i, rep in enumerate(reps, 1):
        r = rep.get(scenario, {})
        if "failed" in r:
            out.append(f"| {i} | failed: {r['failed']} |" + " |" * (len(keys) - 1))
        else:
            out.append(f"| {i} | " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    return out


def md_wsload(reps: list[Result]) -> list[str]:
    out = [
        "| rep | tickerd/naive by loadgen | by wsload | gap | wsload naive req/s (srv_cpu) "
        + "| wsload tickerd req/s (srv_cpu) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row, rep in zip(wsload_check(reps), reps, strict=True):
        w = rep.get("wsload", {})
        rates = [
            f"{w[s]['rps']:,.0f} ({w[s].get('srv_cpu')})" if ok(w.get(s)) else "failed"
            for s in ("naive", "tickerd")
        ]
        gap = f"{row['gap']:+.1%}" if row["gap"] is not None else "n/a"
        out.append(
            f"| {row['rep']} | {fmt(row['loadgen'], 'x')} | {fmt(row['wsload'], 'x')} | {gap} | "
            f"{rates[0]} | {rates[1]} |"
        )
    return [*out, "", wsload_verdict(reps)]


def wsload_verdict(reps: list[Result]) -> str:
    """The medians of both generators' tickerd/naive and whether they agree within 15 %."""
    rows = wsload_check(reps)
    ours = [r["loadgen"] for r in rows if r["loadgen"] is not None]
    theirs = [r["wsload"] for r in rows if r["wsload"] is not None]
    if not ours or not theirs:
        return "No complete pair of measurements: no verdict."
    a, b = statistics.median(ours), statistics.median(theirs)
    agree = "agree" if abs(b / a - 1) <= 0.15 else "DO NOT agree"
    return (
        f"Medians: loadgen {a:.2f}×, wsload {b:.2f}× ({b / a - 1:+.1%}): they {agree} within 15 %."
    )


DETAILS: list[tuple[str, str, list[str]]] = [
    ("single-pipelined", "loadgen", ["naive", "echo", "tickerd"]),
    ("single-unpipelined", "loadgen", ["naive", "echo", "tickerd"]),
    ("open-loop-20k", "loadgen", ["tickerd", "echo"]),
    ("all-symbols", "loadgen", ["naive", "constant", "tickerd", "tickerd-ticking"]),
    ("idle-connections", "records",
     ["requested", "opened", "handshake_failures", "server_connections", "open_s", "rss_before_kb", "rss_kb", "per_conn_kb"]),
    ("slow-reader", "records",
     ["requests_sent", "cut_off", "cut_after_s", "how", "rss_before_kb", "rss_peak_kb",
      "peak_from", "growth_kb", "rss_after_kb", "server_logged_cut"]),
    ("book-updates", "records", ["apply_ticks_per_s", "dict_ticks_per_s", "ratio_to_dict"]),
    ("replay-parse", "records", ["status", "rows", "rows_per_s"]),
]  # fmt: skip


def md_details(reps: list[Result], ctx_info: Result) -> list[str]:
    out: list[str] = []
    for scenario, kind, cols in DETAILS:
        out += ["", f"### {scenario}: {SCENARIOS[scenario]}", ""]
        if scenario == "open-loop-20k":
            out += [md_open_loop(reps), ""]
        if scenario == "all-symbols":
            size = ctx_info["body_bytes"]
            symbols = ctx_info["symbols"]
            out += [f"Result array: {size:,} bytes ({symbols} symbols); the constant server "
                    + "sends a body of the same size.", ""]  # fmt: skip
        if kind == "loadgen":
            out += md_loadgen(reps, scenario, cols)
        else:
            out += md_records(reps, scenario, cols)
    out += ["", f"### generator-ceiling: {SCENARIOS['generator-ceiling']}", "", GEN_NOTE]
    return out


GEN_NOTE = (
    "The echo rows of single-pipelined above: loadgen's own CPU (gen_cpu) stays below one "
    "core while the server's core is saturated, so the generator is not the limit."
)
READING_NOTE = (
    "Throughput targets are ratios measured within one repetition (servers interleaved, "
    "order rotated per repetition); absolute req/s are for information. Latency, CPU per "
    "request, RSS and ticks/s targets are absolute by nature. `srv_cpu` is the server "
    "process's share of its core during the measured window; `cpu0 other` is the share of "
    "CPU 0 used by other processes (noise) during the run; † marks a run meant to saturate the "
    "server that did not (srv_cpu < 0.9) even after one re-run."
)


def md_open_loop(reps: list[Result]) -> str:
    parts = []
    for i, rep in enumerate(reps, 1):
        r = rep.get("open-loop-20k", {}).get("tickerd")
        if ok(r):
            assert r is not None
            parts.append(
                f"rep {i}: {r['rps']:,.0f} req/s, p50 {r['p50_us']} µs, p99 {r['p99_us']} µs, "
                f"p99.9 {r['p999_us']} µs, max {r['max_us']} µs, unsent {r.get('unsent')}"
            )
    return "; ".join(parts) or "no data"


def render_md(doc: Result) -> str:
    m, p = doc["machine"], doc["plan"]
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    lines = [
        "# tickerd benchmark results",
        "",
        "Regenerated by `benchmarks/run.py`; do not edit by hand.",
        "",
        f"- Command: `{doc['command']}`",
        f"- Started: {doc['started']}; took {doc['elapsed_s']:.0f} s; {p['reps']} rep(s), "
        + f"warm-up {p['warmup']} s + {p['duration']} s per measurement",
        f"- Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}, "
        + f"Python {m['python']}, {m['gcc']}",
        f"- Packages: {pk}",
        "- Generator: loadgen (benchmarks/loadgen.c, gcc -O2), UUID-shaped request ids; "
        + (
            f"single-symbol closed-loop runs with `-b {p['spin_us']}` (polls before sleeping)"
            if p["spin_us"]
            else "sleeps in epoll between events, like real clients and wsload"
        ),
        f"- Pinning: {doc['pinning']}; load average at start {' '.join(m['loadavg_start'])}, "
        + f"at end {' '.join(doc['loadavg_end'])}",
        "",
        READING_NOTE,
        "",
        "## Headline",
        "",
        *md_headline(doc["summary"]),
        *md_misses(doc["summary"]),
        "",
        f"replay-parse: {doc['reps'][0].get('replay-parse', {}).get('status', 'n/a')}.",
    ]
    if doc["plan"].get("wsload"):
        lines += ["", "## Cross-check with wsload (single-pipelined)", "", *md_wsload(doc["reps"])]
    lines += ["", "## Details", *md_details(doc["reps"], doc["inputs"])]
    errors = [e for rep in doc["reps"] for e in rep.get("errors", [])]
    if errors:
        lines += ["", "## Errors", "", *[f"- {e}" for e in errors]]
    return "\n".join(lines) + "\n"


# -- main ------------------------------------------------------------------------------------


class OverBudget(BaseException):
    """The whole run took longer than its bound. A BaseException, like KeyboardInterrupt,
    so that no handler for a failed measurement swallows it; ``finally`` blocks still
    stop every server on the way out."""


def on_alarm(signum: int, frame: FrameType | None) -> None:
    raise OverBudget("the benchmark run exceeded its time budget")


def command_line(argv: list[str]) -> str:
    script = Path(__file__).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(["python", str(shown), *argv])


def prepare(plan: Plan, workdir: Path) -> Ctx:
    """Build loadgen, write the symbols file, learn tickerd's all-symbols reply size."""
    binary = build_loadgen()
    symbols_file = write_symbols_file(workdir, ALL_SYMBOLS)
    servers = Servers(workdir, symbols_file, ALL_SYMBOLS, plan.pin, tickerd_has_flag("--rest-port"))
    with servers.tickerd(name="tickerd-probe") as srv:
        count, body, _ = all_symbols_reply(srv.port)
    if count < 500:
        raise RuntimeError(f"tickerd serves {count} symbols from {symbols_file}; need >= 500")
    return Ctx(plan, Gen(binary, plan), servers, body, min_all_len=count * 40)


def measure(plan: Plan) -> tuple[list[Result], Ctx]:
    with tempfile.TemporaryDirectory(prefix="tickerd-bench-") as tmp:
        ctx = prepare(plan, Path(tmp))
        reps = []
        for i in range(plan.reps):
            print(f"repetition {i + 1}/{plan.reps}", file=sys.stderr, flush=True)
            reps.append(run_rep(ctx, i))
        return reps, ctx


def write_outputs(plan: Plan, doc: Result) -> None:
    plan.out.parent.mkdir(parents=True, exist_ok=True)
    plan.out.write_text(render_md(doc), encoding="utf-8")
    plan.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str) + "\n")


def failures(reps: list[Result]) -> list[str]:
    """Every measurement that could not be made, or whose replies failed verification."""
    bad = [e for rep in reps for e in rep.get("errors", [])]
    for i, rep in enumerate(reps, 1):
        for scenario in ("single-pipelined", "single-unpipelined", "open-loop-20k", "all-symbols"):
            bad += [f"rep {i} {scenario} {s}: {r['failed']}"
                    for s, r in rep[scenario].items() if "failed" in r]  # fmt: skip
        bad += [f"rep {i} {s}: {rep[s]['failed']}"
                for s in ("idle-connections", "slow-reader") if "failed" in rep.get(s, {})]  # fmt: skip
    return bad


def build_doc(plan: Plan, args: list[str], run: tuple[list[Result], Ctx], info: Result) -> Result:
    """Everything the report shows, and the raw results, as one JSON-able document."""
    reps, ctx = run
    pinning = f"servers on CPU {SERVER_CPU}, generators on CPU {GEN_CPU} (sched_setaffinity)"
    doc: Result = {
        "command": command_line(args),
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in vars(plan).items()},
        "machine": info,
        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
        "pinning": f"{pinning if plan.pin else 'none'}; niceness {os.nice(0)}",
        "inputs": {"symbols": ALL_SYMBOLS, "body_bytes": ctx.body_bytes,
                   "min_all_len": ctx.min_all_len},
        "scenarios": SCENARIOS,
        "summary": summarise(reps),
        "reps": reps,
    }  # fmt: skip
    if plan.wsload:
        doc["wsload_check"] = wsload_check(reps)
    return doc


def set_priority(plan: Plan) -> bool:
    """Apply --nice (inherited by every child) and the harness's own CPU; False if refused."""
    raise_nofile()
    if plan.pin:
        os.sched_setaffinity(0, {GEN_CPU})  # the harness's own clients share the generator CPU
    if plan.nice:
        try:
            os.nice(plan.nice)
        except PermissionError:
            print(f"--nice {plan.nice}: not permitted (needs root)", file=sys.stderr)
            return False
    return True


def bounded_measure(plan: Plan, budget_s: float) -> tuple[list[Result], Ctx]:
    """:func:`measure` under an alarm: past the budget, OverBudget unwinds every server."""
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(budget_s))
    try:
        return measure(plan)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def rerender(json_path: Path, out: Path) -> int:
    """Write the Markdown report of an earlier run's JSON again (no measuring)."""
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    doc["summary"] = summarise(doc["reps"])  # targets and verdicts as this version has them
    out.write_text(render_md(doc), encoding="utf-8")
    print(f"wrote {out} from {json_path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    plan = parse_args(args)
    if plan.render is not None:
        return rerender(plan.render, plan.out)
    budget = plan.estimate_s()
    print(f"tickerd benchmarks: about {budget / 60:.1f} min (bounded at "
          f"{budget * 2 + 60:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    if not set_priority(plan):
        return 2
    t0, started, info = time.monotonic(), time.strftime("%Y-%m-%d %H:%M:%S %Z"), machine()
    doc = build_doc(plan, args, bounded_measure(plan, budget * 2 + 60), info)
    doc.update(started=started, elapsed_s=time.monotonic() - t0)
    write_outputs(plan, doc)
    print(f"wrote {plan.out} and {plan.out.with_suffix('.json')}", file=sys.stderr)
    bad = failures(doc["reps"])
    for line in bad:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
