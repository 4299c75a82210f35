"""How a setting is declared: :func:`setting`, the groups, the requirements between settings.

Each field of :class:`tickerd.config.Settings` carries its rules as data in ``field.metadata`` (written by :func:`setting`), so
one validator (:mod:`tickerd.validation`), the ``--help`` text and the README's flags
tables all read the same table:

``help``
    what the setting does (one phrase; required)
``group``
    a key of :data:`GROUPS`: the ``--help`` section and README table it is listed in
``kind``
    a key of :data:`tickerd.validation.KINDS`: how the text of a flag or variable is read
``min`` / ``max``
    inclusive bounds of an ``int``, ``float`` or ``speed`` value
``special``
    values with a meaning of their own, shown with the bounds (``{0: "any free port"}``)
``choices``
    the allowed words of a ``choice`` or ``list`` value
``schemes``
    the allowed schemes of a ``url`` value
``units``
    the unit of a number (``s``, ``bytes``, ...), shown in ``--help`` and the README
``default_text``
    how the default is shown when its value would mislead (None shown as ``bundled``)
``requires``
    a key of :data:`REQUIREMENTS`: a setting that means nothing without another one
``secret``
    true for tokens: a value is never echoed in a message
``reserved``
    values refused although of the right form (a path another route already serves)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "TICKERD_"
INT64_MAX = 2**63 - 1
DAY_S = 86_400.0

#: ``--help`` sections and README tables, in order: key -> title.
GROUPS: dict[str, str] = {
    "server": "Server",
    "limits": "Limits",
    "streams": "Streams",
    "feeds": "Feeds",
    "store": "Store",
    "control": "Control",
    "ops": "Ops",
    "tls": "TLS",
    "cluster": "Cluster",
}


def _feeds_of(settings: Any) -> list[str]:
    return [n.strip() for n in str(settings.feed).split(",") if n.strip()]


@dataclass(frozen=True, slots=True)
class Requirement:
    """A condition another setting must meet for a setting to mean anything."""

    text: str  # what to give, as a user would type it
    met: Callable[[Any], bool]


#: Named conditions a field's ``requires`` points to.
REQUIREMENTS: dict[str, Requirement] = {
    "feed:replay": Requirement("--feed with replay", lambda s: "replay" in _feeds_of(s)),
    "feed:mirror": Requirement("--feed with mirror", lambda s: "mirror" in _feeds_of(s)),
    "feed:push": Requirement("--feed with push", lambda s: "push" in _feeds_of(s)),
    "feed:record": Requirement(
        "--feed with mirror or push", lambda s: bool({"mirror", "push"} & set(_feeds_of(s)))
    ),
    "store": Requirement("--store", lambda s: bool(s.store)),
    "streams": Requirement("--streams on", lambda s: s.streams == "on"),
    "control": Requirement("--control-port", lambda s: s.control_port >= 0),
    "ops": Requirement("--ops-port", lambda s: s.ops_port >= 0),
    "redis": Requirement("--redis", lambda s: bool(s.redis)),
    "tls-cert": Requirement("--tls-cert", lambda s: bool(s.tls_cert)),
    "tls-key": Requirement("--tls-key", lambda s: bool(s.tls_key)),
}


def setting(default: Any, *, help: str, group: str, kind: str, **rules: Any) -> Any:
    """A Settings field with its rules (see the module docstring for the keys)."""
    metadata: dict[str, Any] = {"help": help, "group": group, "kind": kind, **rules}
    return field(default=default, metadata=metadata)


#: Rules shared by many fields.
PORT = {"min": 0, "max": 65535, "special": {0: "any free port"}}
PORT_OR_OFF = {"min": -1, "max": 65535}
SECONDS = {"kind": "float", "units": "s"}


def shown(value: Any) -> str:
    """A value as ``--help`` and the README show it: ``20`` for 20.0, ``0.5`` for 0.5."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def flag_of(name: str) -> str:
    """The command-line flag of a setting: ``--rest-port`` for ``rest_port``."""
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    """The environment variable of a setting: ``TICKERD_REST_PORT`` for ``rest_port``."""
    return ENV_PREFIX + name.upper()
