"""RFC 6455 and Binance's connection rules, in process: frames into :class:`WSConnection`,
the exact bytes it would put on the wire back out. No socket, no loop, no clock: times are
arguments. ``tests/test_rfc6455.py`` and ``tests/test_lifecycle.py`` keep a few of these
end to end over real sockets, and everything picows enforces itself (masking, opcodes,
control-frame limits, the frame bound).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from helpers_core import BTC, IP, NOW, make_protocol, ok, rate_limits, request
from tickerd import Session
from tickerd.frames import close_reason, control_frame, text_header, valid_close_code
from tickerd.protocol import Protocol
from tickerd.wsconn import End, Limits, State, WSConnection

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 1024
LIMITS = Limits(
    max_message_bytes=MAX_MESSAGE,
    ping_interval=180.0,
    pong_timeout=600.0,
    max_lifetime=86_400.0,
    close_timeout=5.0,
)
T0 = 1000.0  # the connection opens at this monotonic time
INVALID_JSON = b'{"id":null,"status":400,"error":{"code":-1000,"msg":"Invalid JSON request."}}'


@dataclass
class Out:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int:
        assert self.opcode == OP_CLOSE
        return int(struct.unpack("!H", self.payload[:2])[0])


def parse(data: bytes) -> list[Out]:
    """Server frames (unmasked) in ``data``; every byte must belong to a whole frame."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert not b1 & 0x80, "server frames are never masked"
        n, pos = b1 & 0x7F, pos + 2
        if n == 126:
            n, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif n == 127:
            n, pos = struct.unpack_from("!Q", data, pos)[0], pos + 8
        frames.append(Out(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, data[pos : pos + n]))
        pos += n
    assert pos == len(data)
    return frames


class Peer:
    """A connection under test and the client's side of the conversation."""

    def __init__(self, protocol: Protocol | None = None, limits: Limits = LIMITS) -> None:
        self.protocol = protocol or make_protocol()
        self.conn = WSConnection(
            self.protocol.handle,
            Session(IP),
            limits,
            T0,
            binary_reply=self.protocol.binary_frame(),
        )
        self.now = T0

    def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> None:
        self.conn.receive_frame(opcode, fin, rsv, payload, self.now, NOW)

    def text(self, payload: bytes) -> None:
        self.send(OP_TEXT, payload)

    def received(self) -> list[Out]:
        return parse(self.conn.data_to_send())

    def closed_with(self, code: int, reason: bytes | None = None) -> Out:
        """The output ends with a close frame with ``code``; the state is CLOSING."""
        frames = self.received()
        assert frames and frames[-1].opcode == OP_CLOSE, frames
        last = frames[-1]
        assert last.close_code == code, last
        if reason is not None:
            assert last.payload[2:] == reason
        assert len(last.payload) <= 125
        assert self.conn.state is not State.OPEN
        return last


def answer(rid: int) -> bytes:
    return ok(b"%d" % rid, BTC, rid)  # every request costs 1: the count is the id


def req(rid: int) -> bytes:
    return request(b"%d" % rid)


# -- the plain path and fragmentation ---------------------------------------------------


def test_text_frame_answered_with_one_text_frame():
    peer = Peer()
    peer.text(req(1))
    [frame] = peer.received()
    assert (frame.fin, frame.rsv, frame.opcode, frame.payload) == (True, 0, OP_TEXT, answer(1))
    assert peer.conn.state is State.OPEN and peer.conn.end is End.NONE


def test_pipelined_replies_queue_in_order_until_taken():
    peer = Peer()
    for rid in (1, 2, 3):
        peer.text(req(rid))
    assert [f.payload for f in peer.received()] == [answer(1), answer(2), answer(3)]
    assert peer.conn.data_to_send() == b""


def test_fragmented_text_reassembled():
    peer = Peer()
    msg = req(1)
    peer.send(OP_TEXT, msg[:10], fin=False)
    peer.send(OP_CONT, msg[10:30], fin=False)
    assert peer.conn.data_to_send() == b"" and not peer.conn.plain
    peer.send(OP_CONT, msg[30:], fin=True)
    assert [f.payload for f in peer.received()] == [answer(1)]
    assert peer.conn.plain
    peer.text(req(2))
    assert [f.payload for f in peer.received()] == [answer(2)]


