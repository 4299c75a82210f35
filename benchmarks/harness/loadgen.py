"""The load generators (loadgen, wsload) and the throughput scenarios' server blocks."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import (
    GEN_CPU,
    GEN_SPINNING,
    HOST,
    QUIET_WAIT_S,
    SATURATED,
    SYMS,
    WS_PATH,
    Plan,
    Result,
)
from .procs import Server, Servers, child_setup, cpu_noise, wait_quiet

# -- load generators -------------------------------------------------------------------------


@dataclass(frozen=True)
class Gen:
    """The compiled loadgen and how long each run lasts."""

    binary: Path
    plan: Plan

    def run(self, srv: Server, args: list[str], saturate: bool) -> Result:
        """One measurement; measured again once if it should saturate the server and did
        not, or (an open-loop run, whose generator spins) if the generator itself lost its
        CPU: its latencies then include its own stalls, not the server's."""
        first = self.once(srv, args)
        cpu, gen = first.get("srv_cpu"), first.get("gen_cpu")
        unsaturated = saturate and isinstance(cpu, float) and cpu < SATURATED
        starved = not saturate and isinstance(gen, float) and gen < GEN_SPINNING
        if not (self.plan.rerun and (unsaturated or starved)):
            return first
        second = self.once(srv, args)
        second["rerun_after"] = {
            k: first.get(k) for k in ("rps", "srv_cpu", "gen_cpu", "cpu0_other", "p99_us")
        }
        return second

    def once(self, srv: Server, args: list[str]) -> Result:
        """One loadgen run against ``srv``, with the other work on its CPU recorded."""
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
    """The single-symbol runs against one server: pipelined, unpipelined (and wsload)."""
    flag = (["-E"] if echo else []) + (["-b", str(ctx.plan.spin_us)] if ctx.plan.spin_us else [])
    pipelined = ctx.gen.run(srv, ["-s", SYMS, "-c", "50", "-k", "20", *flag], True)
    rep["single-pipelined"][srv.name] = pipelined
    if ctx.plan.wsload and srv.name in ("naive", "tickerd"):  # the cross-check's pair
        rep["wsload"][srv.name] = wsload_run(ctx.plan, srv)
    unpipelined = ctx.gen.run(srv, ["-s", SYMS, "-c", "200", "-k", "1", *flag], True)
    rep["single-unpipelined"][srv.name] = unpipelined


def all_runs(ctx: Ctx, srv: Server, rep: Result, name: str) -> None:
    """The all-symbols run against one server."""
    args = ["-m", "all", "-L", str(ctx.min_all_len), "-c", "50", "-k", "4"]
    rep["all-symbols"][name] = ctx.gen.run(srv, args, True)


def block_naive(ctx: Ctx, rep: Result) -> None:
    """The naive server's runs."""
    with ctx.servers.naive() as srv:
        single_runs(ctx, srv, rep, echo=False)
        all_runs(ctx, srv, rep, "naive")


def block_echo(ctx: Ctx, rep: Result) -> None:
    """The echo server's runs (single-symbol and open-loop, the stack's floor)."""
    with ctx.servers.stack("echo") as srv:
        single_runs(ctx, srv, rep, echo=True)
        rep["open-loop-20k"]["echo"] = ctx.gen.run(srv, [*OPEN_LOOP, "-E"], False)


def block_constant(ctx: Ctx, rep: Result) -> None:
    """The constant server's all-symbols run."""
    with ctx.servers.stack("constant", ctx.body_bytes) as srv:
        all_runs(ctx, srv, rep, "constant")


def block_tickerd(ctx: Ctx, rep: Result) -> None:
    """tickerd's runs (static book)."""
    with ctx.servers.tickerd() as srv:
        single_runs(ctx, srv, rep, echo=False)
        rep["open-loop-20k"]["tickerd"] = ctx.gen.run(srv, OPEN_LOOP, False)
        all_runs(ctx, srv, rep, "tickerd")


def block_ticking(ctx: Ctx, rep: Result) -> None:
    """tickerd's all-symbols run with the book ticking 1000 times a second."""
    with ctx.servers.tickerd(1000, name="tickerd-ticking") as srv:
        all_runs(ctx, srv, rep, "tickerd-ticking")


def block_ops_off(ctx: Ctx, rep: Result) -> None:
    """tickerd with its ops surface off: the pipelined run, against ``tickerd`` (on)."""
    with ctx.servers.tickerd(0, "--ops-port", "-1", name="tickerd-ops-off") as srv:
        spin = ["-b", str(ctx.plan.spin_us)] if ctx.plan.spin_us else []
        pipelined = ctx.gen.run(srv, ["-s", SYMS, "-c", "50", "-k", "20", *spin], True)
        rep["single-pipelined"][srv.name] = pipelined


def peer_runs(ctx: Ctx, rep: Result, name: str) -> None:
    """A Node peer's single-symbol runs; one that cannot be installed or started is recorded
    as not measured (with why) in both scenarios, not as a failure of the run."""
    try:
        srv = ctx.servers.peer(name)
        srv.__enter__()
    except (RuntimeError, OSError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        status = why if why.startswith("not measured") else f"not measured: {why}"
        for scenario in ("single-pipelined", "single-unpipelined"):
            rep[scenario][name] = {"status": status}
        return
    try:
        single_runs(ctx, srv, rep, echo=False)
    finally:
        srv.stop()


def block_uws(ctx: Ctx, rep: Result) -> None:
    """Node + uWebSockets.js (benchmarks/peers/uws_server.js): the single-symbol runs."""
    peer_runs(ctx, rep, "uws")


def block_nodews(ctx: Ctx, rep: Result) -> None:
    """Node + ws (benchmarks/peers/ws_server.js): the single-symbol runs."""
    peer_runs(ctx, rep, "node-ws")


BLOCKS: list[Callable[[Ctx, Result], None]] = [
    block_naive,
    block_echo,
    block_tickerd,
    block_uws,
    block_constant,
    block_nodews,
    block_ticking,
    block_ops_off,
]
# --servers names -> blocks
BLOCK_OF: dict[str, Callable[[Ctx, Result], None]] = {
    "naive": block_naive,
    "echo": block_echo,
    "tickerd": block_tickerd,
    "uws": block_uws,
    "constant": block_constant,
    "node-ws": block_nodews,
    "tickerd-ticking": block_ticking,
    "tickerd-ops-off": block_ops_off,
}
