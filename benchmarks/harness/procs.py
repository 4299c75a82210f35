"""Building loadgen, the inputs, /proc readings and the server subprocesses."""

from __future__ import annotations

import copy
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Self

from .config import (
    BUILD,
    HERE,
    HOST,
    LOADGEN_SRC,
    NOFILE,
    READY_TIMEOUT_S,
    ROOT,
    SERVER_CPU,
    STOP_TIMEOUT_S,
    Result,
)

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
    """Whether ``tickerd serve`` knows ``flag``."""
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
    """Raise RLIMIT_NOFILE to :data:`NOFILE` (or the hard limit)."""
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
    env: dict[str, str] = field(default_factory=dict)

    def __enter__(self) -> Self:
        self.log = self.workdir / f"{self.name}.{time.monotonic_ns()}.log"
        with open(self.log, "wb") as sink:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
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
        """The server's process id."""
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
        """The last ``lines`` of the server's log."""
        with suppress(OSError):
            return "\n".join(self.log.read_text("utf-8", "replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`."""
        if self.proc is not None:
            stop_process(self.proc)


def stop_process(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT_S) -> None:
    """End a process this run started: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


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
    peers: dict[str, Result] = field(default_factory=dict)  # harness.peers.prepare_peers()

    def naive(self) -> Server:
        """The naive server (websockets + stdlib json)."""
        argv = [sys.executable, str(HERE / "naive_server.py"), "--host", HOST, "--port", "0",
                "--weight-limit", "1000000000", "--symbols", str(self.symbols)]  # fmt: skip
        return Server("naive", argv, READY_LINE, self.workdir, self.pin)

    def stack(self, kind: str, body_bytes: int = 0) -> Server:
        """An echo or constant server on tickerd's transport."""
        argv = [sys.executable, str(HERE / "stack_servers.py"), kind, "--port", "0"]
        if kind == "constant":
            argv += ["--body-bytes", str(body_bytes)]
        return Server(kind, argv, READY_LINE, self.workdir, self.pin)

    def tickerd(self, tick_rate: int = 0, *extra: str, name: str = "tickerd") -> Server:
        """``tickerd serve`` on the run's symbols file, its ops surface on (a free port);
        ``extra`` flags come last (``--ops-port -1`` turns it off)."""
        argv = [sys.executable, "-m", "tickerd", "serve", "--host", HOST, "--port", "0",
                "--weight-limit", "1000000000", "--connect-limit", "0",
                "--tick-rate", str(tick_rate), "--symbols-file", str(self.symbols_file),
                "--ops-port", "0",
                *(["--rest-port", "-1"] if self.rest_off else []), *extra]  # fmt: skip
        return Server(name, argv, TICKERD_READY, self.workdir, self.pin)

    def peer(self, name: str) -> Server:
        """A Node peer (benchmarks/peers/) doing the naive server's work; RuntimeError if
        it could not be installed or loaded (its status says why)."""
        peer = self.peers.get(name, {"status": "not measured: not prepared"})
        if peer["status"] != "ready":
            raise RuntimeError(peer["status"])
        argv = [*peer["argv"], "--host", HOST, "--port", "0",
                "--weight-limit", "1000000000", "--symbols", str(self.symbols)]  # fmt: skip
        return Server(name, argv, READY_LINE, self.workdir, self.pin, env=peer["env"])
