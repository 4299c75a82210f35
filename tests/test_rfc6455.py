"""RFC 6455 conformance of the WebSocket API server, byte by byte over a raw socket.

The rules the server owes on top of picows (fragmentation and its errors, RSV bits, invalid
UTF-8, size bounds, close codes, binary frames, pings) are tested in full in process against
``WSConnection`` (``tests/test_wsconn.py``); here a few of each run end to end, with frames
no client library would send, split across TCP writes as a real peer would. The rules
picows keeps itself (masking, opcodes, control-frame limits, the frame bound) are all here,
so a picows upgrade that drops one of them is noticed.

After a close frame from the server the test answers with its own close frame and then
expects the server to close the TCP connection (RFC 6455 §7.1.1: the server closes first).
"""

from __future__ import annotations

import contextlib
import json
import struct
import time

import pytest

from helpers_core import request

pytestmark = pytest.mark.timeout(30)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 1024
INVALID_JSON = b'{"id":null,"status":400,"error":{"code":-1000,"msg":"Invalid JSON request."}}'


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server("--max-message-bytes", str(MAX_MESSAGE), minute_margin=0)


def req(rid: int, symbol: str = "BTCUSDT") -> bytes:
    return request(b"%d" % rid, b'{"symbol":"%s"}' % symbol.encode())


def assert_answer(payload: bytes, rid: int, symbol: str = "BTCUSDT") -> None:
    head = b'{"id":%d,"status":200,"result":{"symbol":"%s","price":"' % (rid, symbol.encode())
    assert payload.startswith(head), payload
    assert json.loads(payload)["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"


def assert_closed_with(
    client, code: int, reason: bytes | None = None, *, answered: int | None = None
) -> None:
    """The server sends a close frame with ``code``, and drops TCP once we answer; nothing
    follows the close frame (RFC 6455 §5.5.1). ``answered``: the reply to the request with
    this id may come before the close frame (or not at all)."""
    frame = client.recv_data()
    if answered is not None and frame.opcode == OP_TEXT:
        assert_answer(frame.payload, answered)
        frame = client.recv_data()
    assert frame.opcode == OP_CLOSE, f"expected a close frame, got {frame}"
    assert frame.fin and frame.rsv == 0 and not frame.masked, frame
    assert frame.close_code == code, frame
    if reason is not None:
        assert frame.close_reason == reason, frame
    frame.close_reason.decode("utf-8")  # a close reason is valid UTF-8
    assert len(frame.payload) <= 125
    # The server may already have dropped the connection (picows-side errors).
    with contextlib.suppress(OSError):
        client.send_close(code if code not in (1005, 1006, 1015) else 1000)
    assert client.wait_closed(5) == b"", "data after the close frame"


def assert_still_open(client, rid: int = 99) -> None:
    client.send_text(req(rid))
    assert_answer(client.recv_text(), rid)


# -- fragmentation ------------------------------------------------------------------------


def test_fragmented_text_reassembled(srv, raw):
    client = raw(srv)
    msg = req(1)
    client.send_frame(OP_TEXT, msg[:10], fin=False)
    client.send_frame(OP_CONT, msg[10:30], fin=False)
    client.send_frame(OP_CONT, msg[30:], fin=True)
    assert_answer(client.recv_text(), 1)
    assert_still_open(client)


def test_fragments_in_one_write_and_across_writes(srv, raw):
    client = raw(srv)
    one, two = req(1, "ETHUSDT"), req(2, "XRPUSDT")
    # Message 1 entirely in one TCP write; message 2 split across writes with pauses,
    # and a frame header itself cut in two.
    second = client.frame(OP_CONT, two[5:], fin=True)
    client.send(
        client.frame(OP_TEXT, one[:1], fin=False)
        + client.frame(OP_CONT, one[1:], fin=True)
        + client.frame(OP_TEXT, two[:5], fin=False)
        + second[:1]
    )
    assert_answer(client.recv_text(), 1, "ETHUSDT")
    time.sleep(0.05)
    client.send(second[1:3])
    time.sleep(0.05)
    client.send(second[3:])
    assert_answer(client.recv_text(), 2, "XRPUSDT")


def test_ping_between_fragments_answered_then_message(srv, raw):
    client = raw(srv)
    msg = req(4)
    client.send_frame(OP_TEXT, msg[:20], fin=False)
    client.send_frame(OP_PING, b"mid-message")
    client.send_frame(OP_PONG, b"unsolicited")  # also allowed between fragments
    client.send_frame(OP_CONT, msg[20:], fin=True)
    pong = client.recv_frame()
    assert (pong.opcode, pong.fin, pong.payload) == (OP_PONG, True, b"mid-message"), pong
    assert_answer(client.recv_text(), 4)
    assert_still_open(client)


def test_stray_continuation_closes_1002(srv, raw):
    client = raw(srv)
    client.send_frame(OP_CONT, req(5), fin=True)
    assert_closed_with(client, 1002)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_new_data_frame_inside_fragmented_message_closes_1002(srv, raw, opcode):
    client = raw(srv)
    client.send_frame(OP_TEXT, req(7)[:10], fin=False)
    client.send_frame(opcode, req(8), fin=True)
    assert_closed_with(client, 1002)


def test_no_data_frames_after_server_close(srv, raw):
    """Once the server has sent its close frame it answers nothing more (RFC 6455 §5.5.1)."""
    client = raw(srv)
    client.send_frame(OP_CONT, b"x", fin=True)
    frame = client.expect_close()
    assert frame.close_code == 1002
    client.send_text(req(9))
    client.send_frame(OP_PING, b"late")
    with pytest.raises(TimeoutError):
        client.recv_frame(timeout=0.3)
    client.send_close(1000)
    assert client.wait_closed(5) == b""


# -- frame header bits and opcodes --------------------------------------------------------


@pytest.mark.parametrize(("rsv", "where"), [(4, "text"), (2, "continuation"), (1, "ping")])
def test_rsv_bits_close_1002(srv, raw, rsv, where):
    client = raw(srv)
    if where == "text":
        client.send_text(req(10), rsv=rsv)
    elif where == "continuation":
        client.send_frame(OP_TEXT, req(10)[:10], fin=False)
        client.send_frame(OP_CONT, req(10)[10:], fin=True, rsv=rsv)
    elif where == "ping":
        client.send_frame(OP_PING, b"p", rsv=rsv)
    else:
        client.send_frame(OP_BINARY, b"\x00", rsv=rsv)
    assert_closed_with(client, 1002)


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reserved_opcode_closes_1002(srv, raw, opcode):
    client = raw(srv)
    client.send_frame(opcode, b"{}")
    assert_closed_with(client, 1002)


def test_unmasked_client_frame_closes_1002(srv, raw):
    client = raw(srv)
    client.send_text(req(11), mask=False)
    assert_closed_with(client, 1002)


def test_control_frame_over_125_bytes_closes_1002(srv, raw):
    client = raw(srv)
    client.send_frame(OP_PING, b"a" * 126)
    assert_closed_with(client, 1002)


def test_fragmented_control_frame_closes_1002(srv, raw):
    client = raw(srv)
    client.send_frame(OP_PING, b"a", fin=False)
    assert_closed_with(client, 1002)


# -- UTF-8 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id":1,"method":"ticker.price","params":{"symbol":"\xed\xa0\x80"}}',  # surrogate
    ],
    ids=["surrogate"],
)
def test_invalid_utf8_text_closes_1007(srv, raw, payload):
    client = raw(srv)
    client.send_text(payload)
    assert_closed_with(client, 1007)


def test_valid_non_ascii_json_answered(srv, raw):
    client = raw(srv)
    client.send_text('{"id":13,"method":"ticker.price","params":{"symbol":"ÄÖÜ😀"}}')
    assert client.recv_text().startswith(b'{"id":13,"status":400,"error":{"code":-1121,')


# -- size bounds --------------------------------------------------------------------------


def test_frame_of_exactly_the_limit_accepted(srv, raw):
    client = raw(srv)
    msg = req(14)
    client.send_text(msg + b" " * (MAX_MESSAGE - len(msg)))
    assert_answer(client.recv_text(), 14)


def test_oversize_frame_closes_1009(srv, raw):
    client = raw(srv)
    msg = req(15)
    client.send_text(msg + b" " * (MAX_MESSAGE + 1 - len(msg)))
    assert_closed_with(client, 1009)


def test_huge_frame_header_closes_1009_without_waiting_for_payload(srv, raw):
    client = raw(srv)
    # Announce a 1 GiB payload; send only the header. The server must not wait for it.
    client.send(struct.pack("!BBQ", 0x81, 0x80 | 127, 1 << 30) + b"\x00\x00\x00\x00")
    assert_closed_with(client, 1009)


def test_many_small_fragments_over_the_limit_close_1009(srv, raw):
    client = raw(srv)
    frames = [client.frame(OP_TEXT, b" ", fin=False)]
    frames += [client.frame(OP_CONT, b" ", fin=False) for _ in range(MAX_MESSAGE + 10)]
    client.send(b"".join(frames))
    assert_closed_with(client, 1009)


BAD_FRAMES = {
    "oversize": (1009, lambda c: c.frame(OP_TEXT, b" " * (MAX_MESSAGE + 1))),
    "unmasked": (1002, lambda c: c.frame(OP_TEXT, b"{}", mask=False)),
    "reserved-opcode": (1002, lambda c: c.frame(0x3, b"{}")),
    "big-ping": (1002, lambda c: c.frame(OP_PING, b"a" * 126)),
    "bad-close-code": (1002, lambda c: c.frame(OP_CLOSE, struct.pack("!H", 999))),
    "rsv1": (1002, lambda c: c.frame(OP_TEXT, b"{}", rsv=4)),
    "stray-continuation": (1002, lambda c: c.frame(OP_CONT, b"{}")),
    "invalid-utf8": (1007, lambda c: c.frame(OP_TEXT, b"\xff")),
}


@pytest.mark.parametrize("bad", list(BAD_FRAMES))
def test_no_data_frame_after_close_when_bad_frame_follows_a_request(srv, raw, bad):
    """A request and a bad frame in one TCP write: the request may be answered, but only
    before the close frame, never after it (RFC 6455 §5.5.1)."""
    code, make = BAD_FRAMES[bad]
    client = raw(srv)
    client.send(client.frame(OP_TEXT, req(21)) + make(client))
    assert_closed_with(client, code, answered=21)


# -- close handshake ----------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 4999])
def test_client_close_with_valid_code_echoed(srv, raw, code):
    client = raw(srv)
    client.send_close(code, b"bye")
    frame = client.expect_close()
    assert frame.close_code == code, frame
    assert client.wait_closed(5) == b""


# 999 and 1005 are refused by picows' parser, 5000 and 65535 by the connection.
@pytest.mark.parametrize("code", [999, 1005, 5000, 65535])
def test_client_close_with_invalid_code_answered_1002(srv, raw, code):
    client = raw(srv)
    client.send_close(code)
    frame = client.expect_close()
    assert frame.close_code == 1002, frame
    assert client.wait_closed(5) == b""


def test_client_close_with_empty_payload_answered(srv, raw):
    client = raw(srv)
    client.send_close(None)
    frame = client.expect_close()
    assert frame.payload in (b"", b"\x03\xe8"), frame  # no code, or 1000
    assert client.wait_closed(5) == b""


def test_client_close_with_one_byte_payload_closes_1002(srv, raw):
    client = raw(srv)
    client.send_frame(OP_CLOSE, b"\x03")
    frame = client.expect_close()
    assert frame.close_code == 1002, frame
    assert client.wait_closed(5) == b""


def test_client_close_with_invalid_utf8_reason_closes_1007(srv, raw):
    client = raw(srv)
    client.send_close(1000, b"\xff")
    frame = client.expect_close()
    assert frame.close_code == 1007, frame
    assert client.wait_closed(5) == b""


def test_replies_queued_before_close_are_sent_first(srv, raw):
    client = raw(srv)
    client.send(client.frame(OP_TEXT, req(17)) + client.frame(OP_CLOSE, struct.pack("!H", 1000)))
    assert_answer(client.recv_text(), 17)
    assert client.expect_close().close_code == 1000
    assert client.wait_closed(5) == b""


