"""The connection limits and TLS behind the scale-out paths, against real processes: REST
connection caps on a worker's handed-over socket, the caps counting the client a trusted
balancer's PROXY header names, and ``--workers`` with ``--tls-cert`` (SIGHUP to the
supervisor reloads every worker's certificate)."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from cluster_procs import node, sources_for, wait_for
from test_tls import Certs
from test_trusted_proxy import GET, status_of, v1

pytestmark = pytest.mark.timeout(90)
PING = "/fapi/v1/ping"
LB = "127.0.0.2"


def held(port: int, source: str, first: bytes = b"") -> socket.socket:
    """A keep-alive REST connection from ``source`` that has had one request answered
    (so the server holds it open); ``first`` goes before the request (a PROXY header)."""
    sock = socket.create_connection(("127.0.0.1", port), 5, (source, 0))
    sock.sendall(first + b"GET " + PING.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200"), source
    return sock


def answer(port: int, source: str, first: bytes = b"") -> tuple[int, bytes]:
    """The status and body of one request on a new connection from ``source``."""
    with socket.create_connection(("127.0.0.1", port), 5, (source, 0)) as sock:
        sock.sendall(first + GET)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return status_of(reply), reply.partition(b"\r\n\r\n")[2]


def test_rest_caps_hold_on_each_worker_socket() -> None:
    """With ``--workers 2`` each worker's REST socket caps connections per client IP: the
    third from one IP is answered 503 / -1008 while another IP (on the other worker) is
    served."""
    (a,), (b,) = sources_for(2)
    with node(["--tick-rate", "5", "--http-max-connections-per-ip", "2"]) as n:
        n.wait_healthy([a, b])
        with ExitStack() as stack:
            for _ in range(2):
                stack.callback(held(n.rest_port, a).close)
            status, body = answer(n.rest_port, a)
            assert status == 503
            assert json.loads(body)["code"] == -1008
            assert answer(n.rest_port, b)[0] == 200
        # Once they close, the IP is admitted again.
        wait_for(lambda: answer(n.rest_port, a)[0] == 200, 10, "the caps freed")
        assert "answered 503" in n.text()


def test_caps_count_the_client_a_trusted_proxy_header_names() -> None:
    """Behind a trusted balancer the per-IP cap counts the client its PROXY header names:
    one client past the cap is refused, another through the same balancer is served."""
    args = ["--tick-rate", "5", "--trusted-proxy", f"{LB}/32", "--http-max-connections-per-ip",
            "2"]  # fmt: skip
    with node(args, workers=1) as n:
        n.wait_healthy(["127.0.0.1"])
        with ExitStack() as stack:
            for _ in range(2):
                stack.callback(held(n.rest_port, LB, v1("198.51.100.7")).close)
            assert answer(n.rest_port, LB, v1("198.51.100.7"))[0] == 503
            assert answer(n.rest_port, LB, v1("198.51.100.8"))[0] == 200
            # Without a PROXY header the balancer itself is the client.
            assert answer(n.rest_port, LB)[0] == 200


def https_ping(port: int, source: str, context: ssl.SSLContext) -> int:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=5, source_address=(source, 0), context=context
    )
    try:
        conn.request("GET", PING)
        return conn.getresponse().status
    finally:
        conn.close()


def test_workers_serve_tls_and_sighup_reloads_every_worker(tmp_path: Path) -> None:
    """``--workers 2 --tls-cert/--tls-key``: both workers serve https://; SIGHUP to the
    supervisor is passed to every worker, which then present the new certificate, and the
    supervisor keeps running."""
    certs = Certs(tmp_path / "tls")
    (a,), (b,) = sources_for(2)
    with node(["--tick-rate", "5", *certs.flags()]) as n:
        old = certs.client_context()
        for source in (a, b):
            wait_for(lambda s=source: _ok(n.rest_port, s, old), 30, f"https via {source}")
        new_ca = certs.issue()
        n.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: n.text().count("TLS certificate reloaded") == 2, 20, "two reloads")
        new = certs.client_context(new_ca)
        for source in (a, b):
            assert https_ping(n.rest_port, source, new) == 200
            with pytest.raises(ssl.SSLCertVerificationError):
                https_ping(n.rest_port, source, old)
        assert n.proc.poll() is None
        assert "died" not in n.text()
        assert n.stop() == 0


def _ok(port: int, source: str, context: ssl.SSLContext) -> bool:
    try:
        return https_ping(port, source, context) == 200
    except OSError:
        return False


def test_workers_with_bad_tls_files_stop_at_once_with_status_2(tmp_path: Path) -> None:
    """Bad TLS files stop ``--workers`` before any worker is forked: one line, status 2."""
    certs = Certs(tmp_path / "tls")
    certs.cert.write_text("not a certificate\n")
    done = subprocess.run(
        [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "0",
         "--workers", "2", *certs.flags()],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tickerd serve: --tls-cert"), done.stderr
    assert "not a PEM certificate" in lines[0]
