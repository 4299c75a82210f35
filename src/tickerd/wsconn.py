"""One WebSocket API connection, sans I/O: frames in, bytes to send and timers out.

Theory of operation
-------------------
The transport parses frames (masking, opcodes, control-frame limits and the frame size
bound are the parser's) and hands each one to :meth:`WSConnection.receive_frame` as plain
fields. The connection does the rest of RFC 6455 that a server owes — reassembly of
fragmented messages under ``max_message_bytes`` (1009), 1002 for RSV bits without an
extension, stray continuations, data frames inside a fragmented message and invalid close
codes, 1007 for invalid UTF-8 — plus Binance's rules: at most 5 ping/pong frames a second
(1008), a ping every ``ping_interval``, a close when a ping stays unanswered for
``pong_timeout`` (1008), a close at ``max_lifetime`` (1001). Time comes in as arguments:
``now`` (seconds, a monotonic clock) for the timers, ``now_ms`` (the service clock) for the
protocol and the ping payload. :meth:`tick` is called periodically for the timers.

What it produces waits in :attr:`~WSConnection.out` (small frames, copied together) and
:attr:`~WSConnection.parts` (filled only when a large cached body goes out by reference,
between copied pieces); then :attr:`~WSConnection.close_frame` (the code and reason to
close with, sent after everything else) and :attr:`~WSConnection.end` (whether the TCP
connection should now close, or be aborted). The transport writes them once per socket
read. :meth:`data_to_send` returns all of it as bytes, for tests.

A complete text message goes to the connection's *stage* (:class:`Stage`), the one slot a
fault replaces: by default the connection itself (:meth:`WSConnection.text` asks the
protocol handler and queues the reply; :meth:`WSConnection.ping` answers a client ping;
:meth:`WSConnection.send_reply` queues a reply). The fault injector installs a stage of its
own with :meth:`WSConnection.use_stage` and puts the connection back with
``use_stage(conn)``; no fault armed means no stage but the connection and no check on the
frame path. :attr:`~WSConnection.respond` is the stage's ``text``, kept bound so the plain
text frame costs one call.

States: OPEN until a close frame is queued (by either side), CLOSING until the transport
should close (the peer answered, or ``close_timeout`` passed), then CLOSED. Nothing is
queued after the close frame (§5.5.1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Protocol

from .frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_payload,
    close_reason,
    control_frame,
    text_header,
    valid_close_code,
)
from .protocol import CloseConnection, Reply, Session

log = logging.getLogger("tickerd.server")

Handler = Callable[[bytes, Session, int], Reply]
"""Answers one text message: ``Protocol.handle(payload, session, now_ms)``."""

BIG_PART: Final = 16 * 1024  # reply pieces at least this large go out by reference, not copied
CONTROL_FRAMES_PER_S: Final = 5  # Binance: at most 5 ping/pong frames per second


class State(Enum):
    """Where a connection is in its life (RFC 6455 §7)."""

    OPEN = "open"
    CLOSING = "closing"  # our close frame is queued or sent; waiting for the peer's
    CLOSED = "closed"  # the transport should close now (see ``end``)


class End(Enum):
    """What the transport should do with the TCP connection after writing the output."""

    NONE = 0
    CLOSE = 1  # close after the queued bytes
    ABORT = 2  # drop at once (the peer did not answer our close frame in time)


@dataclass(frozen=True, slots=True)
class Limits:
    """A connection's bounds and timers (seconds)."""

    max_message_bytes: int = 64 * 1024
    ping_interval: float = 180.0
    pong_timeout: float = 600.0
    max_lifetime: float = 86_400.0
    close_timeout: float = 5.0


class Stage(Protocol):
    """What turns complete messages into output: the connection, or a fault's stand-in."""

    def text(self, payload: bytes, now_ms: int) -> None:
        """Answer one complete text message."""

    def ping(self, payload: bytes, now: float) -> None:
        """Answer one client ping."""

    def send_reply(self, reply: Reply) -> None:
        """Queue one reply frame."""


