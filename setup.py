"""Build: the pure-Python package, plus its request path compiled by mypyc when possible.

The modules compiled are ``COMPILED_MODULES`` in ``src/tickerd/hotpath.py`` (read here
without importing the package). ``TICKERD_PURE=1`` skips compiling; so does a missing C
compiler or a failed compile, each with one line on stderr: the pure install still works.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sys
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
HOTPATH = ROOT / "src" / "tickerd" / "hotpath.py"


def hotpath_constant(name: str) -> object:
    """A constant assigned in hotpath.py (the one place the module list is written)."""
    tree = ast.parse(HOTPATH.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise LookupError(f"{name} is not assigned in {HOTPATH}")


MODULES = [str(m) for m in hotpath_constant("COMPILED_MODULES")]  # type: ignore[attr-defined]
PURE_ENV = str(hotpath_constant("PURE_ENV"))
RECORD = str(hotpath_constant("RECORD"))


def sources() -> list[str]:
    return [str(Path("src", *m.split(".")).with_suffix(".py")) for m in MODULES]


def why_pure() -> str | None:
    """Why the build stays pure Python, or None to compile."""
    if os.environ.get(PURE_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return f"{PURE_ENV}=1"
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}) found"
    return None


class RecordingBuildExt(build_ext):
    """build_ext that falls back to pure Python on failure and records what it compiled."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler failure: the pure package still installs
            say(f"compiling failed ({exc}); installing pure Python")
            clean_in_place([])
            self.extensions = []
            return
        first = self.get_ext_fullpath(MODULES[0])
        package_dir = Path(first).parent
        digests = {
            m: hashlib.sha256((ROOT / s).read_bytes()).hexdigest()
            for m, s in zip(MODULES, sources(), strict=True)
        }
        package_dir.mkdir(parents=True, exist_ok=True)
        (package_dir / RECORD).write_text(json.dumps({"sources": digests}, indent=1) + "\n")

    def get_outputs(self) -> list[str]:
        outputs = list(super().get_outputs())
        if self.extensions:
            outputs.append(str(Path(self.get_ext_fullpath(MODULES[0])).parent / RECORD))
        return outputs


def clean_in_place(keep: list[str]) -> None:
    """Remove extension modules an earlier editable build left in src/ beside sources, but
    for ``keep``: an extension always shadows its ``.py`` file."""
    src = ROOT / "src"
    for suffix in EXTENSION_SUFFIXES:
        for path in (src / "tickerd").rglob("*" + suffix):
            module = ".".join(path.relative_to(src).parts).removesuffix(suffix)
            if (
                module not in keep
                and path.with_name(path.name.removesuffix(suffix) + ".py").exists()
            ):
                path.unlink()
        if not keep:
            for path in src.glob("tickerd_hotpath__mypyc*" + suffix):
                path.unlink()
    if not keep:
        (src / "tickerd" / RECORD).unlink(missing_ok=True)


def say(line: str) -> None:
    print(f"tickerd build: {line}", file=sys.stderr)


def extensions() -> list[object]:
    reason = why_pure()
    if reason is None:
        try:
            from mypyc.build import mypycify
        except ImportError:
            reason = "mypyc is not installed in the build environment"
    if reason is not None:
        say(f"{reason}; installing pure Python")
        clean_in_place([])
        return []
    clean_in_place(MODULES)
    try:
        # The build environment holds no runtime dependencies: their types are not needed
        # to compile (calls into them stay Python calls), so what strict mode says about
        # values of unknown type is left to the lint gate, which sees them typed.
        relaxed = ["--ignore-missing-imports", "--no-warn-return-any", "--allow-subclassing-any"]
        relaxed += ["--no-warn-unused-ignores", "--allow-untyped-calls", "--allow-any-generics"]
        paths = [*relaxed, *sources()]
        built = list(mypycify(paths, opt_level="3", group_name="tickerd_hotpath"))
    except (Exception, SystemExit) as exc:  # mypy refused the sources: stay pure
        say(f"mypyc could not compile the request path ({exc}); installing pure Python")
        clean_in_place([])
        return []
    say(f"compiling {', '.join(MODULES)} with mypyc")
    return built


setup(ext_modules=extensions(), cmdclass={"build_ext": RecordingBuildExt})
