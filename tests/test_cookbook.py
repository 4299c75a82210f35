"""Every block of the README, run as printed.

Each fenced block of README.md is tagged (```` ```sh thirty-seconds ````, ```` ```python
cookbook-client ````) and read from the README itself here — there is no second copy to
drift. ``cookbook-*`` Python blocks run in this process against a fresh in-process tickerd
(``tickerd_server``, the package's pytest plugin), with ``ws://127.0.0.1:9000`` and
``http://127.0.0.1:9001`` swapped for its URLs; every block must have a ``test_recipe_NAME``
below and every such test a block. Shell blocks run in ``bash`` as printed from a scratch
project directory whose ``.venv`` is this test run's environment (the README's install),
from a cold start: a block that starts ``tickerd serve`` starts a real server process, with
the ports 9000-9004 swapped for free ones. The ``cookbook-pytest`` block is written into a
scratch project and run by a fresh pytest in which only what a plain ``pip install tickerd``
brings can be imported. :func:`test_every_readme_block_is_run` keeps the list complete.

While a Python recipe runs, an audit hook refuses any connection or name lookup that does
not stay on this machine, so a client that would reach out to Binance fails loudly here.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from importlib.metadata import entry_points, packages_distributions, requires
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import pytest

from tickerd import RateLimitError, SyncClient
from tickerd.testing import TickerdServer

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK_RE = re.compile(r"^```(\w+) cookbook-([\w-]+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
FENCE_RE = re.compile(r"^```(\w*)(?: ([\w-]+))?\n(.*?)^```$", re.MULTILINE | re.DOTALL)
DATA = Path(__file__).resolve().parent / "data"
SHELL_TIMEOUT_S = 60.0
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


def test_recipe_cli(srv: TickerdServer, project: Path) -> None:
    lang, code = RECIPES["cli"]
    assert lang == "sh"
    env = shell_env({}, TICKERD_URL=srv.ws_url, TICKERD_REST_URL=srv.rest_url)
    lines = [line for line in code.splitlines() if line.strip()]
    assert [shlex.split(line, comments=True)[:2] for line in lines] == [
        [".venv/bin/tickerd", "price"],
        [".venv/bin/tickerd", "price"],
        [".venv/bin/tickerd", "price"],
        [".venv/bin/tickerd", "watch"],
    ]
    price_one, price_two, price_all, watch = lines

    def run(line: str) -> str:
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=SHELL_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert (done.returncode, done.stderr) == (0, ""), (line, done.stderr)
        return done.stdout

    assert run(price_one).strip() == price_one.split("#", 1)[1].strip()
    assert run(price_two) == "BTCUSDT 97000.10\nETHUSDT 3150.00\n"
    table = run(price_all).splitlines()
    assert table[0].split() == ["SYMBOL", "PRICE", "TIME"]
    assert ["BTCUSDT", "97000.10", "2023-11-14T22:13:20.000Z"] in [r.split() for r in table]

    # The recipe runs until Ctrl-C: wait for its first frame (stdout is a pipe here, so
    # plain frames; tests/test_watch.py drives it on a terminal), then press Ctrl-C.
    with Shell(watch, project, env) as process:
        frame = read_until(process, b"\n\n", SHELL_TIMEOUT_S).decode().split("\n\n")[0]
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=SHELL_TIMEOUT_S)
    assert process.returncode == 0 and err == b"", err
    rows = frame.splitlines()
    assert [line.split()[:2] for line in rows[2:]] == [
        ["BTCUSDT", "97000.10"],
        ["ETHUSDT", "3150.00"],
    ]
    assert rows[2].split()[4] == "0.0"  # the age by the server's (manual) clock


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


def plain_install_modules() -> set[str]:
    """Top-level modules a plain ``pip install tickerd`` provides (its own and its direct
    dependencies'), besides the standard library."""
    dists = packages_distributions()
    by_dist: dict[str, set[str]] = {}
    for module, names in dists.items():
        for name in names:
            by_dist.setdefault(canonical(name), set()).add(module)
    wanted = {"tickerd"}
    for req in requires("tickerd") or []:
        if "extra ==" not in req:
            wanted.add(canonical(re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0]))
    return {m for d in wanted for m in by_dist.get(d, set())}