class WSConnection:
    """The RFC 6455 server side of one connection (see the module docstring)."""

    __slots__ = (
        "binary_reply",
        "close_frame",
        "closing_since",
        "control_count",
        "control_window",
        "end",
        "fragment_text",
        "fragments",
        "fragments_size",
        "handler",
        "last_ping",
        "limits",
        "opened",
        "out",
        "parts",
        "plain",
        "respond",
        "session",
        "stage",
        "state",
        "unanswered_since",
    )

    def __init__(
        self,
        handler: Handler,
        session: Session,
        limits: Limits,
        now: float,
        *,
        binary_reply: Reply,
    ) -> None:
        self.handler = handler
        self.session = session
        self.limits = limits
        self.binary_reply = binary_reply  # the answer to a binary message
        self.state = State.OPEN
        self.out = bytearray()
        self.parts: list[bytes] = []
        self.close_frame: tuple[int, bytes] | None = None
        self.end = End.NONE
        # True while a complete unfragmented text frame can go straight to ``respond``.
        self.plain = True
        self.fragments: list[bytes] | None = None
        self.fragments_size = 0
        self.fragment_text = True
        self.opened = self.last_ping = now
        self.unanswered_since = 0.0  # when the oldest ping still without a pong was sent
        self.closing_since = 0.0  # when our close frame was queued; -1: not yet stamped
        self.control_window = 0
        self.control_count = 0
        self.stage: Stage = self
        self.respond: Callable[[bytes, int], None] = self.text

    def use_stage(self, stage: Stage) -> None:
        """Route messages through ``stage`` (``self`` to undo): the slot faults replace."""
        self.stage = stage
        self.respond = stage.text

    # -- frames in ----------------------------------------------------------------------

    def receive_frame(
        self, opcode: int, fin: bool, rsv: int, payload: bytes, now: float, now_ms: int
    ) -> None:
        """One frame from the peer: its opcode, FIN bit, RSV bits (0..7) and payload."""
        if self.state is not State.OPEN:
            if opcode == OP_CLOSE and self.state is State.CLOSING:
                self._finish(End.CLOSE)  # the peer answered our close frame
            return  # nothing is answered after our close frame
        if rsv:
            self.close(1002, "RSV bits set without a negotiated extension", now)
            return
        if opcode == OP_TEXT and fin and self.fragments is None:
            self.respond(payload, now_ms)
            return
        if opcode == OP_PONG and self.unanswered_since:
            # Any pong while our ping is outstanding answers it: some clients answer with
            # an empty payload.
            self.unanswered_since = 0.0
        elif opcode == OP_PING:
            self.stage.ping(payload, now)
        elif opcode == OP_PONG:
            # Unsolicited pongs are allowed, but proof of nothing; they count against
            # Binance's 5 ping/pong frames per second.
            if not self._control_allowed(now):
                self.close(1008, "too many ping/pong frames", now)
        elif opcode == OP_CLOSE:
            self._peer_closed(payload)
        elif opcode == OP_CONTINUATION:
            if self.fragments is None:
                self.close(1002, "continuation frame without a message to continue", now)
                return
            self._add_fragment(payload, fin, now, now_ms)
        elif self.fragments is not None:
            self.close(1002, "new data frame inside a fragmented message", now)
        elif opcode not in (OP_TEXT, OP_BINARY):
            self.close(1002, "reserved opcode", now)
        elif fin:
            self._message(opcode == OP_TEXT, payload, now_ms)
        else:
            self.fragments = []
            self.fragments_size = 0
            self.fragment_text = opcode == OP_TEXT
            self.plain = False
            self._add_fragment(payload, fin, now, now_ms)

    def _add_fragment(self, payload: bytes, fin: bool, now: float, now_ms: int) -> None:
        fragments = self.fragments
        assert fragments is not None
        self.fragments_size += len(payload)
        if self.fragments_size > self.limits.max_message_bytes:
            self.close(1009, "message too big", now)
            return
        fragments.append(payload)
        if fin:
            self.fragments = None
            self.plain = True
            self._message(self.fragment_text, b"".join(fragments), now_ms)

    def _message(self, text: bool, payload: bytes, now_ms: int) -> None:
        if text:
            self.respond(payload, now_ms)
        else:
            self.stage.send_reply(self.binary_reply)

    def _control_allowed(self, now: float) -> bool:
        """Whether this ping/pong frame is within Binance's 5 per second."""
        second = int(now)
        if second != self.control_window:
            self.control_window = second
            self.control_count = 0
        self.control_count += 1
        return self.control_count <= CONTROL_FRAMES_PER_S

    def _peer_closed(self, payload: bytes) -> None:
        """Echo the peer's close code (1002 for an invalid one), then close TCP."""
        if not payload:
            self._queue_close(1000, b"")
        elif len(payload) == 1:
            self._queue_close(1002, b"invalid close frame")
        else:
            code = int.from_bytes(payload[:2], "big")
            try:
                payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                self._queue_close(1007, b"invalid UTF-8 in close reason")
            else:
                if valid_close_code(code):
                    self._queue_close(code, b"")
                else:
                    self._queue_close(1002, b"invalid close code")
        self._finish(End.CLOSE)

    # -- stage: the connection's own answers -------------------------------------------

    def text(self, payload: bytes, now_ms: int) -> None:
        """Answer a text message with the handler's reply (the default stage)."""
        try:
            reply = self.handler(payload, self.session, now_ms)
        except CloseConnection as exc:
            self.close(exc.code, exc.reason)
            return
        if len(reply) == 1 and len(reply[0]) < BIG_PART:  # the common case: one small piece
            body = reply[0]
            out = self.out
            out += text_header(len(body))
            out += body
            return
        self.send_reply(reply)

    def ping(self, payload: bytes, now: float) -> None:
        """Answer a client ping with a pong, within Binance's 5 ping/pong frames a second."""
        if not self._control_allowed(now):
            self.close(1008, "too many ping/pong frames", now)
        else:
            self.out += control_frame(OP_PONG, payload)

    def send_reply(self, reply: Reply) -> None:
        """Queue one text frame whose payload is the concatenation of ``reply``."""
        if self.state is not State.OPEN:
            return
        size = 0
        for part in reply:
            size += len(part)
        out = self.out
        out += text_header(size)
        for part in reply:
            if len(part) < BIG_PART:
                out += part
            else:  # a large cached body goes out by reference, between the small pieces
                self.parts.append(bytes(out))
                out.clear()
                self.parts.append(part)

    # -- closing and timers -------------------------------------------------------------

    def close(self, code: int, reason: str = "", now: float | None = None) -> None:
        """Queue a close frame with ``code`` after what is queued; the peer then has
        ``close_timeout`` to answer. ``reason`` is cut to 123 UTF-8 bytes (RFC 6455 §5.5)
        at a character boundary. ``now``: when (default: the next :meth:`tick`).
        Raises ValueError for a code that may not be sent (RFC 6455 §7.4)."""
        if not valid_close_code(code):
            raise ValueError(f"close code {code} may not be sent")
        if self.state is not State.OPEN:
            return
        self._queue_close(code, close_reason(reason))
        self.closing_since = -1.0 if now is None else now

    def _queue_close(self, code: int, reason: bytes) -> None:
        self.close_frame = (code, reason)
        self.state = State.CLOSING
        self.plain = False
        self.fragments = None

    def _finish(self, end: End) -> None:
        self.state = State.CLOSED
        self.end = end

    def tick(self, now: float, now_ms: int) -> None:
        """Timers: the close timeout, the lifetime, the pong timeout, the next ping."""
        state = self.state
        limits = self.limits
        if state is State.CLOSING:
            if self.closing_since < 0:
                self.closing_since = now
            elif now - self.closing_since >= limits.close_timeout:
                self._finish(End.ABORT)
        elif state is not State.OPEN:
            return
        elif now - self.opened >= limits.max_lifetime:
            self.close(1001, "", now)
        elif self.unanswered_since and now - self.unanswered_since >= limits.pong_timeout:
            log.info("closing %s: no pong in %.0f s", self.session.client, limits.pong_timeout)
            self.close(1008, "pong timeout", now)
        elif now - self.last_ping >= limits.ping_interval:
            self.out += control_frame(OP_PING, b"%d" % now_ms)
            self.last_ping = now
            self.unanswered_since = self.unanswered_since or now

    def lost(self) -> None:
        """The transport closed: nothing more will be sent."""
        self.state = State.CLOSED
        self.plain = False
        self.discard_output()

    def discard_output(self) -> None:
        """Forget the queued output (the transport closed the stream by itself)."""
        self.out.clear()
        self.parts.clear()
        self.close_frame = None

    # -- output -------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued, as the bytes on the wire (close frame last), and clear it."""
        data = b"".join(self.parts) + bytes(self.out)
        if self.close_frame is not None:
            code, reason = self.close_frame
            data += control_frame(OP_CLOSE, close_payload(code, reason))
        self.discard_output()
        return data
