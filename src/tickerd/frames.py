"""Server-to-client WebSocket frames (RFC 6455 §5.2): unmasked, FIN set, as bytes.

https://www.rfc-editor.org/rfc/rfc6455#section-5.2
"""

from __future__ import annotations

from typing import Final

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

_SMALL: Final = [bytes((0x81, n)) for n in range(126)]  # Final: a C constant when compiled

# A close frame's payload is at most 125 bytes (§5.5): a 2-byte code and 123 of reason.
MAX_CLOSE_REASON_BYTES = 123

# Close codes a peer may send (RFC 6455 §7.4.1, IANA registry); 1005/1006/1015 never on the wire.
VALID_CLOSE_CODES = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)


def text_header(length: int) -> bytes:
    """The header of a single-frame text message of ``length`` payload bytes."""
    if length < 126:
        return _SMALL[length]
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A ping, pong or close frame; ``payload`` must be at most 125 bytes (§5.5)."""
    if len(payload) > 125:
        raise ValueError("a control frame carries at most 125 bytes")
    return bytes((0x80 | opcode, len(payload))) + payload


def valid_close_code(code: int) -> bool:
    """Whether a close code is legal on the wire (received from a peer, or sent)."""
    return code in VALID_CLOSE_CODES or 3000 <= code <= 4999


def close_reason(reason: str) -> bytes:
    """``reason`` as the UTF-8 of a close frame: at most 123 bytes, cut at a character
    boundary (never inside a UTF-8 sequence); a lone surrogate becomes ``?``."""
    data = reason.encode("utf-8", "replace")
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return data
    cut = MAX_CLOSE_REASON_BYTES
    while data[cut] & 0xC0 == 0x80:  # the byte after the cut continues a character
        cut -= 1
    return data[:cut]


def close_payload(code: int, reason: bytes = b"") -> bytes:
    """The payload of a close frame with ``code`` and an already-bounded ``reason``."""
    return code.to_bytes(2, "big") + reason
