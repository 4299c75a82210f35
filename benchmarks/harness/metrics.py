"""The headline metrics: a value per repetition, its median against a target."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import COUNTED_ONCE, SATURATED, Result

# -- metrics ---------------------------------------------------------------------------------


def ok(r: Result | None) -> bool:
    """Whether a generator result holds a verified measurement."""
    return r is not None and "failed" not in r and isinstance(r.get("rps"), (int, float))


def rps_ratio(scenario: str, a: str, b: str, key: str = "rps") -> Callable[[Result], float | None]:
    """The ratio of two servers' req/s (or another loadgen field) in one scenario."""

    def value(rep: Result) -> float | None:
        ra, rb = rep.get(scenario, {}).get(a), rep.get(scenario, {}).get(b)
        if not (ok(ra) and ok(rb)) or not isinstance(ra.get(key), (int, float)) or not rb.get(key):
            return None
        return float(ra[key]) / float(rb[key])

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
    """A number found at ``path`` under a scenario's result."""

    def value(rep: Result) -> float | None:
        node: Any = rep.get(scenario)
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and "failed" in node:
            return None
        return float(node) if isinstance(node, (int, float)) and node is not True else None

    return value


def lg_field(scenario: str, server: str, key: str) -> Callable[[Result], float | None]:
    """One field of a server's loadgen result in a scenario."""

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
    """tickerd's RSS with every idle connection open, in MB."""
    r = rep.get("idle-connections", {})
    want = r.get("requested")
    if "failed" in r or not want or r.get("opened") != want or r.get("server_connections") != want:
        return None  # not every connection was open on both sides: no valid figure
    return float(r["rss_kb"]) / 1024


def slow_growth_mb(rep: Result) -> float | None:
    """tickerd's RSS growth under the slow reader, in MB."""
    r = rep.get("slow-reader", {})
    growth = r.get("growth_kb")
    return None if "failed" in r or not isinstance(growth, (int, float)) else growth / 1024


def slow_cut_s(rep: Result) -> float | None:
    """Seconds until the slow reader was cut off (inf: never)."""
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
    fmt: str  # "x" ratio, "us", "mb", "rate", "cpu", "s", "ms", "instr" (a count)
    target: tuple[str, float] | None = None  # (">=" | "<=" | "<", bound)
    saturation: tuple[str, tuple[str, ...]] | None = None  # scenario, servers
    servers: tuple[str, ...] = ()  # a server reported "not measured" makes the row so too


def ops_on_off(phase: str) -> Callable[[Result], float | None]:
    """tickerd's instructions per request with the ops surface on over those with it off."""
    off = field_of("instructions", f"tickerd-ops-off_ratio_{phase}")  # off / on

    def value(rep: Result) -> float | None:
        ratio = off(rep)
        return None if not ratio else round(1 / ratio, 4)

    return value


