"""The cluster rows: ``benchmarks/cluster.py`` run once per repetition, its figures kept.

One worker in cluster mode (``--redis``: the shared limiter, the book bus and the feed lease
live) against one plain process, in the same run, pipelined single-symbol and all-symbols
while the book takes 20 000 ticks/s; two workers' CPU-µs per request; the staleness of a
price set on one node until another serves it. Without redis-server each says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .config import HERE, ROOT, Result

CLUSTER = HERE / "cluster.py"
REDIS_MISSING = "not measured: redis-server missing"
TIMEOUT_S = 300.0


def cluster_figures(work: Path, duration: float, quick: bool) -> Result:
    """``benchmarks/cluster.py``'s figures, or a status saying why there are none."""
    if quick:
        return {"status": "not measured: --quick"}
    if shutil.which("redis-server") is None:
        return {"status": REDIS_MISSING}
    out = work / "cluster.json"
    argv = [sys.executable, str(CLUSTER), "--duration", str(duration), "--json", str(out)]
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
