"""Which outbound proxy a mirror request goes through.

An explicit proxy URL (``--mirror-proxy``) wins. Without one, the environment's
``HTTPS_PROXY`` serves ``https://`` and ``wss://`` URLs and ``HTTP_PROXY`` serves
``http://`` and ``ws://`` ones (lower-case names too, as curl and Python's urllib read
them), unless ``NO_PROXY`` lists the host. aiohttp's own environment lookup maps ``wss``
only to a ``WSS_PROXY`` variable, which nobody sets, so the choice is made here per URL.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

#: URL scheme → the environment proxy entry that serves it.
SCHEME_PROXY = {"https": "https", "wss": "https", "http": "http", "ws": "http"}


def proxy_for(url: str, explicit: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The proxy URL for ``url``, or None to connect directly.

    ``explicit`` is ``--mirror-proxy``: a URL to use for every request, ``""`` for none at
    all (the environment ignored too), None to follow the environment (``env``, default
    the process environment).
    """
    if explicit is not None:
        return explicit or None
    proxies = (
        urllib.request.getproxies_environment()
        if env is None
        else {
            k.lower().removesuffix("_proxy"): v
            for k, v in env.items()
            if k.lower().endswith("_proxy") and v
        }
    )
    entry = SCHEME_PROXY.get(urlsplit(url).scheme.lower())
    chosen = proxies.get(entry) if entry else None
    if not chosen:
        return None
    host = urlsplit(url).hostname or ""
    if _bypassed(host, proxies.get("no", "")):
        return None
    return chosen


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (comma-separated hosts, ``.domain`` suffixes, ``*``) lists host."""
    host = host.lower().rstrip(".")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.split(":", 1)[0] if entry.count(":") == 1 else entry
        bare = entry.lstrip(".")
        if host == bare or host.endswith("." + bare):
            return True
    return False
