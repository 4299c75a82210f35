"""TLS settings: the certificate and key that make the WebSocket API and REST ports TLS."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import setting


@dataclass
class TLSSettings:
    """``wss://`` and ``https://``: the PEM files, reloaded on SIGHUP."""

    tls_cert: str | None = setting(
        None,
        help="PEM certificate chain: serve wss:// and https:// (reloaded on SIGHUP)",
        group="tls",
        kind="file",
        default_text="none",
        requires="tls-key",
    )
    tls_key: str | None = setting(
        None,
        help="PEM private key of --tls-cert",
        group="tls",
        kind="file",
        default_text="none",
        requires="tls-cert",
    )
