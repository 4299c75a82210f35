"""One bound on unsent reply bytes across every connection, and memory given back after.

Theory of operation
-------------------
Each connection already has its own bound (``--max-send-buffer-bytes``), but many clients
that stop reading can each stay just under it. A connection tells the budget its backlog
(the transport's write buffer size) whenever a write leaves something unsent; the budget
keeps the last size told per transport and their sum. A backlog that drained since it was
told is not re-told, so the sum only overestimates: when it passes the bound, every
recorded backlog is re-read first, and only if the exact total is still over are
transports aborted, largest backlog first, until it is back under.

An aborted transport holds its buffers until the end of the loop turn, and one turn may
serve many stalled clients, so a write that would not fit is checked before it is made
(:meth:`SendBudget.refuse`): its bytes count as unsent, and the backlogs of transports cut
in this turn count until they are freed. A stalled writer whose bytes still do not fit is
cut and its bytes are dropped, never handed to a transport, so memory stays within the
bound inside the turn too; a writer with nothing unsent always writes a reply of ordinary
size (:data:`FRESH_WRITE_BYTES`).

Freed reply buffers mostly stay in the allocator's heap (glibc keeps large freed chunks for
reuse), so the process would stay as large as its worst moment. Once a connection with
a large backlog has closed (its buffers freed), ``malloc_trim(0)`` is called (glibc only; at most once per
:data:`TRIM_EVERY_S`, shortly after, when the transports have released their buffers).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import platform
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tickerd.server")

TRIM_AFTER_BYTES = 256 * 1024  # a backlog this large going away is worth a trim
TRIM_DELAY_S = 0.2  # aborted transports free their buffers on a later loop turn
TRIM_EVERY_S = 1.0
# A write to a transport with nothing unsent, up to this size, is made without a check
# (the kernel's socket buffer takes it): a client that reads is not cut for a reply.
FRESH_WRITE_BYTES = 256 * 1024


def _malloc_trim() -> Callable[[], object] | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_TRIM = _malloc_trim()


def _ip(peer: Any) -> str:
    return str(peer[0]).removeprefix("::ffff:") if isinstance(peer, tuple) and peer else "?"


def release_memory() -> bool:
    """Give freed heap memory back to the system (glibc's ``malloc_trim``); False elsewhere."""
    if _TRIM is None:
        return False
    _TRIM()
    return True


class SendBudget:
    """The bound on the sum of unsent bytes over transports (see the module's docstring)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0  # the sum of the recorded live backlogs (at least the true sum)
        self.aborted = 0  # backlogs of transports cut but not yet closed (still in memory)
        self.room = limit  # limit - total - aborted: what a write may add unchecked
        self.sizes: dict[asyncio.WriteTransport, int] = {}
        self.cut = 0  # transports aborted by this budget
        self.trims = 0
        self._aborted: dict[asyncio.WriteTransport, int] = {}
        self._trim_due = False
        self._last_trim = -TRIM_EVERY_S

    def note(self, transport: asyncio.WriteTransport, size: int) -> None:
        """Record ``transport``'s current backlog; enforce the bound if the sum passes it."""
        self.total += size - self.sizes.get(transport, 0)
        self.sizes[transport] = size
        if self.total > self.limit:
            self._enforce()
        self.room = self.limit - self.total - self.aborted

    def refuse(self, transport: asyncio.WriteTransport, pending: int) -> bool:
        """Before ``pending`` more bytes are written to ``transport`` (called when they
        exceed :attr:`room`); True if ``transport`` was cut and the bytes must be dropped.

        A transport with nothing unsent writes up to :data:`FRESH_WRITE_BYTES`: the kernel
        takes most of it, and :meth:`note` sees what is left. Anything else is checked as if the bytes were
        already unsent: the largest backlogs are cut until the sum is within the bound, and
        if what was cut in this loop turn (not yet freed) still leaves no room for the
        bytes, the writer is cut too, so that memory stays bounded within the turn.
        """
        backlog = transport.get_write_buffer_size()
        if not backlog and pending <= FRESH_WRITE_BYTES:
            return False
        self._enforce(transport, backlog + pending)
        if transport in self.sizes and self.total + self.aborted > self.limit:  # this turn's
            self._cut(transport)
        self.room = self.limit - self.total - self.aborted
        return transport in self._aborted

    def was_cut(self, transport: asyncio.WriteTransport) -> bool:
        """Whether this budget aborted ``transport`` (until :meth:`forget` is told)."""
        return transport in self._aborted

    def forget(self, transport: asyncio.WriteTransport) -> None:
        """``transport`` is closed: drop its backlog (and trim memory if it was large)."""
        size = self.sizes.pop(transport, 0)
        self.total -= size
        aborted = self._aborted.pop(transport, None)
        if aborted is not None:
            self.aborted -= aborted
        self.room = self.limit - self.total - self.aborted
        if size >= TRIM_AFTER_BYTES or aborted is not None:
            self.schedule_trim()

    def _enforce(self, writer: asyncio.WriteTransport | None = None, prospective: int = 0) -> None:
        total = 0
        for transport in list(self.sizes):
            size = 0 if transport.is_closing() else transport.get_write_buffer_size()
            if size:
                self.sizes[transport] = size
                total += size
            else:
                del self.sizes[transport]
        if writer is not None:
            total += prospective - self.sizes.get(writer, 0)
            self.sizes[writer] = prospective
        self.total = total
        if total > self.limit:
            for transport in sorted(self.sizes, key=self.sizes.__getitem__, reverse=True):
                self._cut(transport)
                if self.total <= self.limit:
                    break

    def _cut(self, transport: asyncio.WriteTransport) -> None:
        size = self.sizes.pop(transport)
        self.total -= size
        self._aborted[transport] = size
        self.aborted += size
        self.cut += 1
        log.warning(
            "cutting off %s: %d unsent reply bytes, the largest while all connections "
            "together passed --max-total-send-buffer-bytes %d",
            _ip(transport.get_extra_info("peername")), size, self.limit,
        )  # fmt: skip
        transport.abort()

    def schedule_trim(self) -> None:
        """Call :func:`release_memory` soon (coalesced; at most once per TRIM_EVERY_S)."""
        if self._trim_due or _TRIM is None:
            return
        self._trim_due = True
        loop = asyncio.get_running_loop()
        delay = max(TRIM_DELAY_S, self._last_trim + TRIM_EVERY_S - loop.time())
        loop.call_later(delay, self._trim)

    def _trim(self) -> None:
        self._trim_due = False
        self._last_trim = asyncio.get_running_loop().time()
        self.trims += 1
        release_memory()