def extra_only_modules() -> set[str]:
    """Top-level modules only tickerd's extras (test, interop, dev) bring, pytest aside."""
    dists = packages_distributions()
    extras = set()
    for req in requires("tickerd") or []:
        if "extra ==" in req:
            extras.add(canonical(re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0]))
    extras -= {"pytest", "pytest-timeout"}
    plain = plain_install_modules()
    return {
        m
        for m, names in dists.items()
        if any(canonical(n) in extras for n in names) and m not in plain and m.isidentifier()
    }


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_recipe_pytest(pytester: pytest.Pytester) -> None:
    lang, code = RECIPES["pytest"]
    assert lang == "python"
    # Every import is one a project that installed only tickerd (and pytest) can make.
    allowed = plain_install_modules() | set(sys.stdlib_module_names) | {"pytest"}
    imported = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= allowed, imported - allowed
    # And it runs with everything the extras bring made unimportable (websockets…).
    blocked = sorted(extra_only_modules())
    assert "websockets" in blocked
    pytester.makeconftest(
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    for loaded in [m for m in sys.modules if m == name or m.startswith(name + '.')]:\n"
        "        del sys.modules[loaded]\n"
        "    sys.modules[name] = None  # import fails, as in a plain install\n"
    )
    pytester.makepyfile(test_my_bot=code)
    # pytest plugins of those packages (hypothesis') are not there in a plain install either
    extra_plugins = [
        arg
        for ep in entry_points(group="pytest11")
        if ep.dist is not None and ep.dist.name not in ("tickerd", "pytest-timeout")
        for arg in ("-p", f"no:{ep.name}")
    ]
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *extra_plugins, "-q")
    result.assert_outcomes(passed=1)


# -- shell blocks ---------------------------------------------------------------------------

#: Blocks this module does not run, and where they are run instead or why not.
NOT_RUN_HERE = {
    "install": "tests/test_fresh_install.py runs it in a copy of the repository",
    "benchmark-run": "a 4-minute measurement; tests/test_benchmarks.py runs its --quick form",
    "scenario-example": "loaded and run by tests/test_scenario.py",
    "healthz-example": "tests/test_health.py checks each verdict of a mirror starting, down and up",
    "kubernetes-probes": "a Kubernetes manifest fragment; the probes' /healthz is tests/test_health.py",
    "fuzz-long": "the fuzzer's long mode (minutes); tests/test_fuzz.py runs the same cases, fewer",
    "startup-summary": "tests/test_service.py checks these lines of a real start-up",
    "tls-serve": "tests/test_tls.py serves with these flags, certificates made by the test",
    "recording-format": "tests/test_recording.py reads the files a recording mirror writes",
    "recording-replay": "needs Binance; tests/test_recording.py records a fake upstream, replays it",
    "symbols-fetch": "needs Binance; tests/test_symbols_fetch.py fetches from a fake upstream",
    "compiled-path": "tests/test_hotpath.py serves and tests with TICKERD_PURE=1; "
    "tests/test_fresh_install.py builds without a compiler",
    "scale-out": "a machine per node; tests/test_workers.py runs --workers, "
    "tests/test_cluster_redis.py two nodes on a real redis-server",
}


def readme_blocks() -> dict[str, tuple[str, str]]:
    """tag -> (language, code) of every fenced block in README.md (untagged ones: '')."""
    found: dict[str, tuple[str, str]] = {}
    for n, (lang, tag, code) in enumerate(FENCE_RE.findall(README.read_text("utf-8"))):
        key = tag or f"<untagged block {n + 1}: {code[:40]!r}>"
        assert key not in found, f"two README blocks tagged {tag}"
        found[key] = (lang, code)
    return found


BLOCKS = readme_blocks()


