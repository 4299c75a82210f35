"""One WebSocket connection of :class:`tickerd.client.Client`: its requests in flight and its end.

picows calls the ``on_ws_*`` methods; a :class:`Link` reassembles fragmented replies (up to
``max_message_bytes``), echoes a valid close code, and fails every request in flight with
:class:`~tickerd.errors.ConnectionLost` the moment the connection ends. What a reply means is
the client's business: each complete text message goes to ``on_message``, and the link's end
to ``on_down``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from ..errors import ConnectionLost

__all__ = ["Link"]

log = logging.getLogger("tickerd.client")

_ECHOED_CLOSE_CODES = frozenset(
    c for c in WSCloseCode if c not in (WSCloseCode.NO_INFO, WSCloseCode.ABNORMAL_CLOSURE)
)


class Link(WSListener):
    """One WebSocket connection: its requests in flight and its end."""

    def __init__(
        self,
        url: str,
        max_message_bytes: int,
        on_message: Callable[[Link, bytes], None],
        on_down: Callable[[Link], None],
    ) -> None:
        super().__init__()
        self.url = url
        self.max_message_bytes = max_message_bytes
        self.on_message = on_message
        self.on_down = on_down
        self.transport: WSTransport | None = None
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.closing = False  # no new requests: a close frame passed, or it is draining
        self.draining = False  # serverShutdown: finish what is in flight, then close
        self.close_code: int | None = None
        self.close_reason = ""
        self.fragments: list[bytes] | None = None
        self.fragments_size = 0
        self.disconnected = asyncio.Event()

    @property
    def usable(self) -> bool:
        t = self.transport
        return not self.closing and t is not None and not t.is_disconnected

    @property
    def detail(self) -> str:
        """The close code and reason, as one string."""
        return f"{self.close_code} {self.close_reason}".strip()

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, payload)

    def fail_all(self, why: str) -> None:
        """Fail every request in flight with :class:`ConnectionLost`."""
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(
                    ConnectionLost(why, close_code=self.close_code, close_reason=self.close_reason)
                )

    def close(self, code: WSCloseCode = WSCloseCode.OK) -> None:
        self.closing = True
        t = self.transport
        if t is not None and not t.is_disconnected:
            if not t.is_close_frame_sent:
                t.send_close(code)
            t.disconnect()

    # -- picows callbacks -----------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closing = True
        if self.close_code is not None:
            why = f"connection closed ({self.detail})"
        else:
            why = "connection lost"
        self.fail_all(why)
        self.disconnected.set()
        self.on_down(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT and frame.fin and self.fragments is None:
            self.on_message(self, frame.get_payload_as_bytes())
        elif kind == WSMsgType.CLOSE:
            self._closed_by_server(transport, frame)
        elif kind == WSMsgType.TEXT or (kind == WSMsgType.CONTINUATION and self.fragments):
            self._fragment(frame)
        elif kind == WSMsgType.BINARY:
            log.warning("ignoring a binary frame from %s", self.url)

    def _fragment(self, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.fragments, self.fragments_size = [], 0
        assert self.fragments is not None
        self.fragments_size += frame.payload_size
        if self.fragments_size > self.max_message_bytes:
            self.fragments = None
            self.close_code, self.close_reason = 1009, "reply larger than max_message_bytes"
            self.fail_all(f"the client closed the connection ({self.detail})")
            self.close(WSCloseCode.MESSAGE_TOO_BIG)
            return
        self.fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            payload = b"".join(self.fragments)
            self.fragments = None
            self.on_message(self, payload)

    def _closed_by_server(self, transport: WSTransport, frame: WSFrame) -> None:
        code = frame.get_close_code()
        self.close_code = code.value if isinstance(code, WSCloseCode) else int(code)
        try:
            self.close_reason = frame.get_close_reason()
        except UnicodeDecodeError:
            self.close_reason = ""
        self.closing = True
        # Replies precede the close frame on the wire: whatever is still pending is lost.
        self.fail_all(f"the server closed the connection ({self.detail})")
        if not transport.is_close_frame_sent:
            transport.send_close(code if code in _ECHOED_CLOSE_CODES else WSCloseCode.OK)
        transport.disconnect()
