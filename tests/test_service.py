"""The service's lifecycle: a start that fails halfway stops what it had started, the
start-up summary names every feed, store and surface, and library code leaves global
state (the garbage collector) alone."""

from __future__ import annotations

import asyncio
import gc
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tickerd import cli
from tickerd.app import Service
from tickerd.config import Settings

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def can_bind(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("taken", ["port", "rest_port", "ops_port", "control_port"])
def test_a_port_in_use_stops_everything_started_before_it(tmp_path: Path, taken: str) -> None:
    store = tmp_path / "prices.sqlite"
    ports = {
        "port": free_port(),
        "rest_port": free_port(),
        "ops_port": free_port(),
        "control_port": free_port(),
    }
    push_port = free_port()
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", ports[taken]))
        holder.listen(1)
        settings = Settings(
            host="127.0.0.1",
            **ports,
            control_token="t",
            feed="synthetic,push",
            push_symbols="BTCUSDT",
            push_token="p",
            push_port=push_port,
            tick_rate=1000.0,
            store=str(store),
        )

        async def main() -> dict[str, Any]:
            service = Service(settings)
            with pytest.raises(OSError):
                await service.start()
            others = asyncio.all_tasks() - {asyncio.current_task()}
            before = {t.symbol: t.price for t in service.book.ticks()}
            await asyncio.sleep(0.2)  # a synthetic task still running would move prices
            after = {t.symbol: t.price for t in service.book.ticks()}
            return {"tasks": others, "moved": before != after, "service": service}

        seen = asyncio.run(main())
    assert seen["tasks"] == set(), seen["tasks"]
    assert not seen["moved"]
    # Every port it had opened is free again (the taken one was never its own).
    for name, port in (*ports.items(), ("push_port", push_port)):
        if name != taken:
            assert can_bind(port), f"{name} {port} still bound"
    # The store was closed: another writer may take the file at once.
    with sqlite3.connect(store, timeout=0) as db:
        db.execute("BEGIN EXCLUSIVE")
        db.rollback()
    assert seen["service"].store._conn is None


def test_startup_summary_names_feeds_store_and_every_surface(server, tmp_path: Path) -> None:
    srv = server(
        "--tick-rate", "0",
        "--feed", "synthetic,push",
        "--push-symbols", "BTCUSDT,ETHUSDT",
        "--push-port", "0",
        "--store", str(tmp_path / "p.sqlite"),
        "--control-port", "0",
        env={"TICKERD_PUSH_TOKEN": "p", "TICKERD_CONTROL_TOKEN": "c"},
        minute_margin=0,
    )  # fmt: skip
    log = srv.log()
    from tickerd.symbols import SymbolUniverse

    trading = len(SymbolUniverse.default().trading())
    assert f"tickerd store: {tmp_path / 'p.sqlite'} (0 prices restored)" in log
    assert f"tickerd feed synthetic: {trading - 2} symbols" in log
    assert "tickerd feed push: 2 symbols (BTCUSDT, ETHUSDT)" in log
    assert "tickerd push ready: http://127.0.0.1:" in log
    assert "tickerd REST ready: http://127.0.0.1:" in log
    assert "tickerd control ready: http://127.0.0.1:" in log
    # The push feed's symbols count though nothing was pushed yet.
    assert srv.symbols == trading
    # "ready" closes the summary (a line the running service logs later may follow it).
    lines = log.splitlines()
    ready = next(i for i, line in enumerate(lines) if "tickerd ready: " in line)
    assert lines[ready].split("tickerd ready: ")[1] == f"{srv.url} ({trading} symbols)"
    for needle in ("store: ", "feed synthetic: ", "feed push: ", "push ready: ", "REST ready: "):
        assert any(f"tickerd {needle}" in line for line in lines[:ready]), needle


def test_startup_summary_counts_a_step_replays_symbols(server, tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT-trades-2024-01-01.csv").write_text(
        "id,price,qty,quote_qty,time,is_buyer_maker\n1,42000.10,0.1,4200.01,1704067200000,true\n",
        encoding="ascii",
    )
    srv = server(
        "--feed", "replay", "--replay-path", str(tmp_path), "--replay-speed", "step",
        minute_margin=0,
    )  # fmt: skip
    assert "tickerd feed replay: 1 symbol (BTCUSDT)" in srv.log()
    assert srv.symbols == 1


def test_service_start_leaves_the_garbage_collector_alone() -> None:
    frozen = gc.get_freeze_count()

    async def main() -> None:
        service = Service(Settings(port=0, rest_port=-1, tick_rate=0, ops_port=-1))
        await service.start()
        await service.stop()

    asyncio.run(main())
    assert gc.get_freeze_count() == frozen


def test_tickerd_serve_freezes_the_collector_once_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    async def serve_forever(self: Service, *, on_ready: Any = None) -> None:
        seen.append(on_ready)

    monkeypatch.setattr(Service, "serve_forever", serve_forever)
    assert cli.main(["serve", "--port", "0", "--rest-port", "-1"]) == 0
    assert seen == [gc.freeze]
