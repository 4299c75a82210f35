#!/usr/bin/env python3
"""tickerd's benchmark harness: one command, every scenario, ratios within one run.

Usage, from the repository root with the dev venv's Python::

    python benchmarks/run.py                        # 3 reps, 1 s warm-up + 3 s per measurement
    python benchmarks/run.py --quick                # smoke run, a minute or two (see below)
    python benchmarks/run.py --reps 5 --duration 5 --wsload /path/to/wsload
    python benchmarks/run.py --servers naive,tickerd,uws,node-ws   # only those servers' blocks
    python benchmarks/run.py --render benchmarks/RESULTS.json   # re-write the .md, no measuring

It compiles ``benchmarks/loadgen.c`` with the system gcc (-O2, into ``benchmarks/.build/``)
when stale, writes a 512-symbol exchangeInfo file into a temporary directory, then for each
repetition starts every server in turn (the order rotates per repetition) pinned to CPU 0,
drives it with loadgen pinned to CPU 1 over loopback, and computes every ratio within that
repetition. The report gives the per-repetition values, their median and spread (min-max).

Servers: ``naive`` (benchmarks/naive_server.py: websockets + stdlib json), ``echo`` and
``constant`` (benchmarks/stack_servers.py: tickerd's own transport without the protocol),
``tickerd`` (``tickerd serve --tick-rate 0``), ``tickerd-ticking`` (``--tick-rate 1000``),
and two peers doing the naive server's work in Node (benchmarks/peers/, single-symbol
scenarios only): ``uws`` (uWebSockets.js) and ``node-ws`` (ws). The harness installs the
versions benchmarks/peers/package.json pins with ``npm install --prefix
benchmarks/.build/peers`` (skipped when they are there already) and, on a glibc older than
2.38, makes the uWebSockets.js binary load with a compiled shim (``harness/peers.py``); the
report states exactly what ran. A peer that cannot be installed or started is reported as
"not measured: <why>", never as a failure of the run. single-pipelined and
single-unpipelined give tickerd / uWebSockets.js (target >= 1.3x each) and tickerd / Node ws
(for information) beside the other ratios. ``--servers naive,tickerd,uws`` measures only
those servers' blocks and skips the scenarios without a server block (cluster among them).

Scenarios: single-pipelined (50 conns x 20 in flight), single-unpipelined (200 x 1),
open-loop-20k (20 000 req/s offered, latency from the intended send time), all-symbols
(512 symbols, 50 x 4), idle-connections (10 000 open WebSockets, tickerd's RSS),
slow-reader (all-symbols requests, never read: RSS growth and the cut-off), book-updates
(PriceBook.apply, batches of 1000), replay-parse, generator-ceiling (loadgen against
the echo server), cluster (``benchmarks/cluster.py``: one worker on a redis-server of its
own against one process, and two workers; not in ``--quick``, and "not measured:
redis-server missing" without it), and two counted by valgrind's callgrind, once per run:
mirror-recording (instructions per aggTrade through the mirror's state with and without a
TradeRecorder) and instructions (``benchmarks/instructions.py``: instructions per request
of tickerd, of the echo server and of tickerd after a fault was armed and cleared);
without valgrind they say "not measured: valgrind missing". With
``--wsload PATH`` an independent generator re-measures single-pipelined against naive and
tickerd. The parts live in ``benchmarks/harness/``.

The generator sleeps in epoll between events, as real clients and the independent wsload
do; ``--spin USEC`` makes it poll that long first (loadgen ``-b``), which spares a server
the generator's loopback wake-ups (the "loopback caveat" in loadgen.c) and so flatters
the naive server's one-write-per-reply most.

Noise control: before each run the harness waits (at most 3 s) for a lull in other work on
CPU 0, records that other work's share of CPU 0 during the run (``cpu0 other``), and
measures again, once, a run meant to saturate the server whose ``srv_cpu`` stayed below 0.9.
``--quick`` (the test suite's smoke run): 1 repetition, 0.5 s warm-up + 1 s, 1000 idle
connections, a smaller slow-reader volume and replay folder, fewer events and requests
under callgrind, no waiting and no re-runs.

replay-parse reads a folder of trades files of four symbols on different grids (BTCUSDT,
ETHUSDT, DOGEUSDT, 1000BONKUSDT) the way ``--replay-path`` does
(``tickerd.feeds.replay_source.ReplaySource``: each symbol parsed on its own grid, all merged
in time order) and reports the rows per second.

Output: RESULTS.md (``--out``) and the raw results as JSON beside it (same name, ``.json``).
The default ``--out`` is the committed ``benchmarks/RESULTS.md`` for a full run and
``benchmarks/.build/quick/RESULTS.md`` (not committed) for ``--quick`` and
``benchmarks/.build/servers/RESULTS.md`` for a ``--servers`` subset, so a smoke or partial
run never replaces the published figures.
Throughput targets are ratios within a repetition; latency, CPU per request, RSS and
ticks/s targets are absolute by nature. Exit status: 0 when every measurement was made
(whether or not it met its target), 1 when one could not be made (a server that did not
start, a reply that failed verification, a timeout), 2 on bad usage.
Every subprocess has a timeout, servers are stopped in ``finally`` blocks, and the whole run
is bounded by an alarm set from the estimate printed at the start.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.callgrind import instructions, mirror_recording
from harness.config import (
    ALL_SYMBOLS,
    GEN_CPU,
    PEER_SERVERS,
    RECORDING_EVENTS,
    ROOT,
    SCENARIOS,
    SERVER_CPU,
    Plan,
    Result,
    parse_args,
)
from harness.loadgen import BLOCK_OF, BLOCKS, Ctx, Gen
from harness.metrics import summarise, wsload_check
from harness.micro import book_updates, on_cpu
from harness.peers import prepare_peers
from harness.procs import Servers, build_loadgen, raise_nofile, tickerd_has_flag, write_symbols_file
from harness.replay_bench import replay_parse
from harness.report import machine, render_md
from harness.script_runs import cluster_figures, fanout_figures
from harness.sessions import idle_connections, slow_reader
from harness.wsclient import all_symbols_reply

# -- a repetition ----------------------------------------------------------------------------


def empty_rep() -> Result:
    """A repetition's result before any measurement."""
    keys = ["single-pipelined", "single-unpipelined", "open-loop-20k", "all-symbols", "wsload"]
    return {k: {} for k in keys}


