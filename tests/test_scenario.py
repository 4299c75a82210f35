"""Scenarios: validation at load (errors name the step), ``tickerd serve --scenario FILE``,
``POST /control/scenario``, and one multi-step script whose client-side transcript is the
same, byte for byte, on two runs.

``tests/data/scenarios/outage.json`` freezes the clock first, so every time in a reply is
fixed; its steps are 1.5 s apart and the client acts right after the control state shows
a step applied, so the transcript does not depend on how loaded the machine is.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from test_control import (
    CONTROL_FLAGS,
    OP_CLOSE,
    OP_TEXT,
    TOKEN,
    bad_symbol,
    ok,
    rate_limits,
    req,
    too_many,
)
from tickerd.control import ControlClient, ControlError
from tickerd.control.scenario import ScenarioError, load_scenario, parse_scenario
from tickerd.faults import LatencyFault, Target

pytestmark = pytest.mark.timeout(90)

SCENARIOS = Path(__file__).parent / "data" / "scenarios"
OUTAGE = SCENARIOS / "outage.json"
T = 1_700_000_052_345


# -- validation ------------------------------------------------------------------------------


def step(op: str, at_ms: int = 0, **args: Any) -> dict[str, Any]:
    return {"at_ms": at_ms, "op": op, "args": args}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "scenario: a scenario is a JSON object with a 'steps' list"),
        ({"steps": [step("reset")], "speed": 2}, "scenario: unknown key 'speed'"),
        ({"steps": []}, "scenario: 'steps' must be a non-empty list"),
        ({"seed": "1", "steps": [step("reset")]}, "scenario: 'seed' must be an integer"),
        ({"steps": [step("reset"), 5]}, "scenario: step 2: a step is an object"),
        ({"steps": [step("reset"), {"at_ms": 1}]}, "scenario: step 2: 'op' must be a string"),
        (
            {"steps": [step("reset"), step("fault.nope", 10)]},
            "scenario: step 2 (fault.nope): unknown operation 'fault.nope'",
        ),
        (
            {"steps": [step("reset"), step("fault.http429", 10, cnt=2)]},
            "scenario: step 2 (fault.http429): fault.http429: unknown argument 'cnt'",
        ),
        (
            {"steps": [step("conn.close", 0, code=1006)]},
            (
                "scenario: step 1 (conn.close): conn.close: 'code' must be one of "
                "[1000, 1001, 1008, 1011]"
            ),
        ),
        (
            {"steps": [step("fault.latency", 0, ms=5, min_ms=1, max_ms=9)]},
            "scenario: step 1 (fault.latency): fault.latency: give either 'ms' or both",
        ),
        (
            {"steps": [step("price.set", 0, symbol="BTCUSDT")]},
            "scenario: step 1 (price.set): price.set: argument 'price' is required",
        ),
        (
            {"steps": [step("reset", 500), step("reset", 100), step("reset", 900)]},
            "scenario: step 2 (reset): at_ms 100 comes before the previous step's 500",
        ),
        (
            {"steps": [{"at_ms": 1.5, "op": "reset"}]},
            "scenario: step 1 (reset): 'at_ms' must be an integer",
        ),
        (
            {"steps": [{"at_ms": 0, "op": "reset", "when": 1}]},
            "scenario: step 1 (reset): unknown key 'when'",
        ),
        ({"steps": [step("scenario.stop")]}, "step 1 (scenario.stop): not allowed in a scenario"),
    ],
)
def test_bad_scenarios_are_refused_naming_the_step(doc, message):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(doc)
    assert message in str(err.value)
    assert err.value.status == 400


def test_a_good_scenario_parses_in_order():
    scenario = load_scenario(OUTAGE)
    assert (scenario.name, scenario.seed, len(scenario.steps)) == ("outage", 42, 11)
    assert [s.index for s in scenario.steps] == list(range(1, 12))
    assert scenario.steps[4].op == "fault.http429"
    assert scenario.steps[4].args == {"count": 2, "retry_after_ms": 3000}


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ScenarioError, match=r"bad_args\.json: step 2 \(fault\.http429\)"):
        load_scenario(SCENARIOS / "bad_args.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"steps": [', encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"broken\.json: not valid JSON"):
        load_scenario(broken)
    with pytest.raises(ScenarioError, match=r"missing\.json: No such file"):
        load_scenario(tmp_path / "missing.json")


def test_random_latency_is_a_function_of_its_seed():
    def delays(seed: int) -> list[float]:
        fault = LatencyFault(Target(), min_ms=0, max_ms=1000, seed=seed)
        return [fault.next_delay_s() for _ in range(50)]

    assert delays(7) == delays(7) != delays(8)
    rng = random.Random(7)
    assert delays(7) == [rng.randint(0, 1000) / 1000 for _ in range(50)]


# -- at start-up -----------------------------------------------------------------------------


def test_serve_refuses_a_bad_scenario_file():
    cmd = [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "-1"]
    done = subprocess.run(
        [*cmd, "--scenario", str(SCENARIOS / "bad_args.json")],
        check=False,
        capture_output=True,
        timeout=20,
        text=True,
    )
    assert done.returncode == 1
    assert "bad_args.json: step 2 (fault.http429): fault.http429: unknown argument 'cnt'" in (
        done.stderr
    )
    assert "tickerd ready" not in done.stderr


def wait_done(ctl: ControlClient, steps: int, timeout: float = 10.0) -> None:
    """Wait until the running scenario has applied ``steps`` steps."""
    deadline = time.monotonic() + timeout
    while (ctl.state()["scenario"] or {}).get("done", 0) < steps:
        assert time.monotonic() < deadline, ctl.state()["scenario"]
        time.sleep(0.01)


def observe_outage(srv: Any, raw: Any) -> tuple[list[tuple[int, bytes]], dict[str, Any]]:
    """Drive a client through outage.json; return every frame it saw, and the last state."""
    ctl = ControlClient(srv.control_url, TOKEN)
    seen: list[tuple[int, bytes]] = []

    def exchange(*requests: bytes) -> None:
        client.send(b"".join(client.frame(OP_TEXT, r) for r in requests))
        for _ in requests:
            frame = client.recv_data(timeout=5)
            seen.append((frame.opcode, frame.payload))

    wait_done(ctl, 4)  # the 0 ms steps ran before "ready"
    client = raw(srv)
    exchange(req(1), req(2, "ETHUSDT"))
    wait_done(ctl, 7)  # 1.5 s: two 429s armed, clock +1 s, a new BTCUSDT price
    exchange(req(3), req(4), req(5))
    wait_done(ctl, 9)  # 3 s: ETHUSDT settles, replies delayed 20..120 ms
    exchange(req(6, "ETHUSDT"), req(7), req(8, None))
    state = ctl.state()
    for _ in range(2):  # 4.5 s: serverShutdown; 5 s: the 24-hour cut
        frame = client.recv_data(timeout=5)
        seen.append((frame.opcode, frame.payload))
    client.send_close(1001)
    assert client.wait_closed(3) == b""
    wait_done(ctl, 11)
    return seen, state


T1 = T + 1_000
BTC_AT_T1 = b'{"symbol":"BTCUSDT","price":"97001.20","time":%d}' % T1
EXPECTED = [
    (OP_TEXT, ok(1, 6, time_ms=T)),
    (OP_TEXT, ok(2, 7, "ETHUSDT", "3150.50", T)),
    (OP_TEXT, too_many(3, 7, T1 + 3_000, now=T1)),
    (OP_TEXT, too_many(4, 7, T1 + 3_000, now=T1)),
    (OP_TEXT, ok(5, 8, price="97001.20", time_ms=T1)),
    (OP_TEXT, bad_symbol(6, 9)),
    (OP_TEXT, ok(7, 10, price="97001.20", time_ms=T1)),
    (OP_TEXT, b'{"id":8,"status":200,"result":[%s]' % BTC_AT_T1 + rate_limits(12) + b"}"),
    (OP_TEXT, b'{"event":{"e":"serverShutdown","E":%d}}' % T1),
    (OP_CLOSE, b"\x03\xe9"),
]


def test_outage_scenario_gives_the_same_transcript_twice(server, raw):
    runs = []
    for _ in range(2):
        srv = server(*CONTROL_FLAGS, "--scenario", str(OUTAGE), minute_margin=0)
        runs.append(observe_outage(srv, raw))
        srv.signal(15)
        assert srv.wait_exit() == 0
    (first, state1), (second, state2) = runs
    assert first == second == EXPECTED
    # The latency step's seed came from the file's seed: the same on both runs.
    seed = random.Random(42).randrange(2**32)
    for state in (state1, state2):
        [latency] = [f for f in state["faults"] if f["kind"] == "latency"]
        assert (latency["min_ms"], latency["max_ms"], latency["seed"]) == (20, 120, seed)
        assert state["statuses"] == {"ETHUSDT": "SETTLING"}
        assert state["scenario"]["errors"] == []


# -- through the control plane ----------------------------------------------------------------


def test_post_scenario_runs_and_stops(server):
    srv = server(*CONTROL_FLAGS, minute_margin=0)
    ctl = ControlClient(srv.control_url, TOKEN)
    doc = {
        "name": "slow-cut",
        "steps": [
            step("limit.weight", 0, limit=100),
            {"at_ms": 0, "op": "clock.freeze", "args": {"at_ms": T}},
            step("limit.weight", 300, limit=200),
            step("limit.weight", 60_000, limit=300),
        ],
    }
    started = ctl.run_scenario(doc)
    # The 0 ms steps are applied by the time the request returns.
    assert started["name"] == "slow-cut" and started["done"] == 2
    state = ctl.state()
    assert state["weight_limit"] == 100 and state["clock"]["now_ms"] == T
    wait_done(ctl, 3)
    assert ctl.state()["weight_limit"] == 200
    assert ctl.call("scenario.stop") == {"ok": True, "stopped": True}
    scenario = ctl.state()["scenario"]
    assert scenario["done"] == 3 and scenario["finished"] is False
    assert ctl.call("scenario.stop") == {"ok": True, "stopped": False}


def test_post_bad_scenario_is_refused_and_nothing_runs(server):
    srv = server(*CONTROL_FLAGS, minute_margin=0)
    ctl = ControlClient(srv.control_url, TOKEN)
    before = ctl.state()
    doc = {"steps": [step("limit.weight", 0, limit=5), step("fault.http429", 10, count=0)]}
    with pytest.raises(ControlError) as err:
        ctl.run_scenario(doc)
    assert err.value.status == 400
    assert (
        err.value.msg
        == "scenario: step 2 (fault.http429): fault.http429: 'count' must be at least 1"
    )
    after = ctl.state()
    assert after["weight_limit"] == before["weight_limit"] and after["scenario"] is None


def test_runtime_step_errors_are_recorded_not_fatal(server):
    srv = server(*CONTROL_FLAGS, minute_margin=0)
    ctl = ControlClient(srv.control_url, TOKEN)
    ctl.run_scenario({"steps": [step("replay.step"), step("limit.weight", 0, limit=9)]})
    scenario = ctl.state()["scenario"]
    assert scenario["finished"] is True
    assert scenario["errors"] == ["step 1 (replay.step): replay.step: no replay feed running"]
    assert ctl.state()["weight_limit"] == 9
    assert "scenario 'scenario': step 1 (replay.step)" in srv.log()
    assert json.loads(json.dumps(scenario)) == scenario


def test_the_readme_example_is_a_valid_scenario():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("```json scenario-example\n") + len("```json scenario-example\n")
    scenario = parse_scenario(json.loads(readme[start : readme.index("```", start)]))
    assert scenario.name == "exchange-hiccup" and len(scenario.steps) == 6


def test_scenario_runs_without_the_control_port(server, raw, tmp_path):
    path = tmp_path / "limit.json"
    path.write_text(json.dumps({"steps": [step("limit.weight", 0, limit=77)]}), encoding="utf-8")
    srv = server("--tick-rate", "0", "--scenario", str(path), minute_margin=0)
    assert srv.control_url is None
    client = raw(srv)
    client.send_text(req(1))
    assert b'"limit":77,"count":6}]}' in client.recv_text()
