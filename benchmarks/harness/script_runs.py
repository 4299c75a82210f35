"""The rows measured by a benchmark script of their own, run once per repetition.

``cluster``: ``benchmarks/cluster.py``, one worker in cluster mode (``--redis``: the shared
limiter, the book bus and the feed lease live) against one plain process, in the same run,
pipelined single-symbol and all-symbols while the book takes 20 000 ticks/s; two workers'
CPU-µs per request; the staleness of a price set on one node until another serves it.
Without redis-server each says so.

``streams-fanout``: ``benchmarks/streams_fanout.py``, events delivered to 1000 subscribers of
``!miniTicker@arr`` and 1000 of one ``@aggTrade`` stream while the book takes 20 000
trades/s, by tickerd and by a naive ``websockets`` fan-out in the same run, and the WS
API's pipelined rate with those subscribers connected over the rate without them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .config import HERE, ROOT, Result

CLUSTER = HERE / "cluster.py"
FANOUT = HERE / "streams_fanout.py"
REDIS_MISSING = "not measured: redis-server missing"
TIMEOUT_S = 300.0


def script_figures(script: Path, args: list[str], out: Path) -> Result:
    """The JSON figures ``script`` wrote to ``out``, or ``{"status": "failed: …"}``."""
    argv = [sys.executable, str(script), *args, "--json", str(out)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S,
                              check=False, cwd=ROOT)  # fmt: skip
    except subprocess.TimeoutExpired:
        why = f"timed out after {TIMEOUT_S:.0f} s"
        return {"status": f"failed: {why}", "failed": why}
    if done.returncode != 0 or not out.exists():
        why = done.stderr.strip()[-300:] or f"exit {done.returncode}"
        return {"status": f"failed: {why}", "failed": why}
    fig: Result = json.loads(out.read_text())
    return fig


def cluster_figures(work: Path, duration: float, quick: bool) -> Result:
    """``benchmarks/cluster.py``'s figures, or a status saying why there are none."""
    if quick:
        return {"status": "not measured: --quick"}
    if shutil.which("redis-server") is None:
        return {"status": REDIS_MISSING}
    fig = script_figures(CLUSTER, ["--duration", str(duration)], work / "cluster.json")
    if "failed" in fig:
        return fig
    workers = [w for w in fig["workers"] if w["cpu_us_per_req"]]
    alone = fig["single"]["single"]
    return {
        "status": "measured: benchmarks/cluster.py",
        "single_ratio": round(fig["single"]["ratio"], 4),
        "all_20k_ratio": round(fig["all-20k"]["ratio"], 4),
        "single": fig["single"],
        "all-20k": fig["all-20k"],
        "process_cpu_us": round(1e6 * (alone["srv_cpu"] or 0) / alone["rps"], 3),
        "worker_cpu_us": round(sum(w["cpu_us_per_req"] for w in workers) / len(workers), 3)
        if workers
        else None,
        "workers_rps": round(sum(w["rps"] for w in fig["workers"])),
        "staleness_p99_ms": round(fig["staleness"]["p99_ms"], 2),
    }


def fanout_figures(work: Path, duration: float, warmup: float, quick: bool) -> Result:
    """``benchmarks/streams_fanout.py``'s figures (``--quick``: 50 subscribers a group, 1 s)."""
    subs, duration = (50, 1.0) if quick else (1000, duration)
    args = ["--subscribers", str(subs), "--duration", str(duration), "--warmup", str(warmup)]
    fig = script_figures(FANOUT, args, work / "fanout.json")
    if "failed" in fig:
        return fig
    r, f, api = fig["ratios"], fig["fanout"], fig["api"]

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "status": f"measured: benchmarks/streams_fanout.py, {subs} + {subs} subscribers",
        "arr_ratio": rounded(r["arr_ratio"]),
        "agg_ratio": rounded(r["agg_ratio"]),
        "per_cpu_ratio": rounded(r["per_cpu_ratio"]),
        "api_ratio": rounded(r["api_ratio"]),
        "tickerd_arr_events_per_s": round(f["tickerd"]["arr"]["events_per_s"]),
        "naive_arr_events_per_s": round(f["naive"]["arr"]["events_per_s"]),
        "tickerd_agg_events_per_s": round(f["tickerd"]["agg"]["events_per_s"]),
        "naive_agg_events_per_s": round(f["naive"]["agg"]["events_per_s"]),
        "api_rps_without": round(api["without"]["rps"]),
        "api_rps_with": round(api["with"]["rps"]),
    }
