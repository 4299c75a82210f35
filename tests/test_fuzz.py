"""The seeded fuzzer (tests/fuzzing.py) against the WebSocket API in process, the push
ingest in process, and raw frames over a real socket to a real ``tickerd serve``.

Zero failures is the bar: every reply a Binance envelope (the id echoed when valid),
1007 only for invalid UTF-8, no exception out of the protocol, and on the socket every
case ending in an answer or a proper close frame. ``TICKERD_FUZZ_CASES=100000`` runs the
long mode (README, "Testing"); ``TICKERD_FUZZ_SEED`` replays another seed.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import traceback
from typing import Any

import pytest

from conftest import Closed
from fuzzing import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SERVER_CLOSE_CODES,
    STRINGS,
    SYMBOLS,
    cases_and_seed,
    envelope_problem,
    frame,
    frame_cases,
    id_problem,
    parsed_request,
    payload,
)
from helpers_core import IP, NOW, standard_book
from tickerd import PriceBook, Protocol, RateLimiter, Session
from tickerd.feeds.push import PushFeed
from tickerd.protocol import CloseConnection

CASES, SEED = cases_and_seed()
MAX_MESSAGE = 1024
pytestmark = pytest.mark.timeout(max(120, CASES // 100))


def _report(name: str, count: int, failures: list[str], started: float) -> None:
    print(
        f"\nfuzz {name}: {count} cases, seed {SEED}, {len(failures)} failures, "
        f"{time.perf_counter() - started:.1f} s"
    )
    assert not failures, "\n\n".join(failures[:10])


def test_protocol_answers_every_payload_with_an_envelope() -> None:
    rng = random.Random(SEED)
    book = standard_book()
    roomy = Protocol(book, RateLimiter(10**9))
    tight = Protocol(book, RateLimiter(20, ban_grace=2))  # runs into 429 and 418
    failures: list[str] = []
    started = time.perf_counter()
    for n in range(CASES):
        data = payload(rng)
        proto = tight if rng.random() < 0.1 else roomy
        session = Session(rng.choice([IP, "::1", "10.0.0.1"]), rng.random() < 0.8)
        try:
            parts = proto.handle(data, session, NOW + n)
        except CloseConnection as exc:
            try:
                data.decode("utf-8")
                failures.append(f"case {n}: close {exc.code} on valid UTF-8: {data!r}")
            except UnicodeDecodeError:
                if exc.code != 1007:
                    failures.append(f"case {n}: close {exc.code} for invalid UTF-8")
            continue
        except Exception:  # noqa: BLE001 - whatever escapes is the finding
            failures.append(f"case {n}: {data!r}\n{traceback.format_exc()}")
            continue
        if not isinstance(parts, tuple) or not all(type(p) is bytes for p in parts):
            failures.append(f"case {n}: reply parts {parts!r}")
            continue
        reply = b"".join(parts)
        problem = envelope_problem(reply) or id_problem(parsed_request(data), reply)
        if problem:
            failures.append(f"case {n}: {problem}: {data!r} -> {reply!r}")
    _report("protocol", CASES, failures, started)


def _batch(rng: random.Random) -> bytes:
    def tick() -> Any:
        item: dict[str, Any] = {}
        if rng.random() < 0.95:
            item["symbol"] = rng.choice(SYMBOLS + STRINGS)
        if rng.random() < 0.95:
            item["price"] = rng.choice(["97000.10", "97000.15", "0", "-1", "1e3", 1.5, "\ud800"])
        if rng.random() < 0.95:
            item["time"] = rng.choice([1_700_000_000_000, 2**62, 2**63, -1, 1.5, "1", True])
        return item if rng.random() < 0.95 else rng.choice([[], "x", None])

    batch: Any = {"ticks": [tick() for _ in range(rng.randrange(4))]}
    if rng.random() < 0.5:
        batch["id"] = rng.choice([1, "b1", 10**400, 2**63, "\ud800", 1.5, None, [1]])
    if rng.random() < 0.05:
        batch = rng.choice([[], "ticks", {"ticks": {}}])
    text = json.dumps(batch, ensure_ascii=rng.random() < 0.7)
    return text.encode("utf-8", "surrogatepass")


def test_push_ingest_answers_every_batch() -> None:
    rng = random.Random(SEED + 1)
    book = PriceBook(standard_book().universe)
    feed = PushFeed(book.universe, token="t")
    count = max(200, CASES // 5)
    failures: list[str] = []
    started = time.perf_counter()
    for n in range(count):
        data = _batch(rng)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # aiohttp closes such a message with 1007 before the feed sees it
        try:
            reply = json.loads(feed._answer(text, book))
        except Exception:  # noqa: BLE001 - whatever escapes is the finding
            failures.append(f"case {n}: {data!r}\n{traceback.format_exc()}")
            continue
        if reply.get("status") not in (200, 400, 413, 422):
            failures.append(f"case {n}: {reply!r}")
    _report("push", count, failures, started)


# -- frames over a real socket --------------------------------------------------------------


SENTINEL = b'{"id":"sentinel","method":"ticker.price","params":{"symbol":"BTCUSDT"}}'


def _run_frame_case(raw: Any, srv: Any, frames: list[bytes], closes: bool) -> str | None:
    client = raw(srv)
    try:
        client.send(b"".join(frames) + (b"" if closes else frame(OP_TEXT, SENTINEL)))
        while True:
            try:
                got = client.recv_frame(timeout=5.0)
            except TimeoutError:
                return "no answer and no close in 5 s"
            except (Closed, OSError) as exc:
                return f"connection ended without a close frame ({exc})"
            if got.opcode in (OP_PING, OP_PONG):
                continue
            if got.opcode == OP_CLOSE:
                code = got.close_code
                echoed = closes and code is not None and 3000 <= code <= 4999  # ours, echoed
                if code is not None and code not in SERVER_CLOSE_CODES and not echoed:
                    return f"close code {code}"
                # A client answers a close with its own (RFC 6455 §5.5.1) — also when the
                # close it sent itself was a malformed one the server refused with 1002.
                with contextlib.suppress(OSError):  # already closed by the server
                    client.send(frame(OP_CLOSE, got.payload[:2]))
                try:
                    client.wait_closed(timeout=5.0)
                except TimeoutError:
                    return "the TCP connection stayed open after the close"
                return None
            if got.opcode != OP_TEXT or not got.fin or got.rsv:
                return f"unexpected frame {got}"
            problem = envelope_problem(got.payload)
            if problem:
                return f"{problem}: {got.payload!r}"
            if json.loads(got.payload)["id"] == "sentinel":
                return None
    finally:
        client.close()


def test_raw_frames_on_a_real_socket_get_answers_or_proper_closes(server: Any, raw: Any) -> None:
    srv = server(
        "--tick-rate", "0", "--weight-limit", "1000000000", "--connect-limit", "0",
        "--max-message-bytes", str(MAX_MESSAGE), minute_margin=0,
    )  # fmt: skip
    count = max(300, CASES // 10)
    failures: list[str] = []
    started = time.perf_counter()
    for n, case in frame_cases(count, SEED + 2, MAX_MESSAGE):
        problem = _run_frame_case(raw, srv, case.frames, case.closes)
        if problem:
            failures.append(f"case {n}: {problem}: {case.frames!r}")
    assert srv.process.poll() is None, "the server died"
    assert _run_frame_case(raw, srv, [], False) is None  # and still answers
    assert "Traceback" not in srv.log()
    _report("frames", count, failures, started)


def test_the_fuzzer_finds_the_defects_it_is_meant_to_find() -> None:
    """The oracles are not vacuous: replies that break the rules are reported."""
    assert envelope_problem(b'{"status":200,"id":1,"result":[]}') is not None
    assert envelope_problem(b'{"id":1,"status":"200","result":[]}') is not None
    assert envelope_problem(b'{"id":1,"status":400,"error":{"msg":"x"}}') is not None
    assert envelope_problem(b'{"id":1,"status":200,"result":[],"x":1}') is not None
    assert id_problem({"id": 5}, b'{"id":"5","status":200,"result":[]}') is not None
    assert id_problem({"id": "\ud800"}, b'{"id":null,"status":400,"error":{}}') is None
