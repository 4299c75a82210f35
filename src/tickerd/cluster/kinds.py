"""How the text of the cluster settings is read (kinds of :mod:`tickerd.validation`).

Each reader takes the text and the setting's rules and returns the value, or raises
ValueError with what is allowed; the validator names the flag and what was given.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

_INT = re.compile(r"[0-9]+")
# No glob characters (* ? [ ] \): the prefix is also a SCAN pattern's start.
_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:/{}@-]{1,64}")


def read_count(text: str, rules: Mapping[str, Any]) -> str:
    """An integer within ``min``..``max`` or one of ``choices`` (any case); returned as text."""
    word = text.strip().lower()
    if word in rules["choices"]:
        return word
    if _INT.fullmatch(text) and rules["min"] <= int(text) <= rules["max"]:
        return str(int(text))
    words = ", ".join(rules["choices"])
    raise ValueError(f"expected an integer from {rules['min']} to {rules['max']} or {words}")


def read_redis_url(text: str, rules: Mapping[str, Any]) -> str:
    """A ``redis://`` or ``rediss://`` URL with a host, or ``unix://`` and a socket's path."""
    expected = "expected a redis:// or rediss:// URL with a host, or unix:// and a socket path"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a port that is not one
    except ValueError as exc:
        raise ValueError(f"{expected} ({exc})") from None
    if any(c.isspace() for c in text):
        raise ValueError(expected)
    if parts.scheme == "unix" and parts.path.startswith("/"):
        return text
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(expected)
    if parts.port == 0:
        raise ValueError(f"{expected} (port 0 is not a port to connect to)")
    return text


def read_networks(text: str, rules: Mapping[str, Any]) -> str:
    """Comma-separated IP addresses or CIDRs (host bits allowed: ``10.1.2.3/8``)."""
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise ValueError("expected IP addresses or CIDRs, comma-separated, with no empty item")
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR") from None
    return ",".join(items)


def read_key_prefix(text: str, rules: Mapping[str, Any]) -> str:
    """1 to 64 letters, digits and ``_.:/{}@-``: no spaces, no glob characters."""
    if not _KEY_PREFIX.fullmatch(text):
        raise ValueError("expected 1 to 64 letters, digits and _.:/{}@- (no spaces, no * ? [ ] \\)")
    return text


#: kind -> reader, for :data:`tickerd.validation.KINDS`.
CLUSTER_KINDS = {
    "count": read_count,
    "redis": read_redis_url,
    "networks": read_networks,
    "keyprefix": read_key_prefix,
}

#: What each kind allows, for the README's flags tables (``count``: its bounds).
CLUSTER_KIND_TEXT = {
    "redis": "redis://, rediss:// or unix:// URL",
    "networks": "IP addresses or CIDRs, comma-separated",
    "keyprefix": "1–64 letters, digits, _.:/{}@-",
}