# -- binary frames and pings --------------------------------------------------------------


def test_binary_frame_gets_json_error_and_connection_stays_open(srv, raw):
    client = raw(srv)
    client.send_frame(OP_BINARY, req(18))
    assert client.recv_text() == INVALID_JSON
    client.send_frame(OP_BINARY, b"\x00\xff\x10", fin=False)  # fragmented binary too
    client.send_frame(OP_CONT, b"\x01", fin=True)
    assert client.recv_text() == INVALID_JSON
    assert_still_open(client)


@pytest.mark.parametrize("payload", [b"", bytes(range(125))])
def test_ping_answered_with_identical_pong(srv, raw, payload):
    client = raw(srv)
    client.send_frame(OP_PING, payload)
    pong = client.recv_frame()
    assert (pong.opcode, pong.fin, pong.rsv, pong.payload) == (OP_PONG, True, 0, payload)
    assert not pong.masked
    assert_still_open(client)


def test_more_than_five_ping_frames_a_second_close_1008(srv, raw):
    """Binance allows 5 ping/pong frames per second; RFC 6455 wants every ping answered,
    so the server answers up to the limit and then closes the connection (1008)."""
    client = raw(srv)
    # 11 pings in one write: however they straddle a second boundary, one second sees 6.
    client.send(b"".join(client.frame(OP_PING, b"%d" % i) for i in range(11)))
    pongs = []
    while True:
        frame = client.recv_frame()
        if frame.opcode != OP_PONG:
            break
        pongs.append(frame.payload)
    assert frame.opcode == OP_CLOSE
    assert int.from_bytes(frame.payload[:2], "big") == 1008
    assert frame.payload[2:] == b"too many ping/pong frames"
    assert 5 <= len(pongs) <= 10
    assert pongs == [b"%d" % i for i in range(len(pongs))]


def test_ping_pong_order_with_pipelined_requests(srv, raw):
    client = raw(srv)
    client.send(
        client.frame(OP_TEXT, req(19))
        + client.frame(OP_PING, b"between")
        + client.frame(OP_TEXT, req(20))
    )
    first, second, third = (client.recv_frame() for _ in range(3))
    assert first.opcode == OP_TEXT
    assert_answer(first.payload, 19)
    assert (second.opcode, second.payload) == (OP_PONG, b"between")
    assert third.opcode == OP_TEXT
    assert_answer(third.payload, 20)


def test_oversize_frame_is_never_processed(server, raw):
    """The frame picows refused for its size must not reach the protocol either: it is
    not answered and costs no weight (only the two handshakes and the probe do)."""
    srv = server("--max-message-bytes", str(MAX_MESSAGE))
    client = raw(srv)
    msg = req(22)
    client.send_text(msg + b" " * (MAX_MESSAGE + 1 - len(msg)))
    assert client.expect_close().close_code == 1009
    client.send_close(1009)  # bytes that arrive right after picows' error
    assert client.wait_closed(5) == b""
    probe = raw(srv)
    probe.send_text(req(23))
    reply = probe.recv_text()
    assert_answer(reply, 23)
    assert json.loads(reply)["rateLimits"][0]["count"] == 5 + 5 + 1, reply


def test_long_close_reason_cut_to_a_legal_close_frame(server, raw):
    """A 200-character reason given to the control plane's conn.close goes out cut to 123
    UTF-8 bytes at a character boundary: the close frame stays within 125 bytes (§5.5)."""
    from tickerd.control import ControlClient

    srv = server("--control-port", "0", "--control-token", "T", "--tick-rate", "0")
    client = raw(srv)
    assert srv.control_url is not None
    reason = "ü" * 100 + "x" * 100  # 300 UTF-8 bytes
    answer = ControlClient(srv.control_url, "T").call("conn.close", code=1000, reason=reason)
    assert answer["closed"] == 1
    frame = client.expect_close()
    assert frame.close_code == 1000 and len(frame.payload) == 2 + 122
    assert frame.close_reason.decode("utf-8") == "ü" * 61
