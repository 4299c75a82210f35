"""TLS end to end: ``wss://`` and ``https://`` from a real ``tickerd serve`` process, with a
CA and certificates made by each test (trustme), real clients (websockets, urllib, the
official SDK, python-binance), a certificate reload on SIGHUP and bad files at start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import pytest

from conftest import Closed, RawClient, Server
from test_send_budget import ALL, big_universe

trustme = pytest.importorskip("trustme")

pytestmark = [
    pytest.mark.timeout(60),
    # The SDK passes aiohttp a float ws_connect timeout, which aiohttp >= 3.10 deprecates.
    pytest.mark.filterwarnings(
        "ignore:parameter 'timeout' of type 'float' is deprecated:DeprecationWarning"
    ),
]

TICKER = '{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}'


class Certs:
    """A test CA and a server certificate for 127.0.0.1, written as PEM files."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        self.folder = folder
        self.cert = folder / "cert.pem"
        self.key = folder / "key.pem"
        self.ca_file = folder / "ca.pem"
        self.issue()

    def issue(self) -> trustme.CA:
        """A new CA and server certificate, written over the same three files."""
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        leaf.private_key_pem.write_to_path(str(self.key))
        self.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.ca = ca
        return ca

    def flags(self) -> tuple[str, ...]:
        return ("--tls-cert", str(self.cert), "--tls-key", str(self.key))

    def client_context(self, ca: trustme.CA | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        (ca or self.ca).configure_trust(context)
        return context


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path / "tls")


def tls_server(server: Any, certs: Certs, *flags: str) -> Server:
    srv = server("--tick-rate", "0", *certs.flags(), *flags)
    assert srv.url.startswith("wss://127.0.0.1:"), srv.url
    assert srv.rest_url is not None and srv.rest_url.startswith("https://"), srv.rest_url
    return srv


def wss_price(srv: Server, context: ssl.SSLContext, symbol: str = "BTCUSDT") -> dict[str, Any]:
    with srv.connect(ssl=context) as ws:
        ws.send(TICKER.replace("BTCUSDT", symbol))
        reply: dict[str, Any] = json.loads(ws.recv(timeout=5))
    assert reply["status"] == 200, reply
    return reply


def https_get(srv: Server, path: str, context: ssl.SSLContext) -> tuple[int, Any]:
    with urllib.request.urlopen(f"{srv.rest_url}{path}", context=context, timeout=5) as r:
        return r.status, json.loads(r.read())


def test_wss_and_https_answer_like_the_plain_server(server, certs, tmp_path) -> None:
    """Over TLS the WebSocket API and REST answer as without it, TLS 1.2 or later; a
    pipelined burst of large all-symbols replies (written by reference, several pieces per
    write, through the TLS transport) arrives whole and in order."""
    universe = big_universe(tmp_path / "big.json")
    srv = tls_server(server, certs, "--symbols-file", str(universe), "--weight-limit", "100000")
    context = certs.client_context()
    reply = wss_price(srv, context, "C0000BTCUSDT")
    status, rest = https_get(srv, "/fapi/v1/ticker/price?symbol=C0000BTCUSDT", context)
    assert status == 200 and rest["symbol"] == "C0000BTCUSDT"
    with srv.connect(ssl=context, max_size=None) as ws:
        ws.send(TICKER.replace("BTCUSDT", "C0000BTCUSDT"))
        one = json.loads(ws.recv(timeout=5))
        assert one["result"]["price"] == rest["price"]
        for rid in range(50):
            ws.send((ALL % rid).decode())
        for rid in range(50):
            every = json.loads(ws.recv(timeout=10))
            assert every["id"] == rid and every["status"] == 200
            assert len(every["result"]) == 1200
    assert reply["result"] == rest
    with (
        socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # TLSVersion.TLSv1_1 itself is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock,
        pytest.raises((ssl.SSLError, OSError)),
    ):
        old.wrap_socket(sock).do_handshake()
    assert "Traceback" not in srv.log()


def test_plain_clients_are_refused_cleanly(server, certs) -> None:
    """A ``ws://`` handshake or a plain HTTP request on a TLS port gets no answer it could
    mistake for one: the server closes the connection at once, logs no traceback, and
    goes on serving TLS clients."""
    from websockets.exceptions import InvalidMessage
    from websockets.sync.client import connect

    srv = tls_server(server, certs)
    raw = RawClient(srv.port)
    with pytest.raises(Closed):
        raw.handshake()
    raw.sock.close()
    assert srv.rest_url is not None
    raw = RawClient(int(srv.rest_url.rsplit(":", 1)[1]))
    with pytest.raises(Closed):
        raw.get("/fapi/v1/ping")
    raw.sock.close()
    plain_url = srv.url.replace("wss://", "ws://")
    with pytest.raises((InvalidMessage, OSError)), connect(plain_url, open_timeout=5, proxy=None):
        pass
    assert wss_price(srv, certs.client_context())["result"]["symbol"] == "BTCUSDT"
    assert "Traceback" not in srv.log()


