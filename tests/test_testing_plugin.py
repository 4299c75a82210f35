"""The pytest plugin (``tickerd.testing``), used the way a user's suite uses it.

The pytester tests write a test module into a scratch directory and run pytest on it in a
fresh process: the ``tickerd_server`` fixture must come from the installed package's
``pytest11`` entry point alone (no conftest, no ``pytest_plugins``), and the user's test
talks to it with a plain ``websockets`` client and ``urllib``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from importlib import metadata

import pytest
from websockets.sync.client import connect

from tickerd.book import TickRejected
from tickerd.control import ControlError
from tickerd.testing import DEFAULT_START_MS, TickerdServer

pytest_plugins = ["pytester"]

USER_SUITE = """
import json
import urllib.request

import pytest
from websockets.sync.client import connect


def ask(url, **params):
    with connect(url, proxy=None, open_timeout=5) as ws:
        ws.send(json.dumps({"id": "q1", "method": "ticker.price", "params": params}))
        return json.loads(ws.recv(timeout=5))


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_price_and_time_under_my_control(tickerd_server):
    start = tickerd_server.now_ms
    tickerd_server.set_price("BTCUSDT", "97000.10")
    assert tickerd_server.advance(1_500) == start + 1_500
    tickerd_server.set_price("ETHUSDT", "3150.25")

    reply = ask(tickerd_server.ws_url, symbol="BTCUSDT")
    assert reply["result"] == {"symbol": "BTCUSDT", "price": "97000.10", "time": start}
    reply = ask(tickerd_server.ws_url, symbol="ETHUSDT")
    assert reply["result"]["time"] == start + 1_500

    base = tickerd_server.rest_url
    assert get(base + "/fapi/v1/time") == {"serverTime": start + 1_500}
    assert get(base + "/fapi/v2/ticker/price?symbol=BTCUSDT")["price"] == "97000.10"

    tickerd_server.clear_price("BTCUSDT")
    assert ask(tickerd_server.ws_url, symbol="BTCUSDT")["error"]["code"] == -1121


@pytest.mark.tickerd(prices="none", weight_limit=6)
def test_options_from_the_marker(tickerd_server):
    with connect(tickerd_server.ws_url, proxy=None) as ws:  # the handshake costs 5

        def send(**params):
            ws.send(json.dumps({"id": "a", "method": "ticker.price", "params": params}))
            return json.loads(ws.recv(timeout=5))

        assert send(symbol="BTCUSDT")["error"]["code"] == -1121  # no prices at all
        assert send(symbol="BTCUSDT")["status"] == 429  # weight 7 > 6
        tickerd_server.advance(60_000)  # the next minute: a fresh window
        tickerd_server.set_price("BTCUSDT", "97000.10")
        reply = send(symbol="BTCUSDT")
        assert reply["result"]["price"] == "97000.10"
        assert (reply["rateLimits"][0]["count"], reply["rateLimits"][0]["limit"]) == (1, 6)


def test_each_test_gets_a_fresh_server(tickerd_server):
    assert tickerd_server.price("BTCUSDT") == "97000.00"  # the synthetic reference price
