"""Which request path runs: the modules compiled by mypyc at install time, or their sources.

Theory of operation
-------------------
``pip install .`` compiles :data:`COMPILED_MODULES` with mypyc when a C compiler is there
(``setup.py`` reads the list from this file; ``TICKERD_PURE=1`` at install time skips it).
The extension modules sit beside the ``.py`` files they were built from, and Python prefers
an extension module to a source file of the same name. The build writes :data:`RECORD`: the
SHA-256 of each compiled source.

At ``import tickerd`` (this module is imported first) the sources are loaded instead of the
extensions when ``TICKERD_PURE=1`` is set, or when the build is stale: a source changed since
it was compiled (an editable install edited in place), so the extension no longer runs the
code on disk. A stale build never shadows edited sources; ``pip install -e .`` rebuilds it.
Both paths run the same typed code, so every reply is the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

#: The WebSocket API request path (with the cluster's limiter, which charges every request of
#: a worker on Redis) and the recorder's per-trade rows, compiled by mypyc when a C compiler
#: is present (the one list; ``setup.py`` reads it). The transport's picows subclasses stay
#: interpreted: a mypyc native class cannot derive from picows' Cython types. ``book.py`` stays interpreted: its
#: ``make_tick`` refuses ill-typed input with TickRejected, where compiled code would raise
#: TypeError at the call (the request path only reads its cached bodies).
COMPILED_MODULES = (
    "tickerd.protocol",
    "tickerd.wsconn",
    "tickerd.frames",
    "tickerd.ratelimit",
    "tickerd.counters",
    "tickerd.aggtrade_rows",
    "tickerd.cluster.shared_limiter",
)
PURE_ENV = "TICKERD_PURE"  # "1": run (and install) the pure-Python path
RECORD = "hotpath.json"  # written by the build beside this file: {"sources": {module: sha256}}
COMPILED = "compiled (mypyc)"
PURE = "pure Python"

_PACKAGE_DIR = Path(__file__).resolve().parent


def source_path(module: str) -> Path:
    """The ``.py`` file of a module of :data:`COMPILED_MODULES`."""
    return _PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")


def digest(path: Path) -> str:
    """The SHA-256 of a source file, as the build records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pure_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``TICKERD_PURE`` asks for the pure-Python path."""
    return environ.get(PURE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def built_modules() -> list[str]:
    """The package's modules that have an extension module beside their ``.py`` source."""
    found = set()
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for path in _PACKAGE_DIR.rglob("*" + suffix):
            source = path.with_name(path.name.removesuffix(suffix) + ".py")
            if source.exists():
                parts = source.relative_to(_PACKAGE_DIR).with_suffix("").parts
                found.add(".".join(("tickerd", *parts)))
    return sorted(found)


def stale_sources() -> list[str]:
    """The built modules whose source changed since the build, or that the build did not
    make (an extension left from an older module list); none without a build."""
    built = built_modules()
    if not built:
        return []
    try:
        recorded = json.loads((_PACKAGE_DIR / RECORD).read_text(encoding="utf-8"))["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    return [m for m in built if recorded.get(m) != digest(source_path(m))]


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the listed modules as their ``.py`` sources, ahead of any extension module."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules or not source_path(fullname).exists():
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def _choose() -> str:
    """Install the source finder when the sources must run; the reason, or ``""``."""
    if pure_requested():
        reason = f"{PURE_ENV}=1"
    elif stale := stale_sources():
        names = ", ".join(m.rsplit(".", 1)[1] + ".py" for m in stale)
        reason = f"compiled build is stale: {names} changed since; pip install -e . rebuilds it"
    else:
        return ""
    modules = sorted({*COMPILED_MODULES, *built_modules()})
    loaded = [m for m in modules if m in sys.modules]
    if loaded:  # too late to choose: report what already runs
        return reason + f" (asked too late: {', '.join(loaded)} already loaded)"
    sys.meta_path.insert(0, _SourceFinder(modules))
    return reason


def is_compiled(module: ModuleType) -> bool:
    """Whether ``module`` was loaded from an extension module (a mypyc build)."""
    origin = getattr(module, "__file__", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def describe() -> str:
    """What runs: ``"compiled (mypyc)"``, or ``"pure Python"`` with the reason in brackets."""
    modules = [importlib.import_module(name) for name in COMPILED_MODULES]
    compiled = [m.__name__ for m in modules if is_compiled(m)]
    if len(compiled) == len(modules):
        return COMPILED
    if compiled:
        return f"mixed: compiled {', '.join(compiled)}; the rest pure Python"
    if REASON:
        return f"{PURE} ({REASON})"
    return f"{PURE} (not compiled at install)"


#: Why the sources run although a build may exist ("" when nothing forced them).
REASON = _choose()
