"""The harness's constants, its scenarios and the plan of one invocation (the flags)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
ROOT = HERE.parent
BUILD = HERE / ".build"
DEFAULT_OUT = HERE / "RESULTS.md"
QUICK_OUT = BUILD / "quick" / "RESULTS.md"  # smoke figures never overwrite the committed ones
SUBSET_OUT = BUILD / "servers" / "RESULTS.md"  # nor do those of a --servers subset
LOADGEN_SRC = HERE / "loadgen.c"
HOST = "127.0.0.1"
WS_PATH = "/ws-fapi/v1"
SERVER_CPU, GEN_CPU = 0, 1
ALL_SYMBOLS = 512
NOFILE = 20_000
SATURATED = 0.9  # srv_cpu below this, in a scenario meant to saturate: measure again once
GEN_SPINNING = 0.99  # gen_cpu below this in an open-loop run (-S spins): measure again once
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
    "replay-parse": "a replay of several symbols (tick sizes 0.1 to 0.000001), parsed and merged",
    "generator-ceiling": "loadgen -E against the echo server (50 x 20)",
    "mirror-recording": "callgrind: MirrorState.on_event per aggTrade, with / without a TradeRecorder",
    "instructions": "callgrind: instructions per request (benchmarks/instructions.py)",
    "cluster": "one worker on Redis against one process; two workers (benchmarks/cluster.py)",
    "streams-fanout": "market-stream subscribers while the book takes 20 000 trades/s, "
    "against a naive websockets fan-out (benchmarks/streams_fanout.py)",
}
# The servers (the blocks of loadgen.py, in the order of a first repetition) and the
# generator runs each makes; --servers picks some of them.
SERVER_RUNS: dict[str, int] = {
    "naive": 3, "echo": 3, "tickerd": 4, "uws": 2, "constant": 1, "node-ws": 2,
    "tickerd-ticking": 1, "tickerd-ops-off": 1,
}  # fmt: skip
PEER_SERVERS = ("uws", "node-ws")
# Instruction counts do not vary from one repetition to the next: counted once, in the first.
COUNTED_ONCE = ("mirror-recording", "instructions")
RECORDING_EVENTS = 20_000  # aggTrade events per phase of mirror-recording (--quick: 4000)

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
    servers: tuple[str, ...] = tuple(SERVER_RUNS)

    @property
    def every_server(self) -> bool:
        """Whether this is a whole run (no --servers subset): the server-less scenarios too."""
        return set(self.servers) == set(SERVER_RUNS)

    def estimate_s(self) -> float:
        """A generous guess of the whole run's wall time."""
        runs = sum(SERVER_RUNS[s] for s in self.servers)
        runs += len({"naive", "tickerd"} & set(self.servers)) if self.wsload else 0
        per_run = self.warmup + self.duration + 1.5 + (0 if self.quick else QUIET_WAIT_S / 2)
        rep = runs * per_run + len(self.servers) * 1.5
        install = 60 if set(PEER_SERVERS) & set(self.servers) else 0  # npm, first run only
        if not self.every_server:
            return 20 + install + self.reps * rep * (1.3 if self.rerun else 1.0)
        cluster = 0 if self.quick else 6 * (self.warmup + self.duration + 4) + 20
        fanout = 4 * (max(self.warmup, 2.0) + self.duration + 3) + 20  # streams_fanout.py
        rep += self.idle_conns / 1000 + 12 + cluster + fanout
        counted = (
            40 if self.quick else 60 + 1200
        )  # mirror-recording; instructions.py (full: 4 servers)
        return 20 + install + counted + self.reps * rep * (1.3 if self.rerun else 1.0)


def parse_args(argv: list[str], description: str | None = None) -> Plan:
    """The plan of one invocation from its command-line flags (exit 2 on bad usage)."""
    p = argparse.ArgumentParser(description=description)
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
        f"--quick: {QUICK_OUT.relative_to(HERE.parent)}; a --servers subset: "
        f"{SUBSET_OUT.relative_to(HERE.parent)}); the JSON goes beside it",
    )
    p.add_argument("--wsload", type=Path, default=None, help="external generator to cross-check")
    p.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="only re-write --out from an earlier run's JSON; measure nothing")  # fmt: skip
    p.add_argument("--spin", type=int, default=SPIN_US, metavar="USEC",
                   help=f"loadgen -b for the single-symbol closed-loop runs (default {SPIN_US}; "
                        "0: let the generator sleep)")  # fmt: skip
    p.add_argument("--servers", default=",".join(SERVER_RUNS), metavar="LIST",
                   help="comma-separated servers to measure (default all: "
                        f"{','.join(SERVER_RUNS)}); a subset skips the scenarios without a "
                        "server block (idle-connections, slow-reader, book-updates, "
                        "replay-parse, cluster, the callgrind counts)")  # fmt: skip
    p.add_argument("--nice", type=int, default=0,
                   help="niceness of the harness and its children (e.g. -10 on a box shared "
                        "with other work, as root; default 0)")  # fmt: skip
    a = p.parse_args(argv)
    q = bool(a.quick)
    servers = tuple(dict.fromkeys(x.strip() for x in a.servers.split(",") if x.strip()))
    unknown = [x for x in servers if x not in SERVER_RUNS]
    whole = set(servers) == set(SERVER_RUNS)
    if unknown or not servers:
        p.error(f"--servers: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(SERVER_RUNS)}")  # fmt: skip
    plan = Plan(
        reps=a.reps if a.reps is not None else (1 if q else 3),
        duration=a.duration if a.duration is not None else (1.0 if q else 3.0),
        warmup=a.warmup if a.warmup is not None else (0.5 if q else 1.0),
        idle_conns=a.idle_conns if a.idle_conns is not None else (1000 if q else 10_000),
        slow_requests=1500 if q else 6000,
        rerun=not q,
        quick=q,
        out=(a.out or (QUICK_OUT if q else DEFAULT_OUT if whole else SUBSET_OUT)).resolve(),
        wsload=a.wsload.resolve() if a.wsload else None,
        pin=not a.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"),
        nice=a.nice,
        spin_us=a.spin,
        render=a.render,
        servers=servers,
    )
    if plan.reps < 1 or plan.duration <= 0 or plan.warmup < 0 or plan.duration + plan.warmup > 60:
        p.error("need reps >= 1, duration > 0, warm-up >= 0 and duration + warm-up <= 60")
    if plan.wsload is not None and not os.access(plan.wsload, os.X_OK):
        p.error(f"--wsload {plan.wsload}: not an executable file")
    return plan
