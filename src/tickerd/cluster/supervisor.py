"""``tickerd serve --workers N``: one supervisor process owning the listening sockets and
N worker processes serving them.

The supervisor binds every public port as a reuseport group of N sockets (``reuseport``),
pinning each client IP to one worker, then forks the workers; worker ``i`` serves socket
``i`` of each group. The supervisor never accepts a connection and runs no event loop: it
waits for signals (``sigtimedwait``), so it has nothing else to get wrong.

* A worker that dies is forked again in its slot; its sockets never closed, so its clients
  wait in the backlog meanwhile. A worker that dies within ``FLAPPING_S`` of its start is
  restarted after a delay that doubles up to ``MAX_DELAY_S``.
* A signal in ``forward`` (SIGHUP with ``--tls-cert``: reload the certificate) is sent on
  to every worker.
* SIGTERM or SIGINT: every worker gets SIGTERM and drains (closes its connections with
  1001, stops its feeds, flushes its store); one still alive after ``drain_timeout`` is
  killed. The supervisor exits 0 when every worker stopped by itself, else 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Collection, Mapping

from .reuseport import bind_group

log = logging.getLogger("tickerd.supervisor")

FLAPPING_S = 1.0
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}

#: What a worker runs: its index and its sockets by port name; returns the exit status.
WorkerMain = Callable[[int, dict[str, socket.socket]], int]


def worker_count(spec: str) -> int:
    """``--workers``: a positive integer, or ``auto`` (one per core this process may use)."""
    if spec.strip().lower() == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    try:
        n = int(spec)
    except ValueError:
        n = 0
    if not 1 <= n <= 1024:
        raise ValueError(f"--workers must be 1 to 1024 or auto, not {spec!r}")
    return n


class Slot:
    """One worker's place: its process, when it started, its restart delay."""

    __slots__ = ("delay", "due", "index", "pid", "restarts", "started")

    def __init__(self, index: int) -> None:
        self.index = index
        self.pid = 0
        self.started = 0.0
        self.delay = 0.0
        self.due = 0.0  # when a dead worker is forked again (monotonic)
        self.restarts = 0


class Supervisor:
    """Binds ``ports`` (name → port, on ``host``) and runs ``count`` workers of ``main``."""

    def __init__(
        self,
        main: WorkerMain,
        count: int,
        host: str,
        ports: Mapping[str, int],
        *,
        drain_timeout: float = 10.0,
        forward: Collection[signal.Signals] = (),
    ) -> None:
        self.main = main
        self.forward = frozenset(forward)
        self.signals = _SIGNALS | self.forward
        self.count = count
        self.host = host
        self.ports = dict(ports)
        self.drain_timeout = drain_timeout
        self.groups: dict[str, list[socket.socket]] = {}
        self.slots = [Slot(i) for i in range(count)]

    def bind(self) -> dict[str, int]:
        """Bind every group; returns the ports bound (port 0 resolved)."""
        try:
            for name, port in self.ports.items():
                self.groups[name] = bind_group(self.host, port, self.count)
        except BaseException:
            self.close()
            raise
        return {name: socks[0].getsockname()[1] for name, socks in self.groups.items()}

    def close(self) -> None:
        """Close every listening socket."""
        for socks in self.groups.values():
            for s in socks:
                s.close()
        self.groups.clear()

    def run(self) -> int:
        """Fork the workers and supervise them until SIGTERM/SIGINT; the exit status."""
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        try:
            for slot in self.slots:
                self._spawn(slot, previous)
            while True:
                now = time.monotonic()
                due = [s.due for s in self.slots if not s.pid]
                timeout = max(0.0, min(due) - now) if due else 3600.0
                info = signal.sigtimedwait(self.signals, timeout)
                if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                    return self._drain()
                if info is not None and info.si_signo in self.forward:
                    for slot in self.slots:
                        if slot.pid:
                            _signal(slot.pid, signal.Signals(info.si_signo))
                self._reap()
                now = time.monotonic()
                for slot in self.slots:
                    if not slot.pid and slot.due <= now:
                        self._spawn(slot, previous)
        finally:
            self.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _spawn(self, slot: Slot, mask: set[int | signal.Signals]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                mine = {name: socks[slot.index] for name, socks in self.groups.items()}
                for socks in self.groups.values():
                    for s in socks:
                        if s not in mine.values():
                            s.close()
                code = self.main(slot.index, mine)
            except BaseException:  # noqa: BLE001 - a worker never returns into the supervisor
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        slot.pid = pid
        slot.started = time.monotonic()
        log.info("tickerd worker %d: pid %d", slot.index, pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for slot in self.slots:
                if slot.pid == pid:
                    self._died(slot, status)

    def _died(self, slot: Slot, status: int) -> None:
        now = time.monotonic()
        flapping = now - slot.started < FLAPPING_S
        slot.delay = min(MAX_DELAY_S, max(FIRST_DELAY_S, slot.delay * 2)) if flapping else 0.0
        slot.due = now + slot.delay
        slot.pid = 0
        slot.restarts += 1
        log.warning(
            "tickerd worker %d died (%s); restarting in %.1f s",
            slot.index,
            _describe(status),
            slot.delay,
        )

    def _drain(self) -> int:
        log.info("tickerd supervisor: stopping %d workers", self.count)
        alive = {s.pid: s for s in self.slots if s.pid}
        for pid in alive:
            _signal(pid, signal.SIGTERM)
        clean = True
        deadline = time.monotonic() + self.drain_timeout
        while alive:
            left = deadline - time.monotonic()
            if left <= 0:
                for pid in alive:
                    _signal(pid, signal.SIGKILL)
                clean = False
                deadline = time.monotonic() + 5.0
            signal.sigtimedwait({signal.SIGCHLD}, max(0.01, min(left, 0.5)))
            while alive:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    alive.clear()
                    break
                if pid == 0:
                    break
                if alive.pop(pid, None) is not None and status != 0:
                    clean = False
        return 0 if clean else 1


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
