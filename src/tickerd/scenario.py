"""Scenarios: control operations on a timeline, from a JSON file or a control request.

A scenario is a JSON object::

    {
      "name": "exchange-hiccup",
      "seed": 42,
      "steps": [
        {"at_ms": 0,    "op": "clock.freeze",  "args": {"at_ms": 1700000040000}},
        {"at_ms": 0,    "op": "price.set",     "args": {"symbol": "BTCUSDT", "price": "97000.10"}},
        {"at_ms": 1500, "op": "fault.http429", "args": {"count": 2, "retry_after_ms": 5000}},
        {"at_ms": 3000, "op": "fault.latency", "args": {"min_ms": 50, "max_ms": 200}},
        {"at_ms": 4500, "op": "event.shutdown"},
        {"at_ms": 5000, "op": "conn.rollover"}
      ]
    }

``op`` is any operation of :data:`tickerd.control.OPS` but ``scenario.stop``; ``args``
are that operation's arguments, checked when the file is loaded, so a bad file is refused
before the server starts, with a message naming the step (1-based) and its operation.

Timing: ``at_ms`` counts milliseconds of the event loop's monotonic clock from the start of
the run, not of the service clock — a scenario usually freezes or moves the service clock
itself, and a step timed on a frozen clock would never come. Steps must be in ``at_ms``
order; steps with the same ``at_ms`` run back to back with nothing served in between, and
the 0 ms steps run before the server says it is ready (``--scenario``) or before the control
request that started the run returns.

Determinism: ``seed`` (default 0) seeds one ``random.Random`` per run; a random latency step
without its own ``seed`` draws one from it, in step order, so the same file gives the same
delays, and with a frozen clock, the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .control import ControlError, validate_args

MAX_STEPS = 10_000
MAX_FILE_BYTES = 1024 * 1024
MAX_AT_MS = 7 * 86_400_000  # a week of timeline
_KEYS = frozenset({"name", "seed", "steps", "description"})
_STEP_KEYS = frozenset({"at_ms", "op", "args", "note"})
_NOT_IN_SCENARIOS = frozenset({"scenario.stop"})


class ScenarioError(ControlError):
    """A scenario document that cannot run, with the reason (naming the step)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One timed operation; ``index`` is 1-based, as error messages count."""

    index: int
    at_ms: int
    op: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario: its name, seed and steps in time order."""

    name: str
    seed: int
    steps: tuple[Step, ...]


def parse_scenario(doc: Any, source: str = "scenario") -> Scenario:
    """Validate a parsed scenario document; raises :class:`ScenarioError` naming the step."""
    if not isinstance(doc, dict):
        raise ScenarioError(f"{source}: a scenario is a JSON object with a 'steps' list")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise ScenarioError(f"{source}: unknown key {unknown[0]!r} (known: {sorted(_KEYS)})")
    name = doc.get("name", Path(source).stem)
    seed = doc.get("seed", 0)
    if not isinstance(name, str):
        raise ScenarioError(f"{source}: 'name' must be a string")
    if type(seed) is not int:
        raise ScenarioError(f"{source}: 'seed' must be an integer")
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError(f"{source}: 'steps' must be a non-empty list")
    if len(raw_steps) > MAX_STEPS:
        raise ScenarioError(f"{source}: {len(raw_steps)} steps; at most {MAX_STEPS}")
    steps: list[Step] = []
    previous = 0
    for index, raw in enumerate(raw_steps, 1):
        step = _parse_step(raw, index, source)
        if step.at_ms < previous:
            raise ScenarioError(
                f"{source}: step {index} ({step.op}): at_ms {step.at_ms} comes before the "
                f"previous step's {previous}; list steps in time order"
            )
        previous = step.at_ms
        steps.append(step)
    return Scenario(name, seed, tuple(steps))


def _parse_step(raw: Any, index: int, source: str) -> Step:
    where = f"{source}: step {index}"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: a step is an object with 'at_ms', 'op' and 'args'")
    op = raw.get("op")
    if not isinstance(op, str):
        raise ScenarioError(f"{where}: 'op' must be a string")
    where = f"{where} ({op})"
    unknown = sorted(set(raw) - _STEP_KEYS)
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r} (known: {sorted(_STEP_KEYS)})")
    at_ms = raw.get("at_ms")
    if type(at_ms) is not int or not 0 <= at_ms <= MAX_AT_MS:
        raise ScenarioError(f"{where}: 'at_ms' must be an integer from 0 to {MAX_AT_MS}")
    if op in _NOT_IN_SCENARIOS:
        raise ScenarioError(f"{where}: not allowed in a scenario")
    try:
        args = validate_args(op, raw.get("args"))
    except ControlError as exc:
        raise ScenarioError(f"{where}: {exc.msg}") from None
    return Step(index, at_ms, op, args)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a JSON scenario file; raises :class:`ScenarioError`."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"scenario {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(f"scenario {path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ScenarioError(f"scenario {path}: not valid JSON: {exc}") from None
    return parse_scenario(doc, str(path))
