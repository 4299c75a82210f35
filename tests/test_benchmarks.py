"""The benchmark harness's smoke run: it works end to end. It never asserts a speed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "benchmarks" / "run.py"
SCENARIOS = [
    "single-pipelined",
    "single-unpipelined",
    "open-loop-20k",
    "all-symbols",
    "idle-connections",
    "slow-reader",
    "book-updates",
    "replay-parse",
    "generator-ceiling",
    "mirror-recording",
    "instructions",
    "cluster",
]

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build loadgen.c"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only: epoll, /proc"),
]


@pytest.mark.timeout(330)
def test_quick_run_writes_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, str(HARNESS), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # the callgrind counts run in the smoke run too
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    md = out.read_text(encoding="utf-8")
    raw = out.with_suffix(".json").read_text(encoding="utf-8")
    doc = json.loads(raw)
    for name in SCENARIOS:
        assert name in md, name
        assert name in doc["scenarios"], name
    assert {row["scenario"] for row in doc["summary"]} == set(SCENARIOS)
    assert "| scenario | metric | per rep | median |" in md
    assert len(doc["reps"]) == 1
    rep = doc["reps"][0]
    for counted in ("mirror-recording", "instructions"):
        status = rep[counted]["status"]
        if shutil.which("valgrind") is None:
            assert status == "not measured: valgrind missing"
            assert f"{status}." in md
        else:
            assert status.startswith("measured"), status
    replay = rep["replay-parse"]
    assert replay["rows"] == 100_000 and replay["rows_per_s"] > 0
    assert replay["symbols"] == "BTCUSDT, ETHUSDT, DOGEUSDT, 1000BONKUSDT"
    assert "## Instruction counts (callgrind)" in md
    assert rep["cluster"] == {"status": "not measured: --quick"}


def test_callgrind_rows_say_not_measured_without_valgrind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from harness import callgrind
        from harness.report import md_callgrind
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    monkeypatch.setattr(callgrind.shutil, "which", lambda name: None)
    rep = {
        "mirror-recording": callgrind.mirror_recording(tmp_path, 1000),
        "instructions": callgrind.instructions(tmp_path, quick=True),
    }
    assert rep["mirror-recording"] == {"status": "not measured: valgrind missing"}
    assert rep["instructions"] == {"status": "not measured: valgrind missing"}
    assert md_callgrind(rep).count("not measured: valgrind missing.") == 2


def test_cluster_rows_say_not_measured_without_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from harness import cluster_runs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    monkeypatch.setattr(cluster_runs.shutil, "which", lambda name: None)
    assert cluster_runs.cluster_figures(tmp_path, 1.0, quick=False) == {
        "status": "not measured: redis-server missing"
    }
