"""The lint gates: ruff with the rules pyproject.toml selects, ruff's formatter, mypy strict.

They run with the suite so a change that breaks them is refused like a failing test. The
tools come with the ``dev`` extra, which ``scripts/test`` installs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["src", "tests", "benchmarks"]


def tool(name: str) -> str:
    """The path of a dev tool beside this interpreter (skip when it is not installed)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return str(path)


@pytest.mark.parametrize(
    "args", [["check", *CHECKED], ["format", "--check", *CHECKED]], ids=["check", "format"]
)
def test_ruff(args: list[str]) -> None:
    done = subprocess.run([tool("ruff"), *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(600)
def test_mypy_strict_on_src() -> None:
    done = subprocess.run([tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout
