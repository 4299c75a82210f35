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

``op`` is any operation of :data:`tickerd.control.ops.OPS` but ``scenario.stop``; ``args``
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

One scenario runs at a time: starting another while one runs is refused (409) unless the
caller asks to replace it (``"replace": true`` on ``POST /control/scenario``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ControlError
from .ops import Result, validate_args

log = logging.getLogger("tickerd.control")

MAX_STEPS = 10_000
MAX_FILE_BYTES = 1024 * 1024
MAX_AT_MS = 7 * 86_400_000  # a week of timeline
MAX_ERRORS_KEPT = 20  # failed steps listed in a run's state
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


# -- running ----------------------------------------------------------------------------------

Apply = Callable[[str, dict[str, Any]], Result]


@dataclass
class _Run:
    scenario: Scenario
    rng: random.Random
    done: int = 0
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_ERRORS_KEPT))
    task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.scenario.name,
            "seed": self.scenario.seed,
            "steps": len(self.scenario.steps),
            "done": self.done,
            "finished": self.done == len(self.scenario.steps),
            "errors": list(self.errors),
        }


class ScenarioRunner:
    """Runs one scenario at a time through ``apply`` (a control plane's entry point).

    A step that fails is logged and listed in the run's ``errors``; the run goes on.
    Must be used on the event loop thread that runs the timed steps.
    """

    def __init__(self, apply: Apply) -> None:
        self._apply = apply
        self._run: _Run | None = None

    @property
    def running(self) -> bool:
        """Whether a run still has timed steps to go."""
        return self._run is not None and self._run.running

    def start(self, scenario: Scenario, *, replace: bool = False) -> Result:
        """Run ``scenario``: its 0 ms steps now, the rest timed on the loop's monotonic
        clock from now. Raises :class:`ControlError` 409 while another run is going,
        unless ``replace`` (which stops that run first)."""
        if self.running:
            assert self._run is not None
            if not replace:
                raise ControlError(
                    f"scenario {self._run.scenario.name!r} is running "
                    f"({self._run.done} of {len(self._run.scenario.steps)} steps done): "
                    'stop it first (scenario.stop) or ask to replace it ("replace": true)',
                    409,
                )
            self.stop()
        run = _Run(scenario, random.Random(scenario.seed))
        self._run = run
        steps = scenario.steps
        while run.done < len(steps) and steps[run.done].at_ms == 0:
            self._step(run, steps[run.done])
        if run.done < len(steps):
            run.task = asyncio.get_running_loop().create_task(
                self._timed(run), name="tickerd-scenario"
            )
        log.info("scenario %r started: %d steps", scenario.name, len(steps))
        return run.to_state()

    def stop(self) -> Result:
        """Stop the running scenario (steps already applied stay applied)."""
        run = self._run
        if run is not None and run.task is not None and not run.task.done():
            if run.task is not asyncio.current_task():
                run.task.cancel()
            return {"stopped": True}
        return {"stopped": False}

    def state(self) -> Result | None:
        """The last run's progress (None before the first run)."""
        return self._run.to_state() if self._run is not None else None

    async def _timed(self, run: _Run) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        steps = run.scenario.steps
        while run.done < len(steps):
            step = steps[run.done]
            delay = start + step.at_ms / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._step(run, step)
        log.info("scenario %r finished", run.scenario.name)

    def _step(self, run: _Run, step: Step) -> None:
        args = dict(step.args)
        # Randomness a step leaves open comes from the scenario's seed, in step order.
        if step.op == "fault.latency" and "ms" not in args and "seed" not in args:
            args["seed"] = run.rng.randrange(2**32)
        try:
            self._apply(step.op, args)
        except ControlError as exc:
            msg = f"step {step.index} ({step.op}): {exc.msg}"
            log.warning("scenario %r: %s", run.scenario.name, msg)
            run.errors.append(msg)
        run.done += 1
