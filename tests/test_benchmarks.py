"""The benchmark harness's smoke run: it works end to end. It never asserts a speed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

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
    "streams-fanout",
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
    fanout = rep["streams-fanout"]
    assert fanout["status"] == "measured: benchmarks/streams_fanout.py, 50 + 50 subscribers"
    assert fanout["tickerd_agg_events_per_s"] > 0 and fanout["naive_agg_events_per_s"] > 0
    assert fanout["api_rps_with"] > 0 and fanout["api_rps_without"] > 0


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
        from harness import script_runs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    monkeypatch.setattr(script_runs.shutil, "which", lambda name: None)
    assert script_runs.cluster_figures(tmp_path, 1.0, quick=False) == {
        "status": "not measured: redis-server missing"
    }


def peer_replies(port: int, requests: list[bytes]) -> list[bytes]:
    """Each request's reply over one real WebSocket, with the ``time`` values blanked."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from harness.wsclient import masked_text, open_raw, read_frame
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    while time.time() % 60 > 55:  # the weight count restarts each minute: not mid-sequence
        time.sleep(0.5)
    out = []
    with open_raw(port) as sock:
        for request in requests:
            sock.sendall(masked_text(request))
            out.append(re.sub(rb'"time":\d+', b'"time":T', read_frame(sock)))
    return out


PEER_REQUESTS = [
    b'{"id":"0e1b5a2c-1","method":"ticker.price","params":{"symbol":"BTCUSDT"}}',
    b'{"id":42,"method":"ticker.price","params":{"symbol":"ETHUSDT"}}',
    b'{"method":"ticker.price","params":{"symbol":"SYM0003USDT"}}',
    b'{"id":"u","method":"ticker.price","params":{"symbol":"NOPEUSDT"}}',
    b'{"id":7,"method":"ticker.price"}',
    b'{"id":8,"method":"time"}',
    b'{"id":9,"method":',
    b"[1,2]",
]


@pytest.mark.timeout(300)
def test_peer_servers_answer_ticker_price_like_the_naive_server(tmp_path: Path) -> None:
    """The Node peers, installed and started as the harness does, give the naive server's
    replies byte for byte (times aside) over a real socket; loadgen verifies them too."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to install and run the peers")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from harness.peers import PEERS, prepare_peers, wanted_versions
        from harness.procs import Servers, build_loadgen
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    peers = prepare_peers()
    statuses = {p["status"] for p in peers.values()}
    if len(peers) > 1 and len(statuses) == 1 and statuses != {"ready"}:
        pytest.skip(f"the peers could not be installed: {statuses.pop()}")
    servers = Servers(tmp_path, tmp_path / "unused.json", 5, False, True, peers)
    with servers.naive() as srv:
        want = peer_replies(srv.port, PEER_REQUESTS)
    assert want[0].startswith(b'{"id":"0e1b5a2c-1","status":200,"result":{"symbol":"BTCUSDT"')
    assert b'"price":"3.76"' in want[2] and b'"count":3' in want[2]
    loadgen = build_loadgen()
    for name, (script, package) in PEERS.items():
        assert peers[name]["status"] == "ready", peers[name]["status"]
        measured = peers[name]["measured"]
        assert f"{package} {wanted_versions()[package]} (benchmarks/peers/{script})" in measured
        with servers.peer(name) as srv:
            assert peer_replies(srv.port, PEER_REQUESTS) == want, name
            argv = [str(loadgen), "-h", "127.0.0.1", "-p", str(srv.port), "-u", "/ws-fapi/v1",
                    "-w", "0", "-d", "0.5", "-j", "-s", "BTCUSDT,ETHUSDT", "-c", "4", "-k", "8"]  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, f"{name}: {done.stdout[-600:]} {done.stderr[-600:]}"
            assert json.loads(done.stdout.splitlines()[-1])["responses"] > 0


def test_a_peer_that_cannot_start_is_reported_not_measured(tmp_path: Path) -> None:
    """A peer that is not installed gives "not measured: <why>" rows, not a failed run."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from harness.loadgen import block_uws
        from harness.metrics import summarise
        from harness.procs import Servers
        from harness.report import md_loadgen
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    servers = Servers(tmp_path, tmp_path / "unused.json", 5, False, True,
                      {"uws": {"status": "not measured: npm not found"}})  # fmt: skip
    rep: dict[str, Any] = {"single-pipelined": {}, "single-unpipelined": {}}
    block_uws(cast(Any, SimpleNamespace(servers=servers)), rep)
    assert rep["single-pipelined"]["uws"] == {"status": "not measured: npm not found"}
    assert rep["single-unpipelined"]["uws"] == {"status": "not measured: npm not found"}
    rows = {(r["scenario"], r["metric"]): r for r in summarise([rep])}
    for scenario in ("single-pipelined", "single-unpipelined"):
        assert rows[(scenario, "tickerd / uWebSockets.js")]["verdict"] == "not measured"
        assert rows[(scenario, "tickerd / naive")]["verdict"] == "ERR"  # nothing else ran
    assert "| 1 | uws | not measured: npm not found |" in "\n".join(
        md_loadgen([rep], "single-pipelined", ["uws"])
    )
