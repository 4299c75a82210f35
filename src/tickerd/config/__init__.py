"""Service settings: one dataclass, every field a ``tickerd serve`` flag and a TICKERD_* variable.

:class:`Settings` joins one dataclass per ``--help`` section (``server.py``, ``feeds.py``, ...),
so each setting has one obvious place. How a field is declared, and the rules it carries as
data, is in :mod:`tickerd.config.schema`; :mod:`tickerd.validation` reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from types import MappingProxyType
from typing import Any

from .cluster import ClusterSettings
from .control import ControlSettings
from .feeds import FeedSettings
from .limits import LimitSettings
from .schema import (
    DAY_S,
    ENV_PREFIX,
    GROUPS,
    INT64_MAX,
    REQUIREMENTS,
    Requirement,
    env_of,
    flag_of,
    setting,
    shown,
)
from .server import ServerSettings
from .store import StoreSettings
from .tls import TLSSettings

__all__ = [
    "DAY_S",
    "ENV_PREFIX",
    "GROUPS",
    "INT64_MAX",
    "REQUIREMENTS",
    "Requirement",
    "Settings",
    "default_text",
    "env_of",
    "flag_of",
    "setting",
    "setting_names",
    "setting_rules",
    "shown",
]


# Bases are listed last group first: a dataclass takes its bases' fields in reverse method
# resolution order, so the fields (and ``--help``) come server, feeds, store, limits, control,
# tls, cluster.
@dataclass
class Settings(
    ClusterSettings,
    TLSSettings,
    ControlSettings,
    LimitSettings,
    StoreSettings,
    FeedSettings,
    ServerSettings,
):
    """Everything ``tickerd serve`` can be told. Durations are seconds unless named _ms."""


def setting_names() -> list[str]:
    """The names of every setting, in declaration order."""
    return [f.name for f in fields(Settings)]


@cache
def setting_rules() -> dict[str, Mapping[str, Any]]:
    """Every setting's rules (its field metadata), by name, in declaration order.

    A field declared without rules (a plain ``field(metadata={"help": ...})``) is read by
    the type of its default, unbounded, and listed with the server flags; the suite's
    flags tests fail until it has rules of its own.
    """
    rules: dict[str, Mapping[str, Any]] = {}
    for f in fields(Settings):
        rule = dict(f.metadata)
        if "kind" not in rule:
            kind = {int: "int", float: "float"}.get(type(f.default), "str")
            rule["kind"] = kind
            if kind != "str":
                rule.setdefault("min", -INT64_MAX - 1)
                rule.setdefault("max", INT64_MAX)
        rule.setdefault("group", "server")
        rule.setdefault("help", "")
        rules[f.name] = MappingProxyType(rule)
    return rules


def default_text(name: str) -> str:
    """How ``--help`` and the README show a setting's default."""
    rules = setting_rules()[name]
    if "default_text" in rules:
        return str(rules["default_text"])
    return shown(getattr(Settings(), name))
