"""Reading and checking settings: the text of a flag or TICKERD_* variable in, a value or
one clear line out.

One table-driven validator for every field of :class:`~tickerd.config.Settings`: each
field's ``kind`` (a key of :data:`KINDS`) says how its text is read, and its metadata
(bounds, choices, schemes, reserved values) what is allowed. A value that breaks a rule
raises :class:`SettingError`, whose text names the flag, the variable when the value came
from one, what was given (never for a secret) and what is allowed. Numbers are ASCII
decimal only: ``int()`` and ``float()`` would also take ``"١٢"``, ``"1_0"``, ``"nan"`` or
``"inf"``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .cluster.kinds import CLUSTER_KIND_TEXT, CLUSTER_KINDS
from .config import REQUIREMENTS, Settings, env_of, flag_of, setting_rules, shown
from .errors import TickerdError

_INT = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PATH = re.compile(r"/[!$&'()*+,;=:@%A-Za-z0-9._~/-]*")
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 b64token
_SYMBOL = re.compile(r"[A-Za-z0-9_]{1,40}")
MAX_TEXT = 4096  # characters of any setting's text


class SettingError(TickerdError):
    """A setting whose text breaks its rules; ``str()`` is the whole one-line message."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a setting's text came from: its flag, or its variable (``env`` set)."""

    name: str
    env: bool = False
    python: str | None = None  # the repr of a value set in Python (Service, the pytest fixture)

    def given(self, text: str, secret: bool) -> str:
        """How the message names the source and the text given."""
        flag = flag_of(self.name)
        if self.python is not None:
            shown_value = "..." if secret else self.python
            return f"Settings {self.name}={shown_value} ({flag})"
        if secret:
            return f"{env_of(self.name)} (for {flag})" if self.env else flag
        quoted = (
            repr(text) if len(text) <= 80 else repr(text[:60]) + f"... ({len(text)} characters)"
        )
        if self.env:
            return f"{env_of(self.name)}={quoted} (for {flag})"
        return f"{flag} {quoted}"


# -- kinds ---------------------------------------------------------------------------------


def _bounds(rules: Mapping[str, Any], what: str) -> str:
    allowed = f"{what} from {_show(rules['min'])} to {_show(rules['max'])}"
    units = rules.get("units")
    if units:
        allowed += f" {units}"
    special = rules.get("special")
    if special:
        allowed += " (" + ", ".join(f"{_show(v)}: {m}" for v, m in special.items()) + ")"
    return allowed


def _show(value: Any) -> str:
    return shown(value)


def _in_bounds(value: float, rules: Mapping[str, Any], what: str) -> None:
    if not rules["min"] <= value <= rules["max"]:
        raise ValueError(f"expected {_bounds(rules, what)}")


def is_decimal(text: str) -> bool:
    """True for an ASCII decimal number such as ``5``, ``-0.25`` or ``.5`` (no exponent)."""
    return _NUMBER.fullmatch(text) is not None


def read_int(text: str, rules: Mapping[str, Any]) -> int:
    """An integer of ASCII digits within ``min``..``max``."""
    if not _INT.fullmatch(text):
        raise ValueError(f"expected {_bounds(rules, 'an integer')}")
    value = int(text)
    _in_bounds(value, rules, "an integer")
    return value


def read_float(text: str, rules: Mapping[str, Any]) -> float:
    """A decimal number (no exponent, NaN or infinity) within ``min``..``max``."""
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"expected {_bounds(rules, 'a number')}")
    value = float(text)
    _in_bounds(value, rules, "a number")
    return value


def read_choice(text: str, rules: Mapping[str, Any]) -> str:
    """One of ``choices`` (any case), returned as written there."""
    for choice in rules["choices"]:
        if text.strip().lower() == choice.lower():
            return str(choice)
    raise ValueError(f"expected one of {', '.join(rules['choices'])}")


