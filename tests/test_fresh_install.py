"""A fresh clone's first steps, as the README prints them, in a new virtualenv.

The repository's files (as ``git ls-files`` lists them, with their working-tree content)
are copied into a scratch directory, the README's install command makes ``.venv`` there
(from the package index, as a user's would), and then, with nothing else installed:
the "30 seconds" block runs as printed, the cookbook's CLI lines run against a
``.venv/bin/tickerd serve`` of that install, and the cookbook's pytest example passes in a
project that added only pytest. The wheel is built with its license metadata and without
setuptools deprecation warnings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text("utf-8")
FENCE_RE = re.compile(r"^```(\w*)(?: ([\w-]+))?\n(.*?)^```$", re.MULTILINE | re.DOTALL)
BLOCKS = {tag: code for _, tag, code in FENCE_RE.findall(README) if tag}
INSTALL_TIMEOUT_S = 420
RUN_TIMEOUT_S = 60

pytestmark = [
    pytest.mark.timeout(INSTALL_TIMEOUT_S + 6 * RUN_TIMEOUT_S),
    pytest.mark.skipif(shutil.which("git") is None, reason="git lists the repository's files"),
]


def sh(cmd: str, cwd: Path, env: dict[str, str], timeout: float = RUN_TIMEOUT_S) -> str:
    done = subprocess.run(
        ["bash", "-c", cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    return done.stdout + done.stderr


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the repository with the README's install done in it."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout.split(b"\0")
    home = tmp_path_factory.mktemp("fresh") / "tickerd"
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            dst = home / os.fsdecode(name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKERD_", "VIRTUAL_ENV"))}
    # `python3` is the interpreter this suite runs on (not its virtualenv).
    env["PATH"] = f"{Path(sys.base_prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    install = BLOCKS["install"].splitlines()[0]
    assert install.endswith(" && .venv/bin/tickerd serve"), install
    sh(install.removesuffix(" && .venv/bin/tickerd serve"), home, env, INSTALL_TIMEOUT_S)
    return home, env


def test_wheel_has_license_metadata_and_no_deprecation_warnings(
    clone: tuple[Path, dict[str, str]],
) -> None:
    home, env = clone
    out = sh(".venv/bin/pip wheel --no-deps -v -w dist .", home, env, INSTALL_TIMEOUT_S)
    assert "deprecat" not in out.lower(), [line for line in out.splitlines() if "eprecat" in line]
    (wheel,) = (home / "dist").glob("tickerd-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        license_file = next(n for n in names if n.endswith("/licenses/LICENSE"))
        assert zf.read(license_file) == (home / "LICENSE").read_bytes()
    assert any(n.startswith("tickerd/protocol.") and n.endswith(".so") for n in names) == (
        shutil.which("gcc") is not None
    )
    assert "License-Expression: MIT" in meta.splitlines()
    assert "License-File: LICENSE" in meta.splitlines()
    assert (
        "MIT License" in (home / "LICENSE").read_text()
        and "tickerd contributors" in (home / "LICENSE").read_text()
    )


def test_without_a_compiler_the_wheel_is_pure_python(clone: tuple[Path, dict[str, str]]) -> None:
    home, env = clone
    out = sh(
        "CC=/nonexistent/cc .venv/bin/pip wheel --no-deps -v -w dist-pure .",
        home,
        env,
        INSTALL_TIMEOUT_S,
    )
    assert "tickerd build: no C compiler (/nonexistent/cc) found; installing pure Python" in out
    (wheel,) = (home / "dist-pure").glob("tickerd-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "tickerd/protocol.py" in names and not [n for n in names if n.endswith(".so")]


def test_thirty_seconds_then_the_cli_lines(clone: tuple[Path, dict[str, str]]) -> None:
    home, env = clone
    ws, rest, ops = free_ports(3)
    ports = {"9000": str(ws), "9001": str(rest)}
    env = {**env, "TICKERD_PORT": str(ws), "TICKERD_REST_PORT": str(rest)}
    env["TICKERD_OPS_PORT"] = str(ops)

    def local(code: str) -> str:
        return re.sub(r"\b(900[01])\b", lambda m: ports[m[1]], code)

    out = sh(local(BLOCKS["thirty-seconds"]), home, env)
    reply = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert (reply["id"], reply["status"], reply["result"]["symbol"]) == ("1", 200, "BTCUSDT")
    assert reply["rateLimits"][0]["count"] == 6

    server = subprocess.Popen(
        [str(home / ".venv" / "bin" / "tickerd"), "serve", "--tick-rate", "0"],
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            try:
                with urlopen(f"http://127.0.0.1:{ws}/healthz", timeout=5):
                    break
            except (URLError, ConnectionError, TimeoutError):
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        cli = [line for line in BLOCKS["cookbook-cli"].splitlines() if "tickerd price" in line]
        url = {"TICKERD_URL": f"ws://127.0.0.1:{ws}/ws-fapi/v1"}
        one, two, every = (sh(line, home, {**env, **url}) for line in cli)
        assert re.fullmatch(r"BTCUSDT [0-9]+\.[0-9]{2}\n", one), one
        assert [line.split()[0] for line in two.splitlines()] == ["BTCUSDT", "ETHUSDT"]
        assert every.splitlines()[0].split() == ["SYMBOL", "PRICE", "TIME"]
        assert sh(".venv/bin/tickerd --version", home, env).startswith("tickerd ")
    finally:
        server.terminate()
        _, err = server.communicate(timeout=15)
    assert server.returncode == 0 and b"Traceback" not in err, err[-3000:]
    if shutil.which("gcc") is not None:  # the README's install compiled the request path
        assert b"hot path: compiled (mypyc)" in err, err[-3000:]


def test_the_pytest_example_needs_only_tickerd(clone: tuple[Path, dict[str, str]]) -> None:
    home, env = clone
    sh(".venv/bin/pip install -q 'pytest>=8'", home, env, INSTALL_TIMEOUT_S)
    listed = sh(".venv/bin/pip list --format=freeze", home, env).lower()
    assert "websockets" not in listed and "hypothesis" not in listed
    project = home / "my-bot"
    project.mkdir()
    (project / "test_my_bot.py").write_text(BLOCKS["cookbook-pytest"], encoding="utf-8")
    out = sh("../.venv/bin/python -m pytest -q -p no:cacheprovider", project, env)
    assert re.search(r"\b1 passed\b", out), out
