"""The Markdown report of a run's JSON document."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from contextlib import suppress
from importlib import metadata
from pathlib import Path

from .config import SATURATED, SCENARIOS, Result
from .metrics import fmt, ok, wsload_check
from .peers import LABELS

# -- the report ------------------------------------------------------------------------------


def package_version(name: str) -> str:
    """An installed package's version, or "not installed"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def hot_path() -> str:
    """Which request path the tickerd servers run (they inherit this environment:
    ``TICKERD_PURE=1`` measures the pure-Python path of a compiled install)."""
    done = subprocess.run(
        [sys.executable, "-c", "from tickerd import hotpath; print(hotpath.describe())"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.stdout.strip() or f"unknown ({done.stderr.strip()[-200:]})"


def machine() -> Result:
    """The machine and package versions the report states."""
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
        "hot_path": hot_path(),
    }  # fmt: skip


# What is known about a target that misses, printed under the headline when it does.
MISS_NOTES = {
    ("mirror-recording", "recorded / plain instructions"): (
        "Per applied aggTrade the compiled RowBuffer (src/tickerd/aggtrade_rows.py) "
        "stores the row's seven fields in a flat list; each write prints a symbol's rows "
        "with one orjson.dumps and one bytes.replace. What is left per row: the call from "
        "the mirror, four event lookups, hashing the price and quantity texts for the "
        "printed-decimals cache, and printing them; the ids, in the billions as a busy "
        "symbol's are, are multi-digit integers that orjson prints through a slower path "
        "(about 230 instructions each, 4 per row). All this against a mirror path (orjson.loads, the checks, "
        "PriceBook.update) of about 37 000 instructions."
    ),
    ("open-loop-20k", "server CPU per request"): (
        "At 20 000 req/s nothing is pipelined: every request costs the server a wake-up, a "
        "read and a write. The echo server on the same transport (no protocol at all) "
        "already needs more CPU per request than the target allows — see the echo row — so "
        "what remains is the stack, not tickerd's protocol work (about 2 µs a request, "
        "py-spy: read, epoll and write take ~75 % of the server's time, Python under 20 %). "
        "Closing it needs a cheaper wake-up path than uvloop's per-event callbacks."
    ),
    ("single-unpipelined", "tickerd / uWebSockets.js"): (
        "Unpipelined, every request is a wake-up, a read and a write, and tickerd already "
        "answers at about the echo server's rate on the same transport (see the echo row): a "
        "protocol that cost nothing would stand near echo / uWebSockets.js. What is left is "
        "the transport's per-read cost (uvloop's callbacks, picows's frame handling; compare "
        "the echo server's instructions per unpipelined request with tickerd's)."
    ),
    ("streams-fanout", "!miniTicker@arr events/s, tickerd / naive"): (
        "tickerd delivers every event it publishes (one array a second to each subscriber); "
        "the ratio is what the naive server fails to deliver at this offered load, so it is "
        "bounded by the load, not by tickerd. The cost is in the events per server CPU-second "
        "row."
    ),
    ("streams-fanout", "@aggTrade events/s, tickerd / naive"): (
        "tickerd delivers every trade of the symbol to every subscriber (about 40 a second "
        "each at 20 000 trades/s over 512 symbols); as for the array, the ratio is bounded by "
        "what the naive server drops at this load."
    ),
}


def md_misses(rows: list[Result]) -> list[str]:
    """The known reasons of the targets that missed."""
    out = []
    for r in rows:
        note = MISS_NOTES.get((r["scenario"], r["metric"]))
        if r["verdict"] == "MISS" and note:
            out += ["", f"**{r['scenario']}, {r['metric']} (MISS):** {note}"]
    return out


def md_headline(rows: list[Result]) -> list[str]:
    """The headline table."""
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
    """One loadgen result as a details table row."""
    if not r:
        return f"| {rep_no} | {server} | not run | | | | | | | |"
    if str(r.get("status", "")).startswith("not measured"):
        return f"| {rep_no} | {server} | {r['status']} | | | | | | | |"
    if not ok(r):
        return f"| {rep_no} | {server} | failed: {r.get('failed', '?')} | | | | | | | |"
    rerun = r.get("rerun_after")
    note = ""
    if rerun and saturating:
        note = f"re-run (first: srv_cpu {rerun['srv_cpu']})"
    elif rerun:  # the generator lost its core
        note = f"re-run (first: gen_cpu {rerun.get('gen_cpu')}, p99 {rerun.get('p99_us')} µs)"
    if r.get("failed"):
        note += f" {r['failed']}: {r.get('errors')} lost {r.get('lost')}"
    sat = " †" if saturating and (r.get("srv_cpu") or 0) < SATURATED else ""
    return (
        f"| {rep_no} | {server} | {r['rps']:,.0f} | {r.get('srv_cpu')}{sat} | {r['gen_cpu']} | "
        f"{r.get('cpu0_other', '')} | {r['p50_us']:,} | {r['p99_us']:,} | "
        f"{r['syscalls_per_resp']} | {note} |"
    )


def md_loadgen(reps: list[Result], scenario: str, servers: list[str]) -> list[str]:
    """A scenario's loadgen details table."""
    out = [
        "| rep | server | req/s | srv_cpu | gen_cpu | cpu0 other | p50 µs | p99 µs | syscalls/resp | note |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    # a server of no repetition (not among --servers) gets no rows
    shown = [s for s in servers if any(s in rep.get(scenario, {}) for rep in reps)] or servers
    for i, rep in enumerate(reps, 1):
        saturating = scenario != "open-loop-20k"  # an offered rate is meant to leave headroom
        out += [lg_row(i, s, rep.get(scenario, {}).get(s), saturating) for s in shown]
    return out


def md_records(reps: list[Result], scenario: str, keys: list[str]) -> list[str]:
    """A scenario's details table of recorded fields."""
    out = ["| rep | " + " | ".join(keys) + " |", "|---:|" + "---|" * len(keys)]
    for i, rep in enumerate(reps, 1):
        r = rep.get(scenario, {})
        if "failed" in r:
            out.append(f"| {i} | failed: {r['failed']} |" + " |" * (len(keys) - 1))
        else:
            out.append(f"| {i} | " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    return out


def md_wsload(reps: list[Result]) -> list[str]:
    """The wsload cross-check table and its verdict."""
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
    ("single-pipelined", "loadgen", ["naive", "echo", "tickerd", "tickerd-ops-off", "uws", "node-ws"]),
    ("single-unpipelined", "loadgen", ["naive", "echo", "tickerd", "uws", "node-ws"]),
    ("open-loop-20k", "loadgen", ["tickerd", "echo"]),
    ("all-symbols", "loadgen", ["naive", "constant", "tickerd", "tickerd-ticking"]),
    ("idle-connections", "records",
     ["requested", "opened", "handshake_failures", "server_connections", "open_s", "rss_before_kb", "rss_kb", "per_conn_kb"]),
    ("slow-reader", "records",
     ["requests_sent", "cut_off", "cut_after_s", "how", "rss_before_kb", "rss_peak_kb",
      "peak_from", "growth_kb", "rss_after_kb", "server_logged_cut"]),
    ("book-updates", "records", ["apply_ticks_per_s", "dict_ticks_per_s", "ratio_to_dict"]),
    ("replay-parse", "records", ["status", "symbols", "rows", "rows_per_s"]),
    ("cluster", "records",
     ["status", "single_ratio", "all_20k_ratio", "process_cpu_us", "worker_cpu_us", "workers_rps",
      "staleness_p99_ms"]),
    ("streams-fanout", "records",
     ["status", "tickerd_arr_events_per_s", "naive_arr_events_per_s", "arr_ratio",
      "tickerd_agg_events_per_s", "naive_agg_events_per_s", "agg_ratio", "per_cpu_ratio",
      "api_rps_without", "api_rps_with", "api_ratio"]),
]  # fmt: skip


def md_details(reps: list[Result], ctx_info: Result) -> list[str]:
    """The details section: one table per scenario."""
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


def md_callgrind(rep: Result) -> list[str]:
    """The instruction counts section (counted once, in the first repetition)."""
    out = ["## Instruction counts (callgrind)", "", COUNT_NOTE, ""]
    ins = rep.get("instructions", {})
    out += [f"### instructions: {SCENARIOS['instructions']}", ""]
    if str(ins.get("status", "")).startswith("measured"):
        out += [f"`{ins['argv']}`, instructions per request:", "",
                "| server | pipelined | unpipelined |", "|---|---:|---:|"]  # fmt: skip
        for who, label in (
            ("tickerd", "tickerd"),
            ("echo", "echo"),
            ("over_echo", "tickerd over echo"),
        ):
            out.append(f"| {label} | {ins[f'{who}_pipelined']:,} | {ins[f'{who}_unpipelined']:,} |")
        for key in sorted(
            k.removesuffix("_ratio_pipelined") for k in ins if k.endswith("_ratio_pipelined")
        ):
            out.append(f"| {key} | {ins[f'{key}_pipelined']:,} ({ins[f'{key}_ratio_pipelined']:.4f}× tickerd) "
                       f"| {ins[f'{key}_unpipelined']:,} ({ins[f'{key}_ratio_unpipelined']:.4f}× tickerd) |")  # fmt: skip
    else:
        out.append(f"{ins.get('status', 'not measured: not run')}.")
    rec = rep.get("mirror-recording", {})
    out += ["", f"### mirror-recording: {SCENARIOS['mirror-recording']}", ""]
    if str(rec.get("status", "")).startswith("measured"):
        out += [(f"{rec['events']:,} aggTrade events of BTCUSDT, ETHUSDT, DOGEUSDT and "
                 "1000BONKUSDT, instructions per applied event:"), "",
                "| without recording | with a TradeRecorder | ratio |", "|---:|---:|---:|",
                (f"| {rec['plain_instr_per_event']:,} | {rec['recorded_instr_per_event']:,} | "
                 f"{rec['ratio']:.3f}× |")]  # fmt: skip
    else:
        out.append(f"{rec.get('status', 'not measured: not run')}.")
    return out


COUNT_NOTE = (
    "Counted by valgrind's callgrind with a fixed PYTHONHASHSEED: the same code and inputs "
    "give the same count whatever else the machine runs, so these figures judge a hot-path "
    "change where timings cannot. Counted once per run (a count does not vary between "
    "repetitions)."
)
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
    "server that did not (srv_cpu < 0.9) even after one re-run. An open-loop run whose "
    "generator (it spins) got less than 0.99 of its core is measured again once, its first "
    "figures in the note: its latencies were the generator's own stalls."
)


def md_open_loop(reps: list[Result]) -> str:
    """The open-loop run's figures in one line per repetition."""
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


def md_peers(peers: dict[str, str]) -> list[str]:
    """What each Node peer ran as (or why it was not measured), as report lines."""
    return [f"- Peer `{name}` ({LABELS.get(name, name)}): {how}" for name, how in peers.items()]


def render_md(doc: Result) -> str:
    """The whole Markdown report of a run's document."""
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
        f"- tickerd hot path: {m.get('hot_path', 'not recorded')}",
        *md_peers(doc.get("peers", {})),
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
    lines += ["", *md_callgrind(doc["reps"][0])]
    lines += ["", "## Details", *md_details(doc["reps"], doc["inputs"])]
    errors = [e for rep in doc["reps"] for e in rep.get("errors", [])]
    if errors:
        lines += ["", "## Errors", "", *[f"- {e}" for e in errors]]
    return "\n".join(lines) + "\n"