def _items(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise ValueError(f"expected {what}, comma-separated, with no empty item")
    return items


def read_list(text: str, rules: Mapping[str, Any]) -> str:
    """Comma-separated ``choices``, each at most once; returned as ``a,b``."""
    choices = ", ".join(rules["choices"])
    items = [item.lower() for item in _items(text, f"some of {choices}")]
    unknown = [item for item in items if item not in rules["choices"]]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {choices}")
    if len(set(items)) != len(items):
        raise ValueError(f"a name is given twice; expected some of {choices}, each once")
    return ",".join(items)


def read_symbols(text: str, rules: Mapping[str, Any]) -> str:
    """Comma-separated symbol names (letters, digits, ``_``); whether the universe has
    them is checked when the feeds are built."""
    items = _items(text, "symbol names such as BTCUSDT")
    bad = [item for item in items if not _SYMBOL.fullmatch(item)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a symbol name (letters, digits and _)")
    return ",".join(items)


def read_host(text: str, rules: Mapping[str, Any]) -> str:
    """An IP address or a host name (RFC 1123 labels), without port or brackets."""
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    name = text.removesuffix(".")
    labels = name.split(".")
    # All-numeric labels would make an IPv4 address, and this one is not a valid one.
    numeric = all(label.isascii() and label.isdigit() for label in labels)
    if 0 < len(name) <= 253 and not numeric and all(map(_LABEL.fullmatch, labels)):
        return text
    hint = " (give the port with its own flag)" if ":" in text and "." in text else ""
    raise ValueError(f"expected an IP address or a host name such as localhost{hint}")


def read_path(text: str, rules: Mapping[str, Any]) -> str:
    """A URL path: starts with ``/``, no space, query or fragment, not a reserved one."""
    if not _PATH.fullmatch(text):
        raise ValueError("expected a URL path starting with / (no spaces, ? or #)")
    if text in rules.get("reserved", ()):
        raise ValueError(f"{text} is served by tickerd itself; choose another path")
    return text


def read_url(text: str, rules: Mapping[str, Any]) -> str:
    """A URL with one of ``schemes``, a host and a valid port."""
    schemes = rules["schemes"]
    expected = f"expected a {' or '.join(s + '://' for s in schemes)} URL with a host"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a port that is not one
    except ValueError as exc:
        raise ValueError(f"{expected} ({exc})") from None
    if parts.scheme not in schemes or not parts.hostname or any(c.isspace() for c in text):
        raise ValueError(expected)
    if parts.port == 0:
        raise ValueError(f"{expected} (port 0 is not a port to connect to)")
    return text


def read_file(text: str, rules: Mapping[str, Any]) -> str:
    """A file that exists and can be read."""
    if not os.path.isfile(text):
        raise ValueError("no such file" if not os.path.exists(text) else "not a file")
    if not os.access(text, os.R_OK):
        raise ValueError("the file cannot be read (permissions)")
    return text


def read_proxy(text: str, rules: Mapping[str, Any]) -> str:
    """An http(s) proxy URL, or ``none`` for no proxy whatever the environment says."""
    if text == "none":
        return text
    try:
        return read_url(text, {"schemes": ("http", "https")})
    except ValueError as exc:
        raise ValueError(f"{exc}, or none") from None


def read_folder(text: str, rules: Mapping[str, Any]) -> str:
    """A folder to write into: one that exists, or one whose parent folder exists."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise ValueError("a file, not a folder")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(text) and not os.path.isdir(parent):
        raise ValueError(f"no such folder: {parent}")
    return text


def read_paths(text: str, rules: Mapping[str, Any]) -> str:
    """Comma-separated files or folders, each of which exists."""
    for item in _items(text, "files or folders"):
        if not os.path.exists(item):
            raise ValueError(f"no such file or folder: {item}")
    return text


def read_dbfile(text: str, rules: Mapping[str, Any]) -> str:
    """A file to open or create: not a folder, in a folder that exists."""
    if os.path.isdir(text):
        raise ValueError("a folder, not a file")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise ValueError(f"no such folder: {folder}")
    return text


def read_token(text: str, rules: Mapping[str, Any]) -> str:
    """A bearer token a client can send (RFC 6750 ``b64token``)."""
    if not _TOKEN.fullmatch(text) or len(text) > 1024:
        raise ValueError(
            "expected a token of at most 1024 letters, digits and -._~+/ (RFC 6750), "
            "as sent in 'Authorization: Bearer <token>'"
        )
    return text


def read_speed(text: str, rules: Mapping[str, Any]) -> str:
    """A positive number within ``min``..``max`` or one of ``choices``."""
    if text.strip().lower() in rules["choices"]:
        return text.strip().lower()
    words = ", ".join(rules["choices"])
    if not _NUMBER.fullmatch(text) or not rules["min"] <= float(text) <= rules["max"]:
        raise ValueError(f"expected {_bounds(rules, 'a number')} or one of {words}")
    return text


def read_str(text: str, rules: Mapping[str, Any]) -> str:
    """Any text."""
    return text


Reader = Callable[[str, Mapping[str, Any]], Any]

#: How the text of each kind of setting is read: kind -> reader (raises ValueError).
KINDS: dict[str, Reader] = {
    "int": read_int,
    "float": read_float,
    "choice": read_choice,
    "list": read_list,
    "symbols": read_symbols,
    "host": read_host,
    "path": read_path,
    "url": read_url,
    "file": read_file,
    "paths": read_paths,
    "dbfile": read_dbfile,
    "proxy": read_proxy,
    "folder": read_folder,
    "token": read_token,
    "speed": read_speed,
    "str": read_str,
    **CLUSTER_KINDS,
}


#: What each kind allows, as the README's flags tables say it (numbers: their bounds).
KIND_TEXT: dict[str, str] = {
    "symbols": "symbol names, comma-separated",
    "host": "IP address or host name",
    "path": "URL path from /",
    "url": "URL",
    "file": "existing file",
    "paths": "existing files or folders, comma-separated",
    "dbfile": "file in an existing folder",
    "proxy": "http:// or https:// URL, or none",
    "folder": "folder (created in an existing one)",
    "token": "RFC 6750 token",
    "str": "text",
    **CLUSTER_KIND_TEXT,
}


def allowed_text(name: str) -> str:
    """What a setting allows, in a few words (the README's "allowed" column)."""
    rules = setting_rules()[name]
    kind = rules["kind"]
    if kind in ("int", "float", "speed", "count"):
        text = f"{shown(rules['min'])}–{shown(rules['max'])}"
        if kind in ("speed", "count"):
            text += ", " + ", ".join(rules["choices"])
        return text
    if kind == "url":
        return " or ".join(f"{s}://" for s in rules["schemes"]) + " URL"
    if kind == "choice":
        return ", ".join(rules["choices"])
    if kind == "list":
        return ", ".join(rules["choices"]) + ", comma-separated"
    return KIND_TEXT[kind]


# -- settings ------------------------------------------------------------------------------


def read_setting(name: str, text: str, source: Source) -> Any:
    """The value of setting ``name`` written as ``text``; raises :class:`SettingError`."""
    rules = setting_rules()[name]
    secret = bool(rules.get("secret"))
    try:
        if len(text) > MAX_TEXT:
            raise ValueError(f"longer than {MAX_TEXT} characters")
        if "\x00" in text:
            raise ValueError("contains a NUL character")
        return KINDS[rules.get("kind", "str")](text, rules)
    except ValueError as exc:
        raise SettingError(f"{source.given(text, secret)}: {exc}") from None


@dataclass(slots=True)
class Resolved:
    """Settings read from flags and variables, and the lines to warn about."""

    settings: Settings
    warnings: list[str]


def resolve(flags: Mapping[str, str | None], env: Mapping[str, str]) -> Resolved:
    """The :class:`Settings` named by flag texts (None: not given) and TICKERD_* variables.

    A flag wins over its variable, a variable over the default. An empty text of a
    setting whose default is None leaves it unset. A setting that means nothing without
    another one (its ``requires``) is an error when given as a flag and a warning when it
    comes from the environment (which many commands share). Raises :class:`SettingError`.
    """
    defaults = Settings()
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for name in setting_rules():
        text = flags.get(name)
        source = Source(name)
        if text is None and env_of(name) in env:
            text, source = env[env_of(name)], Source(name, env=True)
        if text is None:
            continue
        if text == "" and getattr(defaults, name) is None:
            continue
        values[name] = read_setting(name, text, source)
        sources[name] = source
    settings = Settings(**values)
    warnings: list[str] = []
    for name, source in sources.items():
        key = setting_rules()[name].get("requires")
        if key is None or REQUIREMENTS[key].met(settings):
            continue
        needs = REQUIREMENTS[key].text
        if key.startswith("feed:"):
            needs += f" (--feed is {settings.feed!r})"
        if not source.env:
            raise SettingError(f"{flag_of(name)} means nothing without {needs}")
        warnings.append(f"{env_of(name)} is ignored: {flag_of(name)} needs {needs}")
    _check_ports(settings)
    return Resolved(settings, warnings)


def _check_ports(settings: Settings) -> None:
    """Refuse two surfaces on one address and port (0, any free port, never clashes)."""
    feeds = [n.strip() for n in settings.feed.split(",")]
    surfaces = [
        ("port", settings.host, settings.port, True),
        ("rest_port", settings.host, settings.rest_port, settings.rest_port >= 0),
        ("stream_port", settings.host, settings.stream_port, settings.stream_port >= 0),
        ("push_port", settings.push_host, settings.push_port, "push" in feeds),
        ("control_port", settings.control_host, settings.control_port, settings.control_port >= 0),
        ("ops_port", settings.ops_host, settings.ops_port, settings.ops_port >= 0),
    ]
    seen: dict[tuple[str, int], str] = {}
    for name, host, port, on in surfaces:
        if not on or port == 0:
            continue
        other = seen.setdefault((host, port), name)
        if other != name:
            raise SettingError(
                f"{flag_of(name)} {port} is also {flag_of(other)} on {host}: "
                "each surface needs a port of its own"
            )


def check_settings(settings: Settings) -> None:
    """Check a :class:`Settings` built in Python by the same rules as the flags (not the
    ``requires`` ones, which need to know what was given); raises :class:`SettingError`."""
    defaults = Settings()
    for name in setting_rules():
        value = getattr(settings, name)
        if value is None or value == getattr(defaults, name):
            continue
        text = value if isinstance(value, str) else shown(value)
        read_setting(name, text, Source(name, python=repr(value)))
