"""``tickerd symbols fetch`` writes an exchangeInfo file from a Binance-compatible REST URL
(here the fake upstream, tests/fake_binance.py), which ``--symbols-file`` then serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fake_binance import ThreadedFake
from tickerd import SymbolUniverse

pytestmark = pytest.mark.timeout(60)


def fetch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.run(
        [sys.executable, "-m", "tickerd", "symbols", "fetch", *args],
        capture_output=True, text=True, timeout=30, check=False, env=env,
    )  # fmt: skip


@pytest.fixture
def upstream() -> Any:
    threaded = ThreadedFake()
    try:
        yield threaded.fake
    finally:
        threaded.close()


def test_fetch_writes_a_file_that_serve_loads(tmp_path: Path, upstream: Any, server: Any) -> None:
    upstream.list_symbol("ETHUSDT", "NEWUSDT")
    upstream.symbol_entry("XRPUSDT")["status"] = "SETTLING"
    out = tmp_path / "exchange_info.json"
    result = fetch("--url", upstream.rest_url, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote 91 symbols (88 TRADING) to {out}"
    assert json.loads(out.read_text()) == upstream.exchange_info
    universe = SymbolUniverse.load(out)
    assert "NEWUSDT" in universe and not universe.get("XRPUSDT").trading  # type: ignore[union-attr]
    srv = server("--symbols-file", str(out))
    with srv.connect() as ws:
        ws.send('{"id":1,"method":"ticker.price","params":{"symbol":"NEWUSDT"}}')
        assert json.loads(ws.recv())["status"] == 200
        ws.send('{"id":2,"method":"ticker.price","params":{"symbol":"XRPUSDT"}}')
        assert json.loads(ws.recv())["error"]["code"] == -1121


@pytest.mark.parametrize("status", [451, 418])
def test_a_refusal_is_one_line_and_leaves_the_old_file(
    tmp_path: Path, upstream: Any, status: int
) -> None:
    out = tmp_path / "exchange_info.json"
    out.write_text("old")
    upstream.info_refusals.append((status, 60))
    result = fetch("--url", upstream.rest_url, "--out", str(out))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tickerd: GET ")
    assert f"HTTP {status}" in lines[0] and "Traceback" not in result.stderr
    assert out.read_text() == "old"


def test_not_an_exchange_info_document_or_no_server(tmp_path: Path, upstream: Any) -> None:
    out = tmp_path / "x.json"
    upstream.exchange_info = {"symbols": "nope"}
    result = fetch("--url", upstream.rest_url, "--out", str(out))
    assert result.returncode == 1 and "not a usable exchangeInfo document" in result.stderr
    assert not out.exists()
    result = fetch("--url", "http://127.0.0.1:9", "--out", str(out), "--timeout", "5")
    assert result.returncode == 1 and result.stderr.startswith("tickerd: GET http://127.0.0.1:9")
    assert len(result.stderr.strip().splitlines()) == 1
