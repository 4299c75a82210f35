"""``tickerd serve --workers N``: real supervisor and worker processes on real sockets.

One client IP reaches one worker (the reuseport pin), so its weight is one budget however
many connections it opens; a worker that dies is restarted while the port stays open;
SIGTERM drains every worker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from cluster_procs import node, sources_for, wait_for
from tickerd.cluster.reuseport import bind_group, pin_index
from tickerd.cluster.supervisor import worker_count

pytestmark = pytest.mark.timeout(90)
PRICE = "/fapi/v1/ticker/price?symbol=BTCUSDT"


def test_the_pin_program_sends_an_ip_to_the_socket_pin_index_names() -> None:
    socks = bind_group("127.0.0.1", 0, 3)
    try:
        port = socks[0].getsockname()[1]
        for i in range(2, 14):
            source = f"127.0.0.{i}"
            for _ in range(3):
                with socket.socket() as c:
                    c.bind((source, 0))
                    c.connect(("127.0.0.1", port))
                    hit = None
                    deadline = time.monotonic() + 5
                    while hit is None and time.monotonic() < deadline:
                        for n, s in enumerate(socks):
                            try:
                                s.accept()[0].close()
                                hit = n
                            except BlockingIOError:
                                pass
                assert hit == pin_index(source, 3), source
    finally:
        for s in socks:
            s.close()


def test_worker_counts() -> None:
    assert worker_count("3") == 3
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "x", "1025", ""):
        with pytest.raises(ValueError, match="--workers"):
            worker_count(bad)


def test_one_ip_over_many_connections_spends_one_budget() -> None:
    (a,), (b,) = sources_for(2)
    with node(["--weight-limit", "30", "--tick-rate", "5"]) as n:
        n.wait_healthy([a, b])
        assert {n.health(a)["worker"]["index"], n.health(b)["worker"]["index"]} == {0, 1}
        for source in (a, b):
            seen = []
            for _ in range(36):  # a new TCP connection each time
                status, headers, _ = n.get(PRICE, source)
                seen.append((status, int(headers["x-mbx-used-weight-1m"])))
            # One window for the IP, whichever connection: 1, 2, … 30 admitted, then 429.
            assert seen[:30] == [(200, i) for i in range(1, 31)], source
            assert all(status == 429 for status, _ in seen[30:]), seen[30:]
            assert n.health(source)["worker"]["index"] == pin_index(source, 2)


def test_a_dead_worker_is_restarted_and_the_port_stays_open() -> None:
    (a,), (b,) = sources_for(2)
    with node(["--tick-rate", "5"]) as n:
        n.wait_healthy([a, b])
        victim, other = n.health(a)["worker"]["pid"], n.health(b)["worker"]["pid"]
        os.kill(victim, signal.SIGKILL)
        # Connections from a's IP wait in the backlog of its (still open) socket and are
        # answered by the new worker.
        status, _, _ = n.get(PRICE, a)
        assert status == 200
        assert n.health(a)["worker"]["pid"] != victim
        assert n.health(b)["worker"]["pid"] == other
        line = f"tickerd worker {pin_index(a, 2)} died (signal SIGKILL)"
        wait_for(lambda: line in n.text(), 10, "the supervisor logs the death")


def test_sigterm_drains_every_worker() -> None:
    (a,), (b,) = sources_for(2)
    with node(["--tick-rate", "5"]) as n:
        n.wait_healthy([a, b])
        pids = [n.health(s)["worker"]["pid"] for s in (a, b)]
        with ExitStack() as stack:
            clients = []
            for source in (a, b):
                sock = socket.create_connection(("127.0.0.1", n.ws_port), 5, (source, 0))
                url = f"ws://127.0.0.1:{n.ws_port}/ws-fapi/v1"
                clients.append(stack.enter_context(connect(url, sock=sock, open_timeout=5)))
            n.proc.send_signal(signal.SIGTERM)
            for ws in clients:
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=15)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert n.proc.wait(20) == 0
        for pid in pids:
            wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 10, f"worker {pid}")


def test_one_process_never_imports_redis() -> None:
    code = (
        "import asyncio, sys\n"
        "from tickerd.app import Service\n"
        "from tickerd.config import Settings\n"
        "async def main():\n"
        "    s = Service(Settings(port=0, rest_port=0, trusted_proxy='10.0.0.0/8'))\n"
        "    await s.start()\n"
        "    await s.stop()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'hiredis')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_workers_without_redis_refuse_the_control_plane_and_push() -> None:
    for extra in (["--control-port", "0", "--control-token", "t"], ["--feed", "push"]):
        done = subprocess.run(
            [sys.executable, "-m", "tickerd", "serve", "--workers", "2", "--port", "0", *extra],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.strip() == (
            "tickerd: --workers with the control plane or the push feed needs --redis "
            "(the workers share prices and limits through it)"
        )
    done = subprocess.run(
        [sys.executable, "-m", "tickerd", "serve", "--workers", "zero"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        "tickerd serve: --workers 'zero': expected an integer from 1 to 1024 or auto\n"
    )
