"""The two request paths: mypyc's build of ``hotpath.COMPILED_MODULES`` and their sources.

The suite runs on the build ``scripts/test`` installed (compiled wherever gcc is present, as
in CI); :func:`test_pure_path_passes_the_protocol_tests` runs the golden-frame, property and
fuzz tests again in a process that ``TICKERD_PURE=1`` puts on the sources, and checks there
that every listed module really came from its ``.py`` file. A stale build (a source edited
after it was compiled) must run the sources, never the old extension.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ServerFactory
from tickerd import hotpath

ROOT = Path(__file__).resolve().parent.parent
#: Every test file that checks replies or recorded rows byte for byte: golden frames,
#: properties, fuzzing, RFC 6455 over real sockets, the limiter, the recorder.
BYTE_EXACT_TESTS = [
    "tests/test_protocol.py",
    "tests/test_wsconn.py",
    "tests/test_rfc6455.py",
    "tests/test_fuzz.py",
    "tests/test_ratelimit.py",
    "tests/test_errors.py",
    "tests/test_recording.py",
    "tests/test_aggtrade_rows.py",
]


def _loaded_from_source(name: str) -> bool:
    module = importlib.import_module(name)
    return str(module.__file__).endswith(".py") and not hotpath.is_compiled(module)


def test_the_module_list_is_the_request_path() -> None:
    assert len(set(hotpath.COMPILED_MODULES)) == len(hotpath.COMPILED_MODULES)
    for name in hotpath.COMPILED_MODULES:
        assert hotpath.source_path(name).is_file(), name
    # The frame path: the sans-I/O connection and protocol the transport calls per frame.
    assert {"tickerd.protocol", "tickerd.wsconn", "tickerd.ratelimit"} <= set(
        hotpath.COMPILED_MODULES
    )
    # picows subclasses cannot be native classes: the transport stays interpreted.
    assert not [m for m in hotpath.COMPILED_MODULES if m.startswith("tickerd.transport")]


def test_this_process_runs_the_path_it_asked_for() -> None:
    """Pure when TICKERD_PURE=1; else compiled wherever a C compiler is (CI): a build
    missing or stale there fails here, with how to rebuild."""
    described = hotpath.describe()
    if hotpath.pure_requested():
        assert described == "pure Python (TICKERD_PURE=1)"
        assert all(_loaded_from_source(m) for m in hotpath.COMPILED_MODULES)
        return
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip("no C compiler: the install is pure Python")
    assert described == hotpath.COMPILED, f"{described}: rebuild with pip install -e ."
    assert not any(_loaded_from_source(m) for m in hotpath.COMPILED_MODULES)


@pytest.mark.timeout(900)
def test_pure_path_passes_the_protocol_tests() -> None:
    env = {**os.environ, hotpath.PURE_ENV: "1"}
    this = "tests/test_hotpath.py::test_this_process_runs_the_path_it_asked_for"
    argv = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-x"]
    done = subprocess.run(
        [*argv, this, *BYTE_EXACT_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert f"PASSED {this}" in out, out[-3000:]
    assert " failed" not in out and " passed" in out, out[-3000:]


def _package_copy(tmp_path: Path) -> Path:
    """The installed package (and mypyc's shared library) copied under ``tmp_path``."""
    package = Path(hotpath.__file__).parent
    shutil.copytree(package, tmp_path / "tickerd", ignore=shutil.ignore_patterns("__pycache__"))
    for lib in package.parent.glob("tickerd_hotpath__mypyc*"):
        shutil.copy2(lib, tmp_path / lib.name)
    return tmp_path


def _describe_in(path: Path, env: dict[str, str] | None = None) -> tuple[str, str]:
    code = (
        "from tickerd import hotpath; import tickerd.protocol as p; "
        "print(hotpath.describe()); print(p.__file__)"
    )
    full = {k: v for k, v in os.environ.items() if k != hotpath.PURE_ENV}
    full.update(env or {}, PYTHONPATH=str(path))
    done = subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    described, origin = done.stdout.splitlines()
    return described, origin


def test_a_stale_build_runs_the_edited_sources(tmp_path: Path) -> None:
    if hotpath.describe() != hotpath.COMPILED:
        pytest.skip("the install is pure Python: no build to go stale")
    copy = _package_copy(tmp_path)
    described, origin = _describe_in(copy)
    assert described == hotpath.COMPILED and origin.endswith(".so")
    source = copy / "tickerd" / "protocol.py"
    source.write_text(source.read_text(encoding="utf-8") + "\nEDITED = True\n", "utf-8")
    described, origin = _describe_in(copy)
    assert described.startswith("pure Python (compiled build is stale: protocol.py changed")
    assert origin == str(source)
    # An extension the build did not make (a module since dropped from the list) is stale.
    source.write_text(source.read_text(encoding="utf-8").removesuffix("\nEDITED = True\n"))
    assert _describe_in(copy)[0] == hotpath.COMPILED
    (extension,) = (copy / "tickerd").glob("frames.*.so")
    shutil.copy2(extension, copy / "tickerd" / extension.name.replace("frames", "book"))
    assert _describe_in(copy)[0].startswith("pure Python (compiled build is stale: book.py")


def test_pure_request_overrides_a_build(tmp_path: Path) -> None:
    copy = _package_copy(tmp_path)
    described, origin = _describe_in(copy, {hotpath.PURE_ENV: "1"})
    assert (described, origin) == (
        "pure Python (TICKERD_PURE=1)",
        str(copy / "tickerd" / "protocol.py"),
    )


@pytest.mark.parametrize("pure", [False, True], ids=["default", "pure"])
def test_serve_logs_and_reports_the_path(server: ServerFactory, pure: bool) -> None:
    import json
    import urllib.request

    expected = "pure Python (TICKERD_PURE=1)" if pure else hotpath.describe()
    srv = server("--log-level", "INFO", env={hotpath.PURE_ENV: "1"} if pure else {})
    line = srv.wait_log("hot path: ")
    assert line.endswith(f"hot path: {expected}"), line
    assert srv.ops_url is not None
    with urllib.request.urlopen(srv.ops_url + "/status", timeout=10) as response:
        doc = json.loads(response.read())
    assert doc["hot_path"] == expected
    if not pure and shutil.which("gcc") is not None:
        assert "hot path: compiled (mypyc)" in line
