"""Service settings: one dataclass, every field a ``tickerd serve`` flag and a TICKERD_* variable.

Each field carries its rules as data in ``field.metadata`` (written by :func:`setting`), so
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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from types import MappingProxyType
from typing import Any

from . import weights

ENV_PREFIX = "TICKERD_"
INT64_MAX = 2**63 - 1
DAY_S = 86_400.0

#: ``--help`` sections and README tables, in order: key -> title.
GROUPS: dict[str, str] = {
    "server": "Server",
    "limits": "Limits",
    "feeds": "Feeds",
    "store": "Store",
    "control": "Control",
    "tls": "TLS",
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
    "store": Requirement("--store", lambda s: bool(s.store)),
    "control": Requirement("--control-port", lambda s: s.control_port >= 0),
    "ops": Requirement("--ops-port", lambda s: s.ops_port >= 0),
}


def setting(default: Any, *, help: str, group: str, kind: str, **rules: Any) -> Any:
    """A Settings field with its rules (see the module docstring for the keys)."""
    metadata: dict[str, Any] = {"help": help, "group": group, "kind": kind, **rules}
    return field(default=default, metadata=metadata)


_PORT = {"min": 0, "max": 65535, "special": {0: "any free port"}}
_PORT_OR_OFF = {"min": -1, "max": 65535}
_SECONDS = {"kind": "float", "units": "s"}


@dataclass(slots=True)
class Settings:
    """Everything ``tickerd serve`` can be told. Durations are seconds unless named _ms."""

    # -- server
    host: str = setting("127.0.0.1", help="address to listen on", group="server", kind="host")
    port: int = setting(9000, help="WebSocket API port", group="server", kind="int", **_PORT)
    path: str = setting(
        "/ws-fapi/v1",
        help="WebSocket API path",
        group="server",
        kind="path",
        reserved=("/healthz",),
    )
    rest_port: int = setting(
        9001,
        help="REST API port",
        group="server",
        kind="int",
        **_PORT_OR_OFF,
        special={0: "any free port", -1: "no REST API"},
    )
    symbols_file: str | None = setting(
        None,
        help="exchangeInfo JSON file of the symbol universe",
        group="server",
        kind="file",
        default_text="bundled",
    )
    log_level: str = setting(
        "INFO",
        help="logging level",
        group="server",
        kind="choice",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    )
    # -- feeds
    feed: str = setting(
        "synthetic",
        help="price sources, comma-separated",
        group="feeds",
        kind="list",
        choices=("synthetic", "replay", "mirror", "push"),
    )
    seed: int = setting(
        1,
        help="seed of the synthetic market (same seed, same prices)",
        group="feeds",
        kind="int",
        min=0,
        max=INT64_MAX,
    )
    tick_rate: float = setting(
        20.0,
        help="synthetic ticks per second, all symbols together",
        group="feeds",
        kind="float",
        min=0,
        max=100_000,
        special={0: "prices stand still"},
        units="ticks/s",
    )
    replay_path: str | None = setting(
        None,
        help="Binance trades/aggTrades files (.csv, .zip) or folders of them, comma-separated",
        group="feeds",
        kind="paths",
        default_text="none",
        requires="feed:replay",
    )
    replay_speed: str = setting(
        "1",
        help="replay speed: 1 (real time), N (N times faster), max, step",
        group="feeds",
        kind="speed",
        min=0.001,
        max=1_000_000,
        choices=("max", "step"),
        requires="feed:replay",
    )
    mirror_rest_url: str = setting(
        "https://fapi.binance.com",
        help="REST base URL the mirror bootstraps prices from",
        group="feeds",
        kind="url",
        schemes=("http", "https"),
        requires="feed:mirror",
    )
    mirror_stream_url: str = setting(
        "wss://fstream.binance.com/market",
        help="market-streams base URL the mirror subscribes to",
        group="feeds",
        kind="url",
        schemes=("ws", "wss"),
        requires="feed:mirror",
    )
    mirror_symbols: str | None = setting(
        None,
        help="symbols to mirror, comma-separated",
        group="feeds",
        kind="symbols",
        default_text="all TRADING",
        requires="feed:mirror",
    )
    push_host: str = setting(
        "127.0.0.1",
        help="address of the push ingest",
        group="feeds",
        kind="host",
        requires="feed:push",
    )
    push_port: int = setting(
        9002,
        help="push ingest port",
        group="feeds",
        kind="int",
        **_PORT,
        requires="feed:push",
    )
    push_token: str | None = setting(
        None,
        help="token the push ingest requires (required with push); better as the variable",
        group="feeds",
        kind="token",
        default_text="none",
        secret=True,
        requires="feed:push",
    )
    push_symbols: str | None = setting(
        None,
        help="symbols the push ingest may write, comma-separated",
        group="feeds",
        kind="symbols",
        default_text="all TRADING",
        requires="feed:push",
    )
    # -- store
    store: str | None = setting(
        None,
        help="SQLite file that keeps last prices across restarts",
        group="store",
        kind="dbfile",
        default_text="none",
    )
    store_flush_interval: float = setting(
        1.0,
        help="time between writes of changed prices to the store (what a crash can lose)",
        group="store",
        **_SECONDS,
        min=0.01,
        max=DAY_S,
        requires="store",
    )
    # -- limits
    weight_limit: int = setting(
        weights.REQUEST_WEIGHT_LIMIT,
        help="REQUEST_WEIGHT per IP per minute",
        group="limits",
        kind="int",
        min=1,
        max=10**12,
        units="weight/min",
    )
    connect_limit: int = setting(
        weights.CONNECT_LIMIT,
        help="connection attempts per IP per 5 minutes",
        group="limits",
        kind="int",
        min=0,
        max=1_000_000_000,
        special={0: "no limit"},
        units="per 5 min",
    )
    max_connections: int = setting(
        20_000,
        help="open WebSocket connections at most (more: HTTP 503)",
        group="limits",
        kind="int",
        min=1,
        max=10_000_000,
    )
    max_message_bytes: int = setting(
        64 * 1024,
        help="largest request message (larger: close 1009)",
        group="limits",
        kind="int",
        min=1024,
        max=64 * 1024 * 1024,
        units="bytes",
    )
    max_send_buffer_bytes: int = setting(
        4 * 1024 * 1024,
        help="unsent reply bytes before a client that does not read is cut off",
        group="limits",
        kind="int",
        min=64 * 1024,
        max=1024 * 1024 * 1024,
        units="bytes",
    )
    ping_interval: float = setting(
        180.0,
        help="time between server pings",
        group="limits",
        **_SECONDS,
        min=0.2,
        max=DAY_S,
    )
    pong_timeout: float = setting(
        600.0,
        help="close (1008) when a ping stays unanswered this long",
        group="limits",
        **_SECONDS,
        min=0.2,
        max=DAY_S,
    )
    max_lifetime: float = setting(
        86_400.0,
        help="close (1001) connections older than this",
        group="limits",
        **_SECONDS,
        min=1.0,
        max=30 * DAY_S,
    )
    handshake_timeout: float = setting(
        5.0,
        help="drop connections that do not finish the handshake",
        group="limits",
        **_SECONDS,
        min=0.1,
        max=3600.0,
    )
    close_timeout: float = setting(
        5.0,
        help="drop peers that do not answer a close frame",
        group="limits",
        **_SECONDS,
        min=0.1,
        max=3600.0,
    )
    # -- control
    control_host: str = setting(
        "127.0.0.1",
        help="address of the control plane (fault injection)",
        group="control",
        kind="host",
        requires="control",
    )
    control_port: int = setting(
        -1,
        help="control plane port",
        group="control",
        kind="int",
        **_PORT_OR_OFF,
        special={0: "any free port", -1: "off"},
    )
    control_token: str | None = setting(
        None,
        help="bearer token the control plane requires; better as the variable",
        group="control",
        kind="token",
        default_text="required with --control-port",
        secret=True,
        requires="control",
    )
    scenario: str | None = setting(
        None,
        help="JSON scenario file of timed control operations, run at start-up",
        group="control",
        kind="file",
        default_text="none",
    )
    # -- operations
    log_format: str = setting(
        "text",
        help="log format: text, or json (one object per line)",
        group="server",
        kind="choice",
        choices=("text", "json"),
    )
    ops_host: str = setting(
        "127.0.0.1",
        help="address of the ops surface (metrics, status, dashboard)",
        group="server",
        kind="host",
        requires="ops",
    )
    ops_port: int = setting(
        9003,
        help="ops port: /metrics, /status, /dashboard",
        group="server",
        kind="int",
        **_PORT_OR_OFF,
        special={0: "any free port", -1: "off"},
    )


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


def shown(value: Any) -> str:
    """A value as ``--help`` and the README show it: ``20`` for 20.0, ``0.5`` for 0.5."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def default_text(name: str) -> str:
    """How ``--help`` and the README show a setting's default."""
    rules = setting_rules()[name]
    if "default_text" in rules:
        return str(rules["default_text"])
    return shown(getattr(Settings(), name))


def flag_of(name: str) -> str:
    """The command-line flag of a setting: ``--rest-port`` for ``rest_port``."""
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    """The environment variable of a setting: ``TICKERD_REST_PORT`` for ``rest_port``."""
    return ENV_PREFIX + name.upper()
