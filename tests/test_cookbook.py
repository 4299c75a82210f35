"""The README's cookbook, run as printed.

Each fenced block tagged ``cookbook-NAME`` in README.md is read from the README itself and
executed here — there is no second copy to drift — with ``ws://127.0.0.1:9000`` and
``http://127.0.0.1:9001`` swapped for the URLs of a fresh in-process tickerd
(``tickerd_server``, the package's pytest plugin). Every block must have a
``test_recipe_NAME`` below and every such test a block. The ``cookbook-pytest`` block is
written into a scratch project and run by a fresh pytest, as a user's suite would be; the
``sh`` block's command lines go through ``tickerd.cli.main``.

While a recipe runs, an audit hook refuses any connection or name lookup that does not
stay on this machine, so a client that would reach out to Binance fails loudly here.
"""

from __future__ import annotations

import re
import shlex
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tickerd.cli import main
from tickerd.testing import TickerdServer

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK_RE = re.compile(r"^```(\w+) cookbook-([\w-]+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
DOC_WS = "ws://127.0.0.1:9000/ws-fapi/v1"
DOC_REST = "http://127.0.0.1:9001"
RECIPE_TIMEOUT_S = 30.0

# The SDK passes aiohttp a float ws_connect timeout, which aiohttp >= 3.10 deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:parameter 'timeout' of type 'float' is deprecated:DeprecationWarning"
)


def read_recipes() -> dict[str, tuple[str, str]]:
    """name -> (language, code) of every cookbook block in README.md."""
    found: dict[str, tuple[str, str]] = {}
    for lang, name, code in BLOCK_RE.findall(README.read_text("utf-8")):
        assert name not in found, f"two README blocks named cookbook-{name}"
        found[name] = (lang, code)
    return found


RECIPES = read_recipes()


# -- staying on this machine ----------------------------------------------------------------

_GUARD = {"on": False}
_LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1"}


def _local(host: Any) -> bool:
    return host in _LOCAL_HOSTS or (isinstance(host, str) and host.startswith("127."))


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _GUARD["on"]:
        return
    if event == "socket.connect":
        addr = args[1]
        if isinstance(addr, tuple) and not _local(addr[0]):
            raise PermissionError(f"cookbook test: connection to {addr} refused (not local)")
    elif event == "socket.getaddrinfo" and not _local(args[0]):
        raise PermissionError(f"cookbook test: lookup of {args[0]!r} refused (not local)")


sys.addaudithook(_audit)


@pytest.fixture
def local_only() -> Any:
    _GUARD["on"] = True
    try:
        yield
    finally:
        _GUARD["on"] = False


# -- running a recipe -------------------------------------------------------------------------


@pytest.fixture
def srv(tickerd_server: TickerdServer) -> TickerdServer:
    tickerd_server.set_price("BTCUSDT", "97000.10")
    return tickerd_server


def code_of(name: str, srv: TickerdServer) -> str:
    lang, code = RECIPES[name]
    assert lang == "python", f"cookbook-{name} is {lang}"
    assert DOC_WS in code or DOC_REST in code, f"cookbook-{name} names no tickerd URL"
    return code.replace(DOC_WS, srv.ws_url).replace(DOC_REST, srv.rest_url)


def run_recipe(name: str, srv: TickerdServer, capsys: pytest.CaptureFixture[str]) -> str:
    """Execute a python recipe in a thread of its own (bounded in time); return its stdout."""
    code = compile(code_of(name, srv), f"README.md[cookbook-{name}]", "exec")
    failure: list[BaseException] = []

    def target() -> None:
        try:
            exec(code, {"__name__": "__main__"})  # noqa: S102 - the README's own code
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"cookbook-{name}", daemon=True)
    thread.start()
    thread.join(RECIPE_TIMEOUT_S)
    assert not thread.is_alive(), f"cookbook-{name} did not finish in {RECIPE_TIMEOUT_S} s"
    if failure:
        raise failure[0]
    return capsys.readouterr().out


def test_every_recipe_has_a_test_and_every_test_a_recipe() -> None:
    assert set(RECIPES) == set(_RECIPE_TESTS), (sorted(RECIPES), sorted(_RECIPE_TESTS))


