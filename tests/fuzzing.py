"""A seeded fuzzer of WebSocket API input: JSON-ish request payloads and raw RFC 6455 frames.

Everything is drawn from one ``random.Random(seed)``, so a failing case is replayed by its
seed and number. ``TICKERD_FUZZ_CASES`` sets how many payload cases a run draws (default
:data:`DEFAULT_CASES`; the socket part runs a tenth of them) and ``TICKERD_FUZZ_SEED``
the seed. The oracles say what an answer must be: a Binance envelope (``id, status,
result|error, rateLimits`` in that order, the id echoed with its type when it was valid)
or, for invalid UTF-8 only, a close with 1007 — and for frames on a socket, a proper close
frame with a valid code before the TCP connection ends.
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

DEFAULT_CASES = 3000
DEFAULT_SEED = 20_261_203
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SRMUSDT", "BTCUSDT_250328", "btcusdt", "NOPEUSDT", "", " "]
METHODS = [
    "ticker.price", "v1/ticker.price", "v2/ticker.price", "v\u0661/ticker.price",
    "v\u00b2/ticker.price", "ticker.book", "TICKER.PRICE", "v/ticker.price", "", "time",
    "ticker.price\ud800",
]  # fmt: skip
STRINGS = ["", "a", "x" * 36, "x" * 37, "9d32157c-a556-4d27-9866-66760a174b57", "\ud800",
           "\udfff\ud800", "\u0000", "\u00e9", "\U0001f600", "a b", "true", "false", "null"]  # fmt: skip
NUMBERS = [0, 1, -1, 2**63 - 1, -(2**63), 2**63, 2**64, -(2**64), 10**400, 1.5, -0.0, 1e300]
#: Close codes a server may send (RFC 6455 §7.4.1; 1005, 1006 and 1015 are never sent).
SERVER_CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011}
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def cases_and_seed() -> tuple[int, int]:
    """The run's payload case count and seed, from the environment or the defaults."""
    cases = int(os.environ.get("TICKERD_FUZZ_CASES", DEFAULT_CASES))
    seed = int(os.environ.get("TICKERD_FUZZ_SEED", DEFAULT_SEED))
    return cases, seed


# -- payloads ------------------------------------------------------------------------------


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(STRINGS + SYMBOLS)
    if roll < 0.55:
        return rng.choice(NUMBERS)
    if roll < 0.7:
        return rng.choice([None, True, False])
    if depth > 3:
        return rng.randrange(100)
    if roll < 0.85:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(STRINGS + ["symbol", "id"]): _value(rng, depth + 1) for _ in range(3)}


def _request(rng: random.Random) -> dict[str, Any]:
    request: dict[str, Any] = {}
    if rng.random() < 0.9:
        request["id"] = rng.choice([rng.randrange(10**6), rng.choice(STRINGS), _value(rng)])
    if rng.random() < 0.9:
        request["method"] = rng.choice(METHODS) if rng.random() < 0.9 else _value(rng)
    if rng.random() < 0.8:
        params: dict[str, Any] = {}
        if rng.random() < 0.7:
            params["symbol"] = rng.choice(SYMBOLS) if rng.random() < 0.8 else _value(rng)
        if rng.random() < 0.3:
            params["returnRateLimits"] = rng.choice([True, False, "true", "false", "FALSE", 0])
        for _ in range(rng.randrange(3)):
            params[rng.choice(STRINGS + ["apiKey", "timestamp", "signature"])] = _value(rng)
        request["params"] = params if rng.random() < 0.95 else _value(rng)
    return request


def _encode(value: Any, rng: random.Random) -> bytes:
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
    # surrogatepass: a lone surrogate written raw is the invalid UTF-8 a broken client sends.
    return text.encode("utf-8", "surrogatepass")


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(7)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del buf[at : at + rng.randrange(1, 8)]
        elif op == 2:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
        elif op == 3:
            buf[at:at] = rng.choice([b"\\ud800", b"\\udc00", b"\\u0000", b'"', b"\\", b",", b":"])
        elif op == 4:
            buf[at:at] = rng.choice([b"NaN", b"Infinity", b"1e400", b"-", b"9" * 30, b"\xc0\xaf"])
        elif op == 5:
            buf = buf[:at]
        else:
            buf[at:at] = buf[at : at + rng.randrange(1, 20)]
    return bytes(buf)


def payload(rng: random.Random) -> bytes:
    """One JSON-ish text payload: mostly requests, some mutated, some structural oddities."""
    roll = rng.random()
    if roll < 0.45:
        return _encode(_request(rng), rng)
    if roll < 0.8:
        return _mutate(_encode(_request(rng), rng), rng)
    if roll < 0.88:
        return _encode(_value(rng), rng)
    if roll < 0.94:
        depth = rng.randrange(1, 3000)
        return rng.choice([b"[", b'{"a":', b'{"\\ud800":']) * depth
    return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))


# -- oracles -------------------------------------------------------------------------------