def metrics() -> list[Metric]:
    """Every headline row, in report order."""
    s1, s2, s3, s4 = "single-pipelined", "single-unpipelined", "open-loop-20k", "all-symbols"
    mr, ins = "mirror-recording", "instructions"
    fc, cl, fo = "tickerd-faults-cleared", "cluster", "streams-fanout"
    trio = ("naive", "echo", "tickerd")
    ops = ("tickerd", "tickerd-ops-off")
    uws, nws = ("tickerd", "uws"), ("tickerd", "node-ws")
    four = ("naive", "constant", "tickerd", "tickerd-ticking")
    return [
        Metric(s1, "tickerd / naive", rps_ratio(s1, "tickerd", "naive"), "x", (">=", 7.0), (s1, trio)),
        Metric(s1, "tickerd / echo", rps_ratio(s1, "tickerd", "echo"), "x", None, (s1, trio)),
        Metric(s1, "tickerd / naive per server CPU-s", per_cpu_ratio(s1, "tickerd", "naive"), "x"),
        Metric(s1, "tickerd req/s", lg_field(s1, "tickerd", "rps"), "rate"),
        Metric(s1, "ops surface on / off", rps_ratio(s1, *ops), "x", (">=", 0.97), (s1, ops)),
        Metric(s1, "tickerd / uWebSockets.js", rps_ratio(s1, *uws), "x", (">=", 1.3), (s1, uws), uws),
        Metric(s1, "tickerd / Node ws", rps_ratio(s1, *nws), "x", None, (s1, nws), nws),
        Metric(s1, "tickerd / uWebSockets.js per server CPU-s", per_cpu_ratio(s1, *uws), "x", servers=uws),
        Metric(s2, "tickerd / naive", rps_ratio(s2, "tickerd", "naive"), "x", (">=", 2.5), (s2, trio)),
        Metric(s2, "tickerd / echo", rps_ratio(s2, "tickerd", "echo"), "x", None, (s2, trio)),
        Metric(s2, "tickerd / naive per server CPU-s", per_cpu_ratio(s2, "tickerd", "naive"), "x"),
        Metric(s2, "tickerd / uWebSockets.js", rps_ratio(s2, *uws), "x", (">=", 1.3), (s2, uws), uws),
        Metric(s2, "tickerd / Node ws", rps_ratio(s2, *nws), "x", None, (s2, nws), nws),
        Metric(s2, "tickerd / uWebSockets.js per server CPU-s", per_cpu_ratio(s2, *uws), "x", servers=uws),
        Metric(s3, "p50 latency", lg_field(s3, "tickerd", "p50_us"), "us"),
        Metric(s3, "p99 latency", lg_field(s3, "tickerd", "p99_us"), "us", ("<=", 150)),
        Metric(s3, "p99 / echo p99", rps_ratio(s3, "tickerd", "echo", "p99_us"), "x", ("<=", 1.3)),
        Metric(s3, "p99.9 latency", lg_field(s3, "tickerd", "p999_us"), "us"),
        Metric(s3, "server CPU per request", cpu_per_request("tickerd"), "us", ("<=", 20)),
        Metric(s3, "echo p99 (the stack's floor)", lg_field(s3, "echo", "p99_us"), "us"),
        Metric(s3, "echo CPU per request (the stack's floor)", cpu_per_request("echo"), "us"),
        Metric(s4, "tickerd / naive", rps_ratio(s4, "tickerd", "naive"), "x", (">=", 25), (s4, four)),
        Metric(s4, "tickerd / constant", rps_ratio(s4, "tickerd", "constant"), "x", (">=", 0.9), (s4, four)),
        Metric(s4, "ticking 1000/s / constant", rps_ratio(s4, "tickerd-ticking", "constant"), "x", (">=", 0.95), (s4, four)),
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
        Metric(mr, "recorded / plain instructions", field_of(mr, "ratio"), "x", ("<=", 1.10)),
        Metric(mr, "instructions per aggTrade, plain", field_of(mr, "plain_instr_per_event"), "instr"),
        Metric(mr, "instructions per aggTrade, recorded", field_of(mr, "recorded_instr_per_event"), "instr"),
        Metric(cl, "one worker on Redis / one process, pipelined", field_of(cl, "single_ratio"), "x", (">=", 0.8)),
        Metric(cl, "one worker on Redis / one process, all-symbols at 20k ticks/s", field_of(cl, "all_20k_ratio"), "x", (">=", 0.8)),
        Metric(cl, "CPU-µs per request, one process (pipelined)", field_of(cl, "process_cpu_us"), "us"),
        Metric(cl, "CPU-µs per request, each of two workers on Redis", field_of(cl, "worker_cpu_us"), "us"),
        Metric(cl, "two workers together", field_of(cl, "workers_rps"), "rate"),
        Metric(cl, "staleness p99 (price set on one node until another serves it)", field_of(cl, "staleness_p99_ms"), "ms"),
        Metric(fo, "!miniTicker@arr events/s, tickerd / naive", field_of(fo, "arr_ratio"), "x", (">=", 10.0)),
        Metric(fo, "@aggTrade events/s, tickerd / naive", field_of(fo, "agg_ratio"), "x", (">=", 10.0)),
        Metric(fo, "events per server CPU-s, tickerd / naive", field_of(fo, "per_cpu_ratio"), "x"),
        Metric(fo, "WS API pipelined with subscribers / without", field_of(fo, "api_ratio"), "x", (">=", 0.9)),
        Metric(ins, "tickerd per request, pipelined", field_of(ins, "tickerd_pipelined"), "instr"),
        Metric(ins, "tickerd per request, unpipelined", field_of(ins, "tickerd_unpipelined"), "instr"),
        Metric(ins, "echo per request, pipelined", field_of(ins, "echo_pipelined"), "instr"),
        Metric(ins, "echo per request, unpipelined", field_of(ins, "echo_unpipelined"), "instr"),
        Metric(ins, "ops surface on / off, pipelined", ops_on_off("pipelined"), "x", ("<=", 1.03)),
        Metric(ins, "ops surface on / off, unpipelined", ops_on_off("unpipelined"), "x", ("<=", 1.03)),
        Metric(ins, "fault armed then cleared / never armed, pipelined", field_of(ins, f"{fc}_ratio_pipelined"), "x", ("<=", 1.01)),
        Metric(ins, "fault armed then cleared / never armed, unpipelined", field_of(ins, f"{fc}_ratio_unpipelined"), "x", ("<=", 1.01)),
    ]  # fmt: skip


def passes(value: float, target: tuple[str, float]) -> bool:
    """Whether ``value`` meets ``target``."""
    op, bound = target
    return {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]


def fmt(value: float | None, kind: str) -> str:
    """A value as the report prints it (``kind``: see :class:`Metric`)."""
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
        "ms": f"{value:.2f} ms",
        "instr": f"{value:,.0f}",
    }[kind]


def min_srv_cpu(reps: list[Result], sat: tuple[str, tuple[str, ...]] | None) -> str:
    """The lowest srv_cpu among the saturating runs a metric rests on."""
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


def server_not_measured(reps: list[Result], scenario: str, servers: tuple[str, ...]) -> bool:
    """Whether, in every repetition, one of ``servers`` says it could not be measured (a peer
    that could not be installed or started)."""
    return bool(servers) and all(
        any(
            str(rep.get(scenario, {}).get(s, {}).get("status", "")).startswith("not measured")
            for s in servers
        )
        for rep in reps
    )


def summarise(reps: list[Result]) -> list[Result]:
    """The headline rows: per-repetition values, median, spread and verdict."""
    rows = []
    for m in metrics():
        values = [m.value(rep) for rep in (reps[:1] if m.scenario in COUNTED_ONCE else reps)]
        got = [v for v in values if v is not None]
        median = statistics.median(got) if got else None
        if m.target is None:
            verdict = "info"
        elif median is None and (
            not_measured(reps[:1] if m.scenario in COUNTED_ONCE else reps, m.scenario)
            or server_not_measured(reps, m.scenario, m.servers)
        ):
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