def run_rep(ctx: Ctx, index: int) -> Result:
    """Every scenario once; the order of the server blocks rotates with ``index``."""
    rep = empty_rep()
    chosen = [BLOCK_OF[name] for name in ctx.plan.servers]
    blocks = [b for b in BLOCKS if b in chosen]
    k = index % len(blocks)
    order = blocks[k:] + blocks[:k]  # rotate, so no server always goes first
    rep["order"] = [b.__name__.removeprefix("block_") for b in order]
    for block in order:
        guarded(block.__name__, functools.partial(block, ctx, rep), rep)
    if not ctx.plan.every_server:
        skipped = {"status": "not measured: not among --servers"}
        server_less = (
            "idle-connections", "slow-reader", "book-updates", "replay-parse", "cluster",
            "streams-fanout",
        )  # fmt: skip
        for scenario in server_less:
            rep[scenario] = dict(skipped)
        if index == 0:
            rep["mirror-recording"], rep["instructions"] = dict(skipped), dict(skipped)
        return rep
    rep["idle-connections"] = guarded_result(lambda: idle_connections(ctx))
    rep["slow-reader"] = guarded_result(lambda: slow_reader(ctx))
    seconds = 0.3 if ctx.plan.quick else 1.0
    rep["book-updates"] = book_updates(ctx.servers.symbols_file, seconds, ctx.plan.pin)
    rows = 100_000 if ctx.plan.quick else 1_000_000
    with on_cpu(SERVER_CPU if ctx.plan.pin else None):
        rep["replay-parse"] = replay_parse(ctx.servers.workdir, rows)
    rep["cluster"] = cluster_figures(ctx.servers.workdir, ctx.plan.duration, ctx.plan.quick)
    warmup = ctx.plan.warmup if ctx.plan.quick else max(ctx.plan.warmup, 2.0)  # 2000 handshakes
    rep["streams-fanout"] = fanout_figures(
        ctx.servers.workdir, ctx.plan.duration, warmup, ctx.plan.quick
    )
    if index == 0:
        events = 4000 if ctx.plan.quick else RECORDING_EVENTS
        rep["mirror-recording"] = mirror_recording(ctx.servers.workdir, events)
        rep["instructions"] = instructions(ctx.servers.workdir, ctx.plan.quick)
    return rep