def test_sighup_reloads_the_certificate_for_new_handshakes_only(server, certs) -> None:
    """After new files and SIGHUP, new handshakes on both ports present the new
    certificate, an open connection keeps working, and files that do not load leave the
    running certificate in place with one ERROR line."""
    srv = tls_server(server, certs)
    first_ca = certs.ca
    with srv.connect(ssl=certs.client_context()) as first:
        first.send(TICKER)
        assert json.loads(first.recv(timeout=5))["status"] == 200
        second_ca = certs.issue()
        srv.signal(signal.SIGHUP)
        srv.wait_log("TLS certificate reloaded")
        new = certs.client_context(second_ca)
        assert wss_price(srv, new)["result"]["symbol"] == "BTCUSDT"
        assert https_get(srv, "/fapi/v1/ping", new) == (200, {})
        with pytest.raises(ssl.SSLCertVerificationError):
            wss_price(srv, certs.client_context(first_ca))
        with pytest.raises(urllib.error.URLError):
            https_get(srv, "/fapi/v1/ping", certs.client_context(first_ca))
        first.send(TICKER)  # the connection opened under the first certificate
        assert json.loads(first.recv(timeout=5))["status"] == 200

        certs.cert.write_text("not a certificate\n")
        srv.signal(signal.SIGHUP)
        line = srv.wait_log("TLS reload failed")
        assert "still serving the previous certificate" in line
        assert wss_price(srv, new)["result"]["symbol"] == "BTCUSDT"
    assert "Traceback" not in srv.log()


@pytest.mark.parametrize(
    "case", ["missing", "garbage", "mismatched key", "cert only", "key only", "unreadable"]
)
def test_bad_tls_files_stop_serve_with_one_line_and_status_2(certs, tmp_path, case) -> None:
    other = Certs(tmp_path / "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    unreadable = tmp_path / "secret.pem"
    unreadable.write_bytes(certs.key.read_bytes())
    unreadable.chmod(0)
    flags = {
        "missing": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(certs.key)],
        "garbage": ["--tls-cert", str(garbage), "--tls-key", str(certs.key)],
        "mismatched key": ["--tls-cert", str(certs.cert), "--tls-key", str(other.key)],
        "cert only": ["--tls-cert", str(certs.cert)],
        "key only": ["--tls-key", str(certs.key)],
        "unreadable": ["--tls-cert", str(certs.cert), "--tls-key", str(unreadable)],
    }[case]
    if case == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    done = subprocess.run(
        [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "0", *flags],
        capture_output=True,
        timeout=20,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tickerd serve: ") and "--tls-" in lines[0], err
    assert "Traceback" not in err


# -- real Binance clients over wss:// ----------------------------------------------------


def test_official_sdk_over_wss(server, certs) -> None:
    """Binance's official SDK, told of the test CA through its own ``https_agent`` option
    (its aiohttp session would otherwise use the system's CAs)."""
    pytest.importorskip("binance_sdk_derivatives_trading_usds_futures")
    from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
        ConfigurationWebSocketAPI,
        DerivativesTradingUsdsFutures,
    )

    srv = tls_server(server, certs)
    expected = wss_price(srv, certs.client_context())["result"]

    async def scenario() -> Any:
        cfg = ConfigurationWebSocketAPI(
            api_key="dummy-key",
            api_secret="dummy-secret",
            stream_url=srv.url,
            https_agent=certs.client_context(),
        )
        client = DerivativesTradingUsdsFutures(config_ws_api=cfg)
        connection = await asyncio.wait_for(client.websocket_api.create_connection(), 10)
        assert connection is not None, "the SDK logged a connection failure"
        try:
            return await asyncio.wait_for(connection.symbol_price_ticker(symbol="BTCUSDT"), 10)
        finally:
            await asyncio.wait_for(connection.close_connection(close_session=True), 10)

    reply = asyncio.run(scenario()).data().actual_instance
    assert reply.status == 200
    assert (reply.result.symbol, reply.result.price, reply.result.time) == (
        expected["symbol"],
        expected["price"],
        expected["time"],
    )


def test_python_binance_over_wss(server, certs, monkeypatch: pytest.MonkeyPatch) -> None:
    """python-binance (websockets underneath), trusting the test CA through
    ``SSL_CERT_FILE``, which OpenSSL reads whenever a default context is made."""
    pytest.importorskip("binance")
    from binance import AsyncClient

    srv = tls_server(server, certs)
    expected = wss_price(srv, certs.client_context())["result"]
    monkeypatch.setattr(AsyncClient, "WS_FUTURES_URL", srv.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    async def scenario() -> Any:
        client = AsyncClient()
        client.ws_future.TIMEOUT = 3
        try:
            return await asyncio.wait_for(client.ws_futures_get_all_tickers(symbol="BTCUSDT"), 10)
        finally:
            await asyncio.wait_for(client.close_connection(), 10)
            await asyncio.wait_for(client.ws_future.close(), 10)

    assert asyncio.run(scenario()) == expected


def test_a_tls_handshake_that_never_comes_is_closed(server, certs) -> None:
    """A client that connects to either TLS port and sends nothing is closed after the
    TLS handshake deadline (10 s), not held for the event loop's default of 60 s."""
    srv = tls_server(server, certs)
    assert srv.rest_url is not None
    silent = [
        RawClient(srv.port, timeout=30),
        RawClient(int(srv.rest_url.rsplit(":", 1)[1]), timeout=30),
    ]
    for client in silent:
        assert client.wait_closed(timeout=30) == b""
        client.sock.close()
    assert wss_price(srv, certs.client_context())["result"]["symbol"] == "BTCUSDT"
