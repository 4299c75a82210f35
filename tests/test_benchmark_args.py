"""benchmarks/run.py's arguments: a smoke run never writes over the committed results."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "benchmarks" / "run.py"
COMMITTED = ROOT / "benchmarks" / "RESULTS.md"


def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tickerd_benchmark_harness", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_quick_writes_beside_the_build_not_over_the_committed_results() -> None:
    run = harness()
    quick = run.parse_args(["--quick"]).out
    assert quick != COMMITTED.resolve()
    assert quick == (ROOT / "benchmarks" / ".build" / "quick" / "RESULTS.md").resolve()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(quick)], cwd=ROOT, check=False, timeout=30
    )
    assert ignored.returncode == 0, f"{quick} is not ignored by git"
    assert run.parse_args([]).out == COMMITTED.resolve()  # a full run publishes
    assert run.parse_args(["--quick", "--out", "/tmp/x/R.md"]).out == Path("/tmp/x/R.md")


def test_help_names_the_outputs_and_no_internal_references() -> None:
    done = subprocess.run(
        [sys.executable, str(HARNESS), "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "benchmarks/.build/quick/RESULTS.md" in text
    assert "issue" not in text.lower()


def test_a_servers_subset_writes_beside_the_build_and_measures_only_those() -> None:
    run = harness()
    plan = run.parse_args(["--servers", "tickerd, uws,tickerd"])
    assert plan.servers == ("tickerd", "uws")
    assert not plan.every_server
    assert plan.out == (ROOT / "benchmarks" / ".build" / "servers" / "RESULTS.md").resolve()
    whole = run.parse_args([])
    assert whole.every_server and {"uws", "node-ws"} <= set(whole.servers)
    assert plan.estimate_s() < whole.estimate_s()
    assert run.parse_args(["--servers", ",".join(reversed(whole.servers))]).out == (
        COMMITTED.resolve()
    )


def test_an_unknown_server_is_bad_usage() -> None:
    done = subprocess.run(
        [sys.executable, str(HARNESS), "--servers", "tickerd,nginx"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--servers: unknown nginx; choose from naive, echo" in done.stderr


def test_an_open_loop_run_whose_generator_lost_its_core_is_measured_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = harness()
    plan = run.parse_args([])
    gen_cls = run.Gen
    figures = iter(
        [
            {"rps": 20_000.0, "srv_cpu": 0.45, "gen_cpu": 0.976, "p99_us": 27_609},
            {"rps": 20_000.0, "srv_cpu": 0.44, "gen_cpu": 1.0, "p99_us": 90},
            {"rps": 20_000.0, "srv_cpu": 0.44, "gen_cpu": 1.0, "p99_us": 95},
        ]
    )
    monkeypatch.setattr(gen_cls, "once", lambda self, srv, args: dict(next(figures)))
    gen = gen_cls(Path("loadgen"), plan)
    starved = gen.run(object(), ["-r", "20000", "-S"], False)
    assert starved["p99_us"] == 90
    assert starved["rerun_after"]["gen_cpu"] == 0.976
    assert starved["rerun_after"]["p99_us"] == 27_609
    steady = gen.run(object(), ["-r", "20000", "-S"], False)
    assert steady["p99_us"] == 95 and "rerun_after" not in steady