# -- the recipes ----------------------------------------------------------------------------


def test_recipe_client(srv: TickerdServer, capsys: Any, local_only: None) -> None:
    out = run_recipe("client", srv, capsys)
    # weight: handshake 5 + one symbol 1 + all symbols 2
    assert out == "BTCUSDT 97000.10\nTrue 8 2400\n400 -1121 Invalid symbol.\n"


def test_recipe_sync_client(srv: TickerdServer, capsys: Any, local_only: None) -> None:
    assert run_recipe("sync-client", srv, capsys) == "3150.00\n"


def test_recipe_cli(
    srv: TickerdServer, capsys: Any, monkeypatch: pytest.MonkeyPatch, local_only: None
) -> None:
    lang, code = RECIPES["cli"]
    assert lang == "sh"
    monkeypatch.setenv("TICKERD_URL", srv.ws_url)
    lines = [line for line in code.splitlines() if line.strip()]
    assert [shlex.split(line, comments=True)[:2] for line in lines] == [
        ["tickerd", "price"],
        ["tickerd", "price"],
        ["tickerd", "watch"],
    ]
    price_one, price_all, watch = (shlex.split(line, comments=True)[1:] for line in lines)

    assert main(price_one) == 0
    assert capsys.readouterr().out.strip() == lines[0].split("#", 1)[1].strip()

    assert main(price_all) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["SYMBOL", "PRICE", "TIME"]
    assert ["BTCUSDT", "97000.10", "2023-11-14T22:13:20.000Z"] in [r.split() for r in table]

    assert main([*watch, "--count", "1"]) == 0  # the recipe runs until Ctrl-C
    frame = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in frame[2:]] == [
        ["BTCUSDT", "97000.10"],
        ["ETHUSDT", "3150.00"],
    ]


def test_recipe_sdk(srv: TickerdServer, capsys: Any, local_only: None) -> None:
    pytest.importorskip("binance_sdk_derivatives_trading_usds_futures")
    assert run_recipe("sdk", srv, capsys) == "97000.10\n"


def test_recipe_python_binance(
    srv: TickerdServer, capsys: Any, monkeypatch: pytest.MonkeyPatch, local_only: None
) -> None:
    pytest.importorskip("binance")
    from binance import AsyncClient
    from binance.ws.reconnecting_websocket import ReconnectingWebsocket

    # The recipe sets a class attribute: put it back afterwards.
    monkeypatch.setattr(AsyncClient, "WS_FUTURES_URL", AsyncClient.WS_FUTURES_URL)
    # Closing waits out the read loop's 10 s receive timeout: shorten it for the test.
    monkeypatch.setattr(ReconnectingWebsocket, "TIMEOUT", 1)
    assert run_recipe("python-binance", srv, capsys) == "97000.10\n"


def test_recipe_python_binance_rest(srv: TickerdServer, capsys: Any, local_only: None) -> None:
    pytest.importorskip("binance")
    assert run_recipe("python-binance-rest", srv, capsys) == "97000.10\n"


def test_recipe_ccxt(srv: TickerdServer, capsys: Any, local_only: None) -> None:
    pytest.importorskip("ccxt")
    assert run_recipe("ccxt", srv, capsys) == "97000.10\n"


def test_recipe_ccxt_ws(srv: TickerdServer, capsys: Any, local_only: None) -> None:
    pytest.importorskip("ccxt.pro")
    assert run_recipe("ccxt-ws", srv, capsys) == "97000.10\n"


def test_recipe_ubwa(srv: TickerdServer, capsys: Any, local_only: None) -> None:
    pytest.importorskip("unicorn_binance_websocket_api")
    assert run_recipe("ubwa", srv, capsys) == "97000.10\n"


def test_recipe_pytest(pytester: pytest.Pytester) -> None:
    lang, code = RECIPES["pytest"]
    assert lang == "python"
    pytester.makepyfile(test_my_bot=code)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)


_RECIPE_TESTS = {
    name.removeprefix("test_recipe_").replace("_", "-")
    for name, value in list(globals().items())
    if name.startswith("test_recipe_") and callable(value)
}
