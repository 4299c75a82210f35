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

Freed reply buffers mostly stay in the allocator's heap (glibc keeps large freed chunks for
reuse), so the process would stay as large as its worst moment. After any connection with
a large backlog goes away, ``malloc_trim(0)`` is called (glibc only; at most once per
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
        self.total = 0  # the sum of the recorded sizes (at least the true total)
        self.sizes: dict[asyncio.WriteTransport, int] = {}
        self.cut = 0  # transports aborted by this budget
        self.trims = 0
        self._trim_due = False
        self._last_trim = -TRIM_EVERY_S

    def note(self, transport: asyncio.WriteTransport, size: int) -> None:
        """Record ``transport``'s current backlog; enforce the bound if the sum passes it."""
        self.total += size - self.sizes.get(transport, 0)
        self.sizes[transport] = size
        if self.total > self.limit:
            self._enforce()

    def forget(self, transport: asyncio.WriteTransport) -> None:
        """``transport`` is closed: drop its backlog (and trim memory if it was large)."""
        size = self.sizes.pop(transport, 0)
        self.total -= size
        if size >= TRIM_AFTER_BYTES:
            self.schedule_trim()

    def _enforce(self) -> None:
        total = 0
        for transport in list(self.sizes):
            size = 0 if transport.is_closing() else transport.get_write_buffer_size()
            if size:
                self.sizes[transport] = size
                total += size
            else:
                del self.sizes[transport]
        self.total = total
        if total <= self.limit:
            return
        for transport in sorted(self.sizes, key=self.sizes.__getitem__, reverse=True):
            size = self.sizes.pop(transport)
            self.total -= size
            self.cut += 1
            log.warning(
                "cutting off %s: %d unsent reply bytes, the largest while all connections "
                "together passed --max-total-send-buffer-bytes %d",
                _ip(transport.get_extra_info("peername")), size, self.limit,
            )  # fmt: skip
            transport.abort()
            if self.total <= self.limit:
                break
        self.schedule_trim()

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
