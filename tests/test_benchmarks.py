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
]

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build loadgen.c"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only: epoll, /proc"),
]


@pytest.mark.timeout(150)
def test_quick_run_writes_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, str(HARNESS), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
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