"""


def test_a_users_suite_gets_the_fixture_from_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_my_bot=USER_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)


def test_the_plugin_is_registered_and_can_be_turned_off(pytester: pytest.Pytester) -> None:
    (entry,) = [e for e in metadata.entry_points(group="pytest11") if e.name == "tickerd"]
    assert entry.value == "tickerd.testing"
    pytester.makepyfile(test_off="def test_x(tickerd_server):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:tickerd", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'tickerd_server' not found*"])
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.tickerd(**options)*"])


def test_importing_the_plugin_is_cheap() -> None:
    code = (
        "import sys, tickerd.testing\n"
        "heavy = ('picows', 'uvloop', 'aiohttp', 'websockets', 'tickerd.app', 'tickerd.client')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "[]"


def test_without_uvloop_the_server_runs_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    with TickerdServer() as srv:
        assert "uvloop" not in type(srv.call(_loop_of_server)).__module__
        with connect(srv.ws_url, proxy=None) as ws:
            ws.send(
                json.dumps({"id": 1, "method": "ticker.price", "params": {"symbol": "ETHUSDT"}})
            )
            assert json.loads(ws.recv(timeout=5))["result"]["price"] == "3150.00"


def _loop_of_server() -> object:
    import asyncio

    return asyncio.get_running_loop()


def test_helper_methods_are_thread_safe_and_checked() -> None:
    srv = TickerdServer(prices="none", rest=False)
    with pytest.raises(RuntimeError, match="not started"):
        srv.ws_url  # noqa: B018
    with srv:
        assert srv.now_ms == DEFAULT_START_MS
        with pytest.raises(RuntimeError, match="without REST"):
            srv.rest_url  # noqa: B018
        with pytest.raises(TickRejected, match="multiple of 0.10"):
            srv.set_price("BTCUSDT", "97000.15")
        with pytest.raises(TickRejected, match="unknown symbol"):
            srv.set_price("NOPEUSDT", "1")
        with pytest.raises(TickRejected, match="decimal string"):
            srv.set_price("BTCUSDT", 97000.1)  # type: ignore[arg-type]
        # The control plane's clock.advance rule: never backward (set_time goes backward).
        with pytest.raises(ControlError, match="'ms' must be at least 0") as err:
            srv.advance(-1)
        assert err.value.status == 400
        assert srv.now_ms == DEFAULT_START_MS
        # Many threads at once: every update lands, none is lost or torn.
        threads = [
            threading.Thread(target=srv.advance, args=(1,), name=f"advance-{i}") for i in range(20)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert srv.now_ms == DEFAULT_START_MS + 20
        srv.set_price("BTCUSDT", "97000.20", time_ms=5)
        assert srv.price("BTCUSDT") == "97000.20"
        srv.clear_price("BTCUSDT")
        assert srv.price("BTCUSDT") is None
    srv.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        srv.set_price("BTCUSDT", "1.00")
    with pytest.raises(ValueError, match="prices"):
        TickerdServer(prices="random")  # type: ignore[arg-type]


def test_a_server_that_cannot_start_says_why() -> None:
    with pytest.raises(RuntimeError, match="could not start"):
        TickerdServer(no_such_setting=1).start()


# -- the fixture's clock and the control plane's: same names, same rules ----------------------


def test_set_time_goes_backward_like_clock_set() -> None:
    with TickerdServer(prices="none") as srv:
        assert srv.set_time(DEFAULT_START_MS - 60_000) == DEFAULT_START_MS - 60_000
        assert srv.now_ms == DEFAULT_START_MS - 60_000
        srv.set_price("BTCUSDT", "97000.10")
        with connect(srv.ws_url, proxy=None) as ws:
            ws.send('{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
            assert json.loads(ws.recv(timeout=5))["result"]["time"] == DEFAULT_START_MS - 60_000
        assert srv.control_state()["clock"]["now_ms"] == DEFAULT_START_MS - 60_000


def test_set_time_after_advance_serves_exactly_that_time() -> None:
    with TickerdServer(prices="none") as srv:
        srv.advance(5_000)
        srv.control("clock.advance", ms=7_000)
        srv.set_time(DEFAULT_START_MS + 1_000)
        assert srv.now_ms == DEFAULT_START_MS + 1_000
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(srv.rest_url + "/fapi/v1/time", timeout=5) as response:
            assert json.loads(response.read()) == {"serverTime": DEFAULT_START_MS + 1_000}


def test_fixture_clock_methods_are_the_control_operations() -> None:
    with TickerdServer(prices="none") as srv:
        assert srv.freeze() == DEFAULT_START_MS
        assert srv.control_state()["clock"]["frozen"] is True
        assert srv.advance(250) == DEFAULT_START_MS + 250
        assert srv.unfreeze() == DEFAULT_START_MS + 250
        assert srv.reset_clock() == DEFAULT_START_MS
        with pytest.raises(ControlError, match="'now_ms' must be at least 0"):
            srv.set_time(-1)


def test_set_price_follows_the_tick_time_rules_of_price_set() -> None:
    with TickerdServer(prices="none") as srv:
        with pytest.raises(TickRejected, match="ahead of the service clock"):
            srv.set_price("BTCUSDT", "1.00", time_ms=DEFAULT_START_MS + 10_001)
        with pytest.raises(TickRejected, match="64-bit"):
            srv.set_price("BTCUSDT", "1.00", time_ms=2**63)
        srv.set_price("BTCUSDT", "1.00", time_ms=DEFAULT_START_MS + 10_000)
        assert srv.price("BTCUSDT") == "1.00"


def test_fixture_start_leaves_the_garbage_collector_alone() -> None:
    import gc

    frozen = gc.get_freeze_count()
    with TickerdServer():
        assert gc.get_freeze_count() == frozen