def test_empty_fragments_allowed():
    peer = Peer()
    peer.send(OP_TEXT, b"", fin=False)
    peer.send(OP_CONT, req(3), fin=False)
    peer.send(OP_CONT, b"", fin=True)
    assert [f.payload for f in peer.received()] == [ok(b"3", BTC, 1)]


def test_ping_and_pong_between_fragments():
    peer = Peer()
    msg = req(4)
    peer.send(OP_TEXT, msg[:20], fin=False)
    peer.send(OP_PING, b"mid-message")
    peer.send(OP_PONG, b"unsolicited")
    peer.send(OP_CONT, msg[20:], fin=True)
    frames = peer.received()
    assert [(f.opcode, f.payload) for f in frames] == [
        (OP_PONG, b"mid-message"),
        (OP_TEXT, ok(b"4", BTC, 1)),
    ]


def test_utf8_character_split_across_fragments_is_valid():
    peer = Peer()
    text = '{"id":12,"method":"ticker.price","params":{"symbol":"€UR"}}'.encode()
    cut = text.index(b"\xe2\x82\xac") + 1
    peer.send(OP_TEXT, text[:cut], fin=False)
    peer.send(OP_CONT, text[cut:], fin=True)
    [frame] = peer.received()
    assert frame.payload.startswith(b'{"id":12,"status":400,"error":{"code":-1121,')


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([(OP_CONT, True)], b"continuation frame without a message to continue"),
        ([(OP_TEXT, False), (OP_TEXT, True)], b"new data frame inside a fragmented message"),
        ([(OP_TEXT, False), (OP_BINARY, True)], b"new data frame inside a fragmented message"),
        ([(OP_TEXT, True), (OP_CONT, True)], b"continuation frame without a message to continue"),
    ],
    ids=["stray", "text-inside", "binary-inside", "after-complete"],
)
def test_fragmentation_errors_close_1002(frames, reason):
    peer = Peer()
    for opcode, fin in frames:
        peer.send(opcode, req(5), fin=fin)
    peer.closed_with(1002, reason)


def test_reserved_opcode_closes_1002():
    peer = Peer()
    peer.send(0x3, b"{}")
    peer.closed_with(1002)


# -- RSV bits, UTF-8, size bounds -------------------------------------------------------


@pytest.mark.parametrize("rsv", [4, 2, 1], ids=["RSV1", "RSV2", "RSV3"])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_CONT, OP_PING, OP_BINARY, OP_PONG])
def test_rsv_bits_close_1002(rsv, opcode):
    peer = Peer()
    if opcode == OP_CONT:
        peer.send(OP_TEXT, req(10)[:10], fin=False)
    peer.send(opcode, req(10)[10:], rsv=rsv)
    peer.closed_with(1002, b"RSV bits set without a negotiated extension")


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe",
        b'{"id":"\xc3","method":"ticker.price"}',
        b'{"id":1,"method":"ticker.price","params":{"symbol":"\xed\xa0\x80"}}',
        b'{"id":1,"method":"\xc0\xafticker.price"}',
        b"\xf4\x90\x80\x80",
    ],
    ids=["ff-fe", "truncated", "surrogate", "overlong", "too-high"],
)
def test_invalid_utf8_text_closes_1007(payload):
    peer = Peer()
    peer.text(payload)
    peer.closed_with(1007)


def test_invalid_utf8_in_fragmented_text_closes_1007():
    peer = Peer()
    peer.send(OP_TEXT, b'{"id":1,"method":"', fin=False)
    peer.send(OP_CONT, b"\xe2\x82", fin=False)
    peer.send(OP_CONT, b'"}', fin=True)
    peer.closed_with(1007)


def test_fragmented_message_of_exactly_the_limit_accepted():
    peer = Peer()
    msg = req(16)
    msg += b" " * (MAX_MESSAGE - len(msg))
    peer.send(OP_TEXT, msg[:400], fin=False)
    peer.send(OP_CONT, msg[400:800], fin=False)
    peer.send(OP_CONT, msg[800:], fin=True)
    assert [f.payload for f in peer.received()] == [ok(b"16", BTC, 1)]


def test_oversize_fragmented_message_closes_1009():
    peer = Peer()
    peer.send(OP_TEXT, b"[" + b" " * 399, fin=False)
    peer.send(OP_CONT, b" " * 400, fin=False)
    assert peer.conn.data_to_send() == b""
    peer.send(OP_CONT, b" " * 225, fin=False)  # 1025 bytes: one over
    peer.closed_with(1009, b"message too big")


def test_many_small_fragments_over_the_limit_close_1009():
    peer = Peer()
    peer.send(OP_TEXT, b" ", fin=False)
    for _ in range(MAX_MESSAGE + 10):
        peer.send(OP_CONT, b" ", fin=False)
    peer.closed_with(1009)
    assert peer.conn.fragments is None  # nothing kept after the close


# -- binary frames, pings and the 5-per-second rule -------------------------------------


def test_binary_message_gets_json_error_and_stays_open():
    peer = Peer()
    peer.send(OP_BINARY, req(18))
    peer.send(OP_BINARY, b"\x00\xff", fin=False)
    peer.send(OP_CONT, b"\x01", fin=True)
    peer.text(req(19))
    assert [f.payload for f in peer.received()] == [INVALID_JSON, INVALID_JSON, ok(b"19", BTC, 1)]


@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125)), b"\xff\x00\xfe"])
def test_ping_answered_with_identical_pong(payload):
    peer = Peer()
    peer.send(OP_PING, payload)
    assert parse(peer.conn.data_to_send()) == [Out(True, 0, OP_PONG, payload)]


def test_ping_pong_order_with_pipelined_requests():
    peer = Peer()
    peer.text(req(19))
    peer.send(OP_PING, b"between")
    peer.text(req(20))
    assert [(f.opcode, f.payload) for f in peer.received()] == [
        (OP_TEXT, ok(b"19", BTC, 1)),
        (OP_PONG, b"between"),
        (OP_TEXT, ok(b"20", BTC, 2)),
    ]


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG])
def test_sixth_ping_or_pong_in_one_second_closes_1008(opcode):
    peer = Peer()
    peer.now = 2000.2
    for _ in range(5):
        peer.send(opcode, b"x")
    assert peer.conn.state is State.OPEN
    peer.now = 2000.9
    peer.send(opcode, b"x")
    last = peer.closed_with(1008, b"too many ping/pong frames")
    assert last is not None


def test_ping_pong_budget_restarts_each_second():
    peer = Peer()
    for second in (3000.0, 3001.0, 3002.5):
        peer.now = second
        for _ in range(5):
            peer.send(OP_PING, b"p")
    assert peer.conn.state is State.OPEN
    assert len(peer.received()) == 15


def test_pong_to_our_ping_is_free_and_answers_it():
    peer = Peer()
    peer.now = T0 + 180
    peer.conn.tick(peer.now, NOW)
    [ping] = peer.received()
    assert (ping.opcode, ping.payload) == (OP_PING, b"%d" % NOW)
    for _ in range(6):  # the first answers our ping; five unsolicited fit in the second
        peer.send(OP_PONG, b"")
    assert peer.conn.state is State.OPEN
    assert peer.conn.unanswered_since == 0.0


# -- lifecycle timers ------------------------------------------------------------------


def test_ping_every_interval_with_the_clock_as_payload():
    peer = Peer()
    peer.conn.tick(T0 + 179.9, NOW)
    assert peer.conn.data_to_send() == b""
    peer.conn.tick(T0 + 180, NOW + 1)
    assert parse(peer.conn.data_to_send()) == [Out(True, 0, OP_PING, b"%d" % (NOW + 1))]
    peer.conn.tick(T0 + 200, NOW + 2)
    assert peer.conn.data_to_send() == b""


def test_pong_timeout_runs_from_the_first_unanswered_ping():
    peer = Peer()
    peer.conn.tick(T0 + 180, NOW)  # ping 1
    peer.conn.tick(T0 + 360, NOW)  # ping 2, still no pong
    assert [f.opcode for f in peer.received()] == [OP_PING, OP_PING]
    peer.conn.tick(T0 + 180 + 599.9, NOW)
    assert peer.conn.state is State.OPEN
    peer.conn.tick(T0 + 180 + 600, NOW)
    peer.closed_with(1008, b"pong timeout")


def test_answered_pings_keep_the_connection():
    peer = Peer()
    for n in range(1, 10):
        peer.conn.tick(T0 + 180 * n, NOW)
        [ping] = peer.received()
        peer.now = T0 + 180 * n + 1
        peer.send(OP_PONG, ping.payload)
    assert peer.conn.state is State.OPEN


def test_lifetime_close_1001_without_reason():
    peer = Peer()
    peer.conn.tick(T0 + 86_400, NOW)
    assert peer.closed_with(1001).payload == b"\x03\xe9"


def test_close_timeout_aborts_a_silent_peer():
    peer = Peer()
    peer.conn.tick(T0 + 86_400, NOW)
    peer.received()
    peer.conn.tick(T0 + 86_404.9, NOW)
    assert peer.conn.end is End.NONE and peer.conn.state is State.CLOSING
    peer.conn.tick(T0 + 86_405, NOW)
    assert (peer.conn.state, peer.conn.end) == (State.CLOSED, End.ABORT)


def test_close_timeout_starts_at_next_tick_when_close_time_unknown():
    peer = Peer()
    peer.text(b"\xff")  # 1007 from the protocol: no time at hand
    peer.received()
    peer.conn.tick(T0 + 10, NOW)  # stamps the close
    peer.conn.tick(T0 + 14.9, NOW)
    assert peer.conn.end is End.NONE
    peer.conn.tick(T0 + 15, NOW)
    assert peer.conn.end is End.ABORT


def test_peer_answering_our_close_ends_tcp_and_nothing_is_answered_after():
    peer = Peer()
    peer.conn.close(1000, "bye", T0)
    peer.text(req(1))
    peer.send(OP_PING, b"late")
    frames = peer.received()
    assert [f.opcode for f in frames] == [OP_CLOSE] and frames[0].payload == b"\x03\xe8bye"
    peer.send(OP_CLOSE, struct.pack("!H", 1000))
    assert (peer.conn.state, peer.conn.end) == (State.CLOSED, End.CLOSE)
    assert peer.conn.data_to_send() == b""


def test_replies_queued_before_a_close_go_first():
    peer = Peer()
    peer.text(req(17))
    peer.send(OP_CLOSE, struct.pack("!H", 1000))
    frames = peer.received()
    assert [(f.opcode, f.payload) for f in frames] == [
        (OP_TEXT, ok(b"17", BTC, 1)),
        (OP_CLOSE, b"\x03\xe8"),
    ]
    assert peer.conn.end is End.CLOSE


# -- the close handshake ----------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1008, 1011, 3000, 4000, 4999])
def test_client_close_with_valid_code_echoed(code):
    peer = Peer()
    peer.send(OP_CLOSE, struct.pack("!H", code) + b"bye")
    assert peer.closed_with(code).payload == struct.pack("!H", code)
    assert peer.conn.end is End.CLOSE


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_client_close_with_invalid_code_answered_1002(code):
    peer = Peer()
    peer.send(OP_CLOSE, struct.pack("!H", code))
    peer.closed_with(1002, b"invalid close code")


@pytest.mark.parametrize(
    ("payload", "code"),
    [(b"", 1000), (b"\x03", 1002), (b"\x03\xe8\xff", 1007)],
    ids=["empty", "one-byte", "bad-utf8-reason"],
)
def test_client_close_payload_rules(payload, code):
    peer = Peer()
    peer.send(OP_CLOSE, payload)
    peer.closed_with(code)


def test_close_reason_cut_to_123_bytes_at_a_character_boundary():
    peer = Peer()
    peer.conn.close(1000, "é" * 200, T0)  # 400 bytes of 2-byte characters
    last = peer.closed_with(1000)
    assert len(last.payload) == 2 + 122
    assert last.payload[2:].decode("utf-8") == "é" * 61


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("x" * 200, b"x" * 123),
        ("x" * 123, b"x" * 123),
        ("x" * 121 + "€", b"x" * 121),  # the 3-byte euro sign would end at byte 124
        ("x" * 120 + "€", b"x" * 120 + "€".encode()),
        ("😀" * 40, "😀".encode() * 30),
        ("bad \ud800 surrogate", b"bad ? surrogate"),
        ("", b""),
    ],
    ids=["ascii", "exact", "euro-cut", "euro-fits", "emoji", "surrogate", "empty"],
)
def test_close_reason_bounds(reason, expected):
    assert close_reason(reason) == expected
    assert len(expected) <= 123


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_close_refuses_a_code_that_may_not_be_sent(code):
    peer = Peer()
    with pytest.raises(ValueError, match="may not be sent"):
        peer.conn.close(code)
    assert peer.conn.state is State.OPEN and peer.conn.data_to_send() == b""


def test_second_close_is_ignored():
    peer = Peer()
    peer.conn.close(1001, "", T0)
    peer.conn.close(1008, "again", T0)
    assert [f.close_code for f in peer.received()] == [1001]


def test_lost_connection_forgets_its_output():
    peer = Peer()
    peer.text(req(1))
    peer.conn.lost()
    assert peer.conn.state is State.CLOSED and peer.conn.data_to_send() == b""


# -- the stage slot --------------------------------------------------------------------


class Recorder:
    """A stand-in stage: records what reaches it, answers nothing."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    def text(self, payload: bytes, now_ms: int) -> None:
        self.seen.append(("text", payload))

    def ping(self, payload: bytes, now: float) -> None:
        self.seen.append(("ping", payload))

    def send_reply(self, reply: tuple[bytes, ...]) -> None:
        self.seen.append(("reply", b"".join(reply)))


def test_stage_receives_messages_pings_and_replies_then_is_put_back():
    peer = Peer()
    stage = Recorder()
    peer.conn.use_stage(stage)
    peer.text(req(1))
    peer.send(OP_TEXT, req(2)[:5], fin=False)
    peer.send(OP_CONT, req(2)[5:], fin=True)
    peer.send(OP_PING, b"p")
    peer.send(OP_BINARY, b"\x00")
    assert stage.seen == [
        ("text", req(1)),
        ("text", req(2)),
        ("ping", b"p"),
        ("reply", INVALID_JSON),
    ]
    assert peer.conn.data_to_send() == b""
    peer.conn.use_stage(peer.conn)
    peer.text(req(3))
    assert [f.payload for f in peer.received()] == [ok(b"3", BTC, 1)]


# -- frame bytes -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536, 70000])
def test_text_header_lengths(n):
    [frame] = parse(text_header(n) + b"a" * n)
    assert (frame.fin, frame.opcode, len(frame.payload)) == (True, OP_TEXT, n)


def test_control_frame_bound():
    assert control_frame(OP_PING, b"a" * 125)[1] == 125
    with pytest.raises(ValueError):
        control_frame(OP_PING, b"a" * 126)


def test_valid_close_codes():
    assert [c for c in range(5001) if valid_close_code(c) and c < 3000] == [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
    ]  # fmt: skip
    assert valid_close_code(3000) and valid_close_code(4999) and not valid_close_code(5000)


def test_large_reply_parts_by_reference():
    """A large cached body is kept as the same object, between copied pieces."""
    big = b"[" + b"x" * 40_000 + b"]"
    peer = Peer()
    peer.conn.send_reply((b'{"id":1,"result":', big, rate_limits(1) + b"}"))
    parts = peer.conn.parts
    assert parts[1] is big
    [frame] = peer.received()
    assert frame.payload == b'{"id":1,"result":' + big + rate_limits(1) + b"}"


# -- layering --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("wsconn.py", ("asyncio", "socket", "time", "picows", "config")),
        ("frames.py", ("asyncio", "socket", "time", "picows", "config")),
        ("faults.py", ("asyncio", "socket", "time", "picows", "config")),
        ("transport/ws.py", ("picows", "config")),
        ("transport/faults.py", ("picows", "config")),
    ],
)
def test_module_imports_stay_in_their_layer(module: str, forbidden: tuple[str, ...]) -> None:
    """The connection and the fault model are sans I/O; the server and the injector take
    options, not settings, and reach picows through the adapter only."""
    import ast
    from pathlib import Path

    import tickerd

    tree = ast.parse((Path(tickerd.__file__).parent / module).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[-1] if node.level else node.module.split(".")[0])
    assert not names & set(forbidden), names & set(forbidden)