def test_every_readme_block_is_run() -> None:
    run_here = {f"cookbook-{name}" for name in _RECIPE_TESTS} | set(_SHELL_TESTS)
    assert set(BLOCKS) == run_here | set(NOT_RUN_HERE), sorted(
        set(BLOCKS) ^ (run_here | set(NOT_RUN_HERE))
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch directory laid out as after the README's install: ``.venv`` is the
    environment this test runs in (tickerd installed, ``.venv/bin/tickerd`` there)."""
    home = tmp_path / "project"
    home.mkdir()
    (home / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    assert (home / ".venv" / "bin" / "tickerd").exists()
    return home


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def readme_ports() -> dict[int, int]:
    """tickerd's documented ports (WebSocket API, REST, push, ops, control) -> free ones."""
    return dict(zip((9000, 9001, 9002, 9003, 9004), free_ports(5), strict=True))


def localized(code: str, ports: dict[int, int]) -> str:
    return re.sub(r"\b(900[0-4])\b", lambda m: str(ports[int(m[1])]), code)


def shell_env(ports: dict[int, int], **extra: str) -> dict[str, str]:
    """This environment without TICKERD_* settings, the default ports moved to ``ports``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKERD_")}
    if ports:
        env.update(
            TICKERD_PORT=str(ports[9000]),
            TICKERD_REST_PORT=str(ports[9001]),
            TICKERD_PUSH_PORT=str(ports[9002]),
            TICKERD_OPS_PORT=str(ports[9003]),
        )
    env.update(extra)
    return env


class Shell:
    """``bash -c code`` in its own process group; the whole group is ended on exit, and
    what it wrote is kept in ``out`` and ``err``."""

    def __init__(self, code: str, cwd: Path, env: dict[str, str]) -> None:
        self.out = self.err = b""
        self.process = subprocess.Popen(
            ["bash", "-c", code],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def __enter__(self) -> subprocess.Popen[bytes]:
        return self.process

    def __exit__(self, *exc: object) -> None:
        out, err = end_group(self.process)
        self.out += out
        self.err += err


def end_group(process: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """SIGTERM every process of the block's group (a server it left running), then wait."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.kill()
    if process.stdout is None or process.stdout.closed:
        process.wait(15)
        return b"", b""
    return process.communicate(timeout=15)


def read_until(process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} within {timeout} s: {data[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"output ended before {marker!r}: {data[-500:]!r}"
            data += chunk
    return data


def wait_healthy(port: int, timeout: float = SHELL_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                health: dict[str, Any] = json.load(response)
                return health
        except (URLError, ConnectionError, TimeoutError):
            assert time.monotonic() < deadline, f"no /healthz on port {port} in {timeout} s"
            time.sleep(0.1)


def run_block(tag: str, project: Path, env: dict[str, str], ports: dict[int, int]) -> Any:
    """Run a shell block to its end, then stop the servers it left running; return what
    the block and they wrote (stdout, stderr)."""
    lang, code = BLOCKS[tag]
    assert lang == "sh"
    block = Shell(localized(code, ports), project, env)
    with block as process:
        process.wait(SHELL_TIMEOUT_S)
    err = block.err.decode(errors="replace")
    assert process.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return block.out.decode(), err


def test_block_thirty_seconds(project: Path) -> None:
    ports = readme_ports()
    out, err = run_block("thirty-seconds", project, shell_env(ports), ports)
    lang, printed = BLOCKS["thirty-seconds-output"]
    assert lang == "json"
    expected, reply = json.loads(printed), json.loads(out)
    assert list(reply) == list(expected) == ["id", "status", "result", "rateLimits"]
    assert (reply["id"], reply["status"]) == (expected["id"], expected["status"]) == ("1", 200)
    assert reply["rateLimits"] == expected["rateLimits"]  # count 6, as the README explains
    result = reply["result"]
    assert list(result) == ["symbol", "price", "time"] and result["symbol"] == "BTCUSDT"
    assert re.fullmatch(r"[0-9]+\.[0-9]{2}", result["price"]), result  # synthetic: it moves
    assert f"tickerd ready: ws://127.0.0.1:{ports[9000]}/ws-fapi/v1" in err


def test_block_thirty_seconds_output() -> None:
    # What the block prints is compared with a live reply by test_block_thirty_seconds;
    # here: the count the README explains is the handshake's weight plus one request's.
    from tickerd import weights

    printed = json.loads(BLOCKS["thirty-seconds-output"][1])
    count = printed["rateLimits"][0]["count"]
    assert count == weights.WS_HANDSHAKE_WEIGHT + weights.WS_API["ticker.price"].of(True) == 6


def test_block_push_example(project: Path) -> None:
    ports = readme_ports()
    code = BLOCKS["push-example"][1]
    out, _ = run_block("push-example", project, shell_env(ports), ports)
    printed = code.strip().splitlines()[-1].removeprefix("# ")
    assert json.loads(out) == json.loads(printed) == {"accepted": 1, "rejected": []}


def test_block_control_example(project: Path) -> None:
    ports = readme_ports()
    lang, code = BLOCKS["control-example"]
    assert lang == "sh"
    # The block leaves its server running: check the fault it armed, then stop it.
    block = Shell(localized(code, ports), project, shell_env(ports))
    with block as process:
        assert process.wait(SHELL_TIMEOUT_S) == 0
        answer = json.loads(read_until(process, b"}", SHELL_TIMEOUT_S))
        assert "error" not in answer, answer
        url = f"ws://127.0.0.1:{ports[9000]}/ws-fapi/v1"
        with (
            SyncClient(url, respect_retry_after=False) as client,
            pytest.raises(RateLimitError) as info,
        ):
            client.ticker_price("BTCUSDT")
    assert info.value.status == 429 and info.value.code == -1003
    assert b"Traceback" not in block.err


def test_block_ops_example(project: Path) -> None:
    ports = readme_ports()
    lang, code = BLOCKS["ops-example"]
    assert lang == "sh"
    # No browser here: xdg-open fetches the page it is given, as a browser would.
    opener = 'xdg-open() { curl -sf -o dashboard.html "$1"; }\n'
    block = Shell(opener + localized(code, ports), project, shell_env(ports))
    with block as process:
        assert process.wait(SHELL_TIMEOUT_S) == 0
    out, err = block.out.decode(), block.err.decode(errors="replace")
    assert "Traceback" not in err, err[-3000:]
    assert f"tickerd ops ready: http://127.0.0.1:{ports[9003]}" in err
    lines = out.splitlines()
    metrics = [line for line in lines if not line.startswith("{")]
    assert "# TYPE tickerd_requests_total counter" in metrics, out[:3000]
    assert all("tickerd_requests_total" in line for line in metrics), metrics
    status = json.loads("\n".join(line for line in lines if line.startswith("{")))
    assert len(status["clients"]) <= 5 and status["clients_total"] >= len(status["clients"])
    assert [(f["name"], f["state"]) for f in status["feeds"]] == [("synthetic", "up")]
    page = (project / "dashboard.html").read_text("utf-8")
    assert "<title>tickerd dashboard</title>" in page


def test_block_replay_example(project: Path, tmp_path: Path) -> None:
    # ~/binance/um/daily/trades, as the README names it, holds daily trades files.
    home = tmp_path / "home"
    trades = home / "binance" / "um" / "daily" / "trades"
    trades.mkdir(parents=True)
    for sample in (DATA / "replay").glob("*-trades-????-??-??.csv"):
        shutil.copy(sample, trades / sample.name)
    assert len(list(trades.iterdir())) >= 2
    ports = readme_ports()
    lang, code = BLOCKS["replay-example"]
    assert lang == "sh"
    block = Shell(localized(code, ports), project, shell_env(ports, HOME=str(home)))
    with block as process:
        health = wait_healthy(ports[9000])
        with urlopen(f"http://127.0.0.1:{ports[9001]}/fapi/v1/time", timeout=5) as response:
            served = json.load(response)["serverTime"]
        assert process.poll() is None  # it serves until stopped
    assert health["status"] == "ok"
    # the served clock is the replay's: 2024-01-01 (UTC), whatever today is
    assert 1_704_067_200_000 <= served < 1_704_153_600_000, served
    assert process.returncode == 0, block.err[-3000:]  # SIGTERM: a clean stop
    assert b"Traceback" not in block.err


_SHELL_TESTS = {
    name.removeprefix("test_block_").replace("_", "-")
    for name, value in list(globals().items())
    if name.startswith("test_block_") and callable(value)
}


_RECIPE_TESTS = {
    name.removeprefix("test_recipe_").replace("_", "-")
    for name, value in list(globals().items())
    if name.startswith("test_recipe_") and callable(value)
}
