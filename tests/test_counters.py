"""The counters requests are counted in, and the metric families built from them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client.core import HistogramMetricFamily

from tickerd.book import PriceBook
from tickerd.counters import (
    INVALID,
    UNKNOWN,
    UNROUTED,
    ApiCounters,
    ConnectionCounters,
    Histogram,
    RestCounters,
    close_code_label,
)
from tickerd.ops.metrics import families
from tickerd.protocol import Protocol, Session
from tickerd.ratelimit import RateLimiter
from tickerd.symbols import SymbolUniverse


def test_histogram_puts_a_value_on_a_bound_in_that_bound_s_bucket():
    h = Histogram((10, 20, 30))
    for v in (0, 10, 11, 20, 30, 31, 10**12):
        h.observe(v)
    assert h.counts == [2, 2, 1, 2]
    assert h.count == 7
    assert h.total == 0 + 10 + 11 + 20 + 30 + 31 + 10**12


@pytest.mark.parametrize("bounds", [(), (2, 1), (1, 1)])
def test_histogram_refuses_bounds_that_are_not_ascending(bounds):
    with pytest.raises(ValueError, match="ascending"):
        Histogram(bounds)


@pytest.mark.parametrize(
    ("code", "label"),
    [(None, "none"), (1000, "1000"), (1002, "1002"), (2999, "2999"), (3000, "3xxx"),
     (3999, "3xxx"), (4000, "4xxx"), (4999, "4xxx"), (5000, "5000")],
)  # fmt: skip
def test_close_codes_are_bucketed_into_a_bounded_label_set(code, label):
    assert close_code_label(code) == label


def _info(code: int, reason: str | None = "") -> SimpleNamespace:
    return SimpleNamespace(code=code, reason=reason)


def test_connection_closes_are_counted_by_code_and_first_closer():
    c = ConnectionCounters()
    c.close(1, "1.2.3.4", None)
    c.close(2, "1.2.3.4", SimpleNamespace(sent=None, recv=None, recv_then_sent=False))
    c.close(3, "1.2.3.4", SimpleNamespace(sent=_info(1001), recv=None, recv_then_sent=False))
    c.close(4, "1.2.3.4", SimpleNamespace(sent=_info(1002), recv=_info(1002), recv_then_sent=False))
    c.close(
        5, "1.2.3.4", SimpleNamespace(sent=_info(4321), recv=_info(4321, None), recv_then_sent=True)
    )
    c.close(6, "1.2.3.4", SimpleNamespace(sent=None, recv=_info(1000), recv_then_sent=True))
    assert c.closed == {
        ("none", "none"): 2,
        ("1001", "server"): 1,
        ("1002", "server"): 1,
        ("4xxx", "client"): 1,
        ("1000", "client"): 1,
    }


def test_protocol_counts_every_outcome_and_the_200s_are_the_rest():
    book = PriceBook(SymbolUniverse.default())
    book.update(book.make_tick("BTCUSDT", "97000.10", 1))
    limiter = RateLimiter(7, ban_grace=1)
    p = Protocol(book, limiter)
    s = Session("9.9.9.9")

    def ask(text: str) -> int:
        reply = b"".join(p.handle(text.encode(), s, 1_000))
        return int(reply.split(b'"status":')[1][:3])

    assert ask('{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}') == 200
    assert ask('{"id":2,"method":"v1/ticker.price","params":{}}') == 200  # weight 2
    assert ask('{"id":3,"method":"ticker.price","params":{"symbol":"NOPE"}}') == 400
    assert ask('{"id":4,"method":"depth"}') == 400
    assert ask("[1]") == 400
    assert (
        ask('{"id":5,"method":"ticker.price","params":{"symbol":"BTCUSDT","returnRateLimits":1}}')
        == 400
    )
    assert ask('{"id":6,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}') == 200  # 7
    assert ask('{"id":7,"method":"depth"}') == 429
    assert ask('{"id":8,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}') == 429
    assert ask('{"id":9,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}') == 418
    assert ask('{"id":10,"method":"depth"}') == 418
    assert b"".join(p.binary_frame()) == b"".join(p.envelope_error(None, "Invalid JSON request."))
    p.refused(b'{"id":11,"method":"ticker.price"}', s, limiter_error(limiter, s, 429))
    p.refused(b'{"id":12,"method":"v9/nope"}', s, limiter_error(limiter, s, 418))
    assert p.counters.requests() == {
        ("ticker.price", 200): 3,
        ("ticker.price", 400): 2,
        ("ticker.price", 429): 1 + 1,
        ("ticker.price", 418): 1,
        (UNKNOWN, 400): 1,
        (UNKNOWN, 429): 1,
        (UNKNOWN, 418): 1 + 1,
        (INVALID, 400): 2,  # "[1]" and the envelope_error above; binary_frame() is not one
    }
    # Charged: 1 + 2 + 1 + 1 + 1 + 1, 1 + 1 (the 429s), 1 (the one earning the ban); then
    # nothing while banned.
    assert limiter.weight_charged() == 10


def limiter_error(limiter: RateLimiter, s: Session, status: int) -> object:
    from tickerd.transport.faults import RequestFault, Target

    return RequestFault(status, 1, Target()).error(s.client, 1_000, limiter)


def test_rest_counts_unknown_paths_under_one_label():
    c = RestCounters(["/fapi/v1/ping"])
    for path, status in [("/fapi/v1/ping", 200), ("/x", 404), ("/y", 404), ("/fapi/v1/ping", 429)]:
        c.count(path, status)
    assert c.requests() == {
        ("/fapi/v1/ping", 200): 1,
        (UNROUTED, 404): 2,
        ("/fapi/v1/ping", 429): 1,
    }
    assert ApiCounters().requests()[("ticker.price", 200)] == 0


def test_families_render_summed_figures_the_same_way():
    """A supervisor adds workers' figures and renders the sum with the same function."""

    def fig(n: int) -> dict[str, object]:
        return {
            "version": "1", "requests": [["ws", "ticker.price", "200", n]], "weight": n,
            "bans_active": 0, "clients_tracked": 1, "connections_open": 1,
            "connections_opened": n, "connections_closed": [], "connections_refused": [],
            "slow_readers_cut": 0, "feed_ticks": [], "feed_states": [], "feed_age_ms": [],
            "latency": {"bounds_ns": [1000, 2000], "counts": [n, 0, 1], "total_ns": 1500 * n},
            "store": None, "symbols": 1, "faults_armed": 0,
        }  # fmt: skip

    summed = dict(fig(3))  # worker a: 3, worker b: 4
    summed["requests"] = [["ws", "ticker.price", "200", 7]]
    summed["latency"] = {"bounds_ns": [1000, 2000], "counts": [7, 0, 2], "total_ns": 1500 * 7}
    out = {f.name: f for f in families(summed)}
    (sample,) = [s for s in out["tickerd_requests"].samples]
    assert sample.value == 7 and sample.labels == {
        "surface": "ws", "method": "ticker.price", "status": "200",
    }  # fmt: skip
    hist = out["tickerd_ws_reply_latency_seconds"]
    assert isinstance(hist, HistogramMetricFamily)
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets == {"1e-06": 7.0, "2e-06": 7.0, "+Inf": 9.0}


def test_weight_charged_survives_window_ends_sweeps_and_resets():
    from tickerd.errors import IPBannedError

    lim = RateLimiter(100, window_ms=1000, max_clients=2)
    lim.charge("a", 3, 0)
    lim.charge("b", 4, 0)
    lim.charge("a", 5, 1000)  # a's first window ends: its 3 are kept
    assert lim.weight_charged() == 12
    lim.charge("c", 1, 2500)  # the table is full: a and b, idle, are swept out
    assert lim.usage(2500)[0].key == "c" and len(lim.usage(2500)) == 1
    assert lim.weight_charged() == 13
    lim.reset("c")
    lim.reset()
    assert lim.weight_charged() == 13
    lim.ban("d", 3000)
    with pytest.raises(IPBannedError):
        lim.charge("d", 7, 3000)  # banned: costs nothing
    assert lim.weight_charged() == 13