def guarded(name: str, body: Callable[[], None], rep: Result) -> None:
    """Run one server block; a server that fails to start is recorded, not fatal."""
    try:
        body()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        rep.setdefault("errors", []).append(f"{name}: {exc}")
        print(f"  ! {name}: {exc}", file=sys.stderr)


def guarded_result(body: Callable[[], Result]) -> Result:
    """A scenario's result, or ``{"failed": why}`` if it raised."""
    try:
        return body()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return {"failed": f"{type(exc).__name__}: {exc}"}


# -- main ------------------------------------------------------------------------------------


class OverBudget(BaseException):
    """The whole run took longer than its bound. A BaseException, like KeyboardInterrupt,
    so that no handler for a failed measurement swallows it; ``finally`` blocks still
    stop every server on the way out."""


def on_alarm(signum: int, frame: FrameType | None) -> None:
    """SIGALRM: the run is over its budget."""
    raise OverBudget("the benchmark run exceeded its time budget")


def command_line(argv: list[str]) -> str:
    """The command as the report shows it."""
    script = Path(__file__).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(["python", str(shown), *argv])


def prepare(plan: Plan, workdir: Path) -> Ctx:
    """Build loadgen, install the peers, write the symbols file, learn tickerd's all-symbols
    reply size."""
    binary = build_loadgen()
    peers = prepare_peers() if set(PEER_SERVERS) & set(plan.servers) else {}
    for name, peer in peers.items():
        print(f"  {name}: {peer.get('measured', peer['status'])}", file=sys.stderr, flush=True)
    symbols_file = write_symbols_file(workdir, ALL_SYMBOLS)
    rest_off = tickerd_has_flag("--rest-port")
    servers = Servers(workdir, symbols_file, ALL_SYMBOLS, plan.pin, rest_off, peers)
    with servers.tickerd(name="tickerd-probe") as srv:
        count, body, _ = all_symbols_reply(srv.port)
    if count < 500:
        raise RuntimeError(f"tickerd serves {count} symbols from {symbols_file}; need >= 500")
    return Ctx(plan, Gen(binary, plan), servers, body, min_all_len=count * 40)


def measure(plan: Plan) -> tuple[list[Result], Ctx]:
    """Every repetition, in a temporary work directory."""
    with tempfile.TemporaryDirectory(prefix="tickerd-bench-") as tmp:
        ctx = prepare(plan, Path(tmp))
        reps = []
        for i in range(plan.reps):
            print(f"repetition {i + 1}/{plan.reps}", file=sys.stderr, flush=True)
            reps.append(run_rep(ctx, i))
        return reps, ctx


def write_outputs(plan: Plan, doc: Result) -> None:
    """Write the Markdown report and the JSON beside it."""
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
        "peers": {n: p.get("measured", p["status"]) for n, p in ctx.servers.peers.items()},
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
    """The benchmark command; its exit status (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    plan = parse_args(args, __doc__.splitlines()[0] if __doc__ else None)
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