def parsed_request(data: bytes) -> Any:
    """What a JSON parser that takes lone surrogates reads from ``data`` (None: not JSON)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        text = data.decode("utf-8")

        def refuse(name: str) -> Any:
            raise ValueError(name)

        def finite(s: str) -> float:
            value = float(s)
            if value in (float("inf"), float("-inf")):
                raise ValueError(s)
            return value

        def finite_int(s: str) -> int:
            if len(s.lstrip("-")) > 308:  # orjson reads integers as doubles past 64 bits
                raise ValueError(s)
            return int(s)

        return json.loads(text, parse_constant=refuse, parse_float=finite, parse_int=finite_int)
    except (ValueError, RecursionError):
        return None


def envelope_problem(reply: bytes) -> str | None:
    """Why ``reply`` is not a Binance envelope (None when it is one)."""
    try:
        pairs = json.loads(reply, object_pairs_hook=lambda p: p)
    except ValueError as exc:
        return f"reply is not JSON: {exc}"
    if not isinstance(pairs, list) or not pairs or not isinstance(pairs[0], tuple):
        return "reply is not an object"
    keys = [k for k, _ in pairs]
    obj = dict(pairs)
    if len(keys) != len(set(keys)):
        return "duplicate keys"
    if keys[:2] != ["id", "status"] or keys[2] not in ("result", "error"):
        return f"keys out of order: {keys}"
    if keys[3:] not in ([], ["rateLimits"]):
        return f"unexpected keys: {keys}"
    if type(obj["status"]) is not int or obj["status"] not in (200, 400, 403, 418, 429, 503):
        return f"status {obj['status']!r}"
    if (obj["status"] == 200) != ("result" in obj):
        return "status and result disagree"
    if "error" in obj:
        error = dict(obj["error"])
        if type(error.get("code")) is not int or type(error.get("msg")) is not str:
            return f"error {error!r}"
    if "rateLimits" in obj:
        (entry,) = obj["rateLimits"]
        entry = dict(entry)
        if list(entry) != ["rateLimitType", "interval", "intervalNum", "limit", "count"]:
            return f"rateLimits {entry!r}"
    rid = obj["id"]
    if rid is not None and not isinstance(rid, (int, str)):
        return f"id {rid!r}"
    return None


def id_problem(request: Any, reply: bytes) -> str | None:
    """The id rule: a request's valid id comes back with its value and type."""
    if not isinstance(request, dict) or "id" not in request:
        return None
    rid = request["id"]
    valid = rid is None or (type(rid) is int and -(2**63) <= rid < 2**63) or (
        type(rid) is str and 0 < len(rid) <= 36 and rid.isascii()
        and all(c.isalnum() or c in "-_" for c in rid)
    )  # fmt: skip
    if not valid:
        return None
    echoed = json.loads(reply)["id"]
    if echoed != rid or type(echoed) is not type(rid):
        return f"id {rid!r} echoed as {echoed!r}"
    return None


# -- frames --------------------------------------------------------------------------------


@dataclass
class FrameCase:
    """Frames to send on one fresh connection; ``closes`` when one of them is a close."""

    frames: list[bytes] = field(default_factory=list)
    closes: bool = False


def frame(
    opcode: int, data: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True,
    key: bytes = b"\x11\x22\x33\x44",
) -> bytes:  # fmt: skip
    """One client frame (RFC 6455 §5.2)."""
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)
    n = len(data)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", first, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mbit | 127, n)
    if not mask:
        return head + data
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))


def frame_case(rng: random.Random, max_message: int) -> FrameCase:
    """A few frames, each well formed as bytes, their meaning drawn at random."""
    case = FrameCase()
    for _ in range(rng.randrange(1, 5)):
        roll = rng.random()
        fin = rng.random() < 0.85
        rsv = rng.randrange(8) if rng.random() < 0.05 else 0
        mask = rng.random() < 0.97
        if roll < 0.5:
            opcode, data = OP_TEXT, payload(rng)
        elif roll < 0.6:
            opcode, data = OP_CONT, payload(rng)
        elif roll < 0.67:
            opcode, data = OP_BINARY, bytes(rng.randrange(256) for _ in range(rng.randrange(20)))
        elif roll < 0.75:
            opcode, data = rng.choice([OP_PING, OP_PONG]), b"p" * rng.choice([0, 5, 125, 126])
        elif roll < 0.82:
            opcode = OP_CLOSE
            code = rng.choice([1000, 1001, 1002, 1005, 1006, 1015, 999, 3000, 4999, 5000, 0])
            reason = rng.choice([b"", b"bye", b"\xff\xfe", b"x" * 124])
            data = b"" if rng.random() < 0.1 else struct.pack("!H", code) + reason
            data = data if rng.random() < 0.9 else b"\x03"  # a one-byte close payload
            case.closes = True
        elif roll < 0.88:
            opcode, data = rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), b"?"
        else:
            opcode, data = OP_TEXT, b" " * rng.choice([max_message - 1, max_message + 1])
        case.frames.append(frame(opcode, data, fin=fin, rsv=rsv, mask=mask))
        if case.closes:
            break
    return case


def frame_cases(count: int, seed: int, max_message: int) -> Iterator[tuple[int, FrameCase]]:
    """``count`` numbered frame cases from ``seed``."""
    rng = random.Random(seed)
    for n in range(count):
        yield n, frame_case(rng, max_message)
