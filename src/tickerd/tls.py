"""TLS for the WebSocket API (``wss://``) and REST (``https://``): one server context.

The context accepts TLS 1.2 and later with the ``ssl`` module's default ciphers. Both ports
share it, so a reload (``SIGHUP``) changes what new handshakes on either port present;
connections already open keep the session they negotiated. A reload first loads the files
into a fresh context, so a bad file leaves the running certificate in place.
"""

from __future__ import annotations

import logging
import ssl

from .errors import TickerdError

log = logging.getLogger("tickerd.server")


class TLSError(TickerdError):
    """The certificate or key files cannot be used; the message names them."""


def _load(context: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise TLSError(f"--tls-cert/--tls-key: no such file: {exc.filename}") from None
    except PermissionError as exc:
        raise TLSError(f"--tls-cert/--tls-key: cannot read {exc.filename}") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise TLSError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate chain and its "
            f"private key ({reason})"
        ) from None


def new_context(cert: str, key: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting ``cert`` (PEM chain) with ``key``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, cert, key)
    return context


class TLSFiles:
    """The certificate and key files and the live context made from them."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert = cert
        self.key = key
        self.context = new_context(cert, key)
        self.reloads = 0

    @classmethod
    def of(cls, cert: str | None, key: str | None) -> TLSFiles | None:
        """From ``--tls-cert`` and ``--tls-key``: None without both, an error with one."""
        if cert is None and key is None:
            return None
        if not cert or not key:
            given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
            raise TLSError(f"{given} needs {missing} as well")
        return cls(cert, key)

    def reload(self) -> bool:
        """Load the files again into the live context; on failure keep the old certificate,
        log one line and return False."""
        try:
            new_context(self.cert, self.key)
        except TLSError as exc:
            log.error("TLS reload failed, still serving the previous certificate: %s", exc)
            return False
        _load(self.context, self.cert, self.key)
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return True
