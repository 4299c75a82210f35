"""Server-to-client WebSocket frame headers (RFC 6455 §5.2), unmasked, FIN set."""

from __future__ import annotations

_SMALL = [bytes((0x81, n)) for n in range(126)]


def text_header(length: int) -> bytes:
    """The header of a single-frame text message of ``length`` payload bytes."""
    if length < 126:
        return _SMALL[length]
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


# Close codes a peer may send (RFC 6455 §7.4.1, IANA registry); 1005/1006/1015 never on the wire.
VALID_CLOSE_CODES = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)


def valid_close_code(code: int) -> bool:
    """Whether a close code received from a peer is legal on the wire."""
    return code in VALID_CLOSE_CODES or 3000 <= code <= 4999
