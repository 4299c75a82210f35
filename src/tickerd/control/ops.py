"""The operations table: every control operation's name, callable, arguments and help.

The HTTP surface (``POST /control/<op>``), scenario files, the pytest fixture and
:meth:`Control.apply <tickerd.control.runtime.Control.apply>` all go through this one table
and :func:`validate_args`, so an operation is refused the same way wherever it comes from.
Each :class:`Op` carries a typed callable that runs it on a
:class:`~tickerd.control.runtime.Control` with the validated arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ControlError

if TYPE_CHECKING:
    from .runtime import Control

Result = dict[str, Any]
Runner = Callable[["Control", dict[str, Any]], Result]
Check = Callable[[str, dict[str, Any]], None]

#: Close codes the control plane may close connections with.
CLOSE_CODES = (1000, 1001, 1008, 1011)
#: A contract's ``status`` as Binance lists them (``contractStatus``):
#: https://developers.binance.com/docs/derivatives/usds-margined-futures/common-definition
CONTRACT_STATUSES = (
    "PENDING_TRADING",
    "TRADING",
    "PRE_DELIVERING",
    "DELIVERING",
    "DELIVERED",
    "PRE_SETTLE",
    "SETTLING",
    "CLOSE",
)
MAX_STR = 256
MAX_MS = 366 * 86_400_000  # a year: bound on delays, bans and clock moves
MAX_TIME_MS = 2**53  # epoch ms a client's JSON parser still reads exactly


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of an operation: its JSON type (``int`` or ``str``) and bounds."""

    kind: type
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[int, ...] | tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Op:
    """An operation: what runs it, what it does, its arguments and any rule across them."""

    run: Runner
    help: str
    args: dict[str, Arg] = field(default_factory=dict)
    check: Check | None = None


def _latency_rule(op: str, args: dict[str, Any]) -> None:
    ranged = ("min_ms" in args) + ("max_ms" in args)
    if ("ms" in args) == bool(ranged) or ranged == 1:
        raise ControlError(f"{op}: give either 'ms' or both 'min_ms' and 'max_ms'")
    if ranged and args["min_ms"] > args["max_ms"]:
        raise ControlError(f"{op}: 'min_ms' must not exceed 'max_ms'")


_TARGET = {"ip": Arg(str), "conn": Arg(int, minimum=1)}
_MS = Arg(int, required=True, minimum=0, maximum=MAX_MS)
_TIME = Arg(int, required=True, minimum=0, maximum=MAX_TIME_MS)
_DELAY = Arg(int, minimum=0, maximum=MAX_MS)

OPS: dict[str, Op] = {
    "price.set": Op(
        lambda c, a: c.set_price(**a),
        "set a symbol's price (time: now)",
        {"symbol": Arg(str, True), "price": Arg(str, True), "time_ms": Arg(int, minimum=0)},
    ),
    "price.clear": Op(
        lambda c, a: c.clear_price(**a), "forget a symbol's price", {"symbol": Arg(str, True)}
    ),
    "book.reset": Op(lambda c, a: c.reset_book(), "forget every price"),
    "market.reseed": Op(
        lambda c, a: c.reseed(**a),
        "restart the synthetic market from a seed",
        {"seed": Arg(int, True)},
    ),
    "clock.freeze": Op(
        lambda c, a: c.freeze_clock(**a),
        "stop the clock (at at_ms, default now)",
        {"at_ms": Arg(int, minimum=0, maximum=MAX_TIME_MS)},
    ),
    "clock.unfreeze": Op(
        lambda c, a: c.unfreeze_clock(), "let the clock run on from where it stands"
    ),
    "clock.advance": Op(lambda c, a: c.advance_clock(**a), "move the clock forward", {"ms": _MS}),
    "clock.set": Op(
        lambda c, a: c.set_clock(**a), "set the clock (also backward)", {"now_ms": _TIME}
    ),
    "clock.reset": Op(lambda c, a: c.reset_clock(), "follow the real clock again"),
    "replay.step": Op(
        lambda c, a: c.step_replay(**a),
        "apply the next trades of a step-mode replay",
        {"count": Arg(int, minimum=1, maximum=1_000_000)},
    ),
    "fault.http429": Op(
        lambda c, a: c.http429(**a),
        "answer the next requests 429 / -1003",
        {"count": Arg(int, minimum=1), "retry_after_ms": _DELAY, **_TARGET},
    ),
    "fault.http418": Op(
        lambda c, a: c.http418(**a),
        "answer the next requests 418 / -1003 (banned)",
        {"count": Arg(int, minimum=1), "ban_ms": _DELAY, **_TARGET},
    ),
    "fault.latency": Op(
        lambda c, a: c.add_latency(**a),
        "delay replies by ms, or by a seeded random min_ms..max_ms",
        {"ms": _DELAY, "min_ms": _DELAY, "max_ms": _DELAY, "seed": Arg(int), **_TARGET},
        _latency_rule,
    ),
    "fault.pings": Op(
        lambda c, a: c.ignore_pings(**a), "leave client pings unanswered", dict(_TARGET)
    ),
    "fault.clear": Op(
        lambda c, a: c.clear_faults(**a), "disarm one fault (id) or all", {"id": Arg(int)}
    ),
    "limit.weight": Op(
        lambda c, a: c.set_weight_limit(**a),
        "change REQUEST_WEIGHT per minute",
        {"limit": Arg(int, True, minimum=1, maximum=2**31)},
    ),
    "limit.ban": Op(
        lambda c, a: c.ban(**a),
        "ban an IP in the rate limiter (handshakes refused too)",
        {"ip": Arg(str, True), "ms": Arg(int, minimum=1, maximum=MAX_MS)},
    ),
    "limit.reset": Op(
        lambda c, a: c.reset_limits(**a),
        "forget weight and bans (one IP or all)",
        {"ip": Arg(str)},
    ),
    "conn.close": Op(
        lambda c, a: c.close(**a),
        "close connections with a close code",
        {"code": Arg(int, choices=CLOSE_CODES), "reason": Arg(str), **_TARGET},
    ),
    "conn.drop": Op(
        lambda c, a: c.drop(**a), "drop connections' TCP without a close frame", dict(_TARGET)
    ),
    "conn.rollover": Op(
        lambda c, a: c.rollover(**a), "the 24-hour cut now: close 1001", dict(_TARGET)
    ),
    "symbol.status": Op(
        lambda c, a: c.set_symbol_status(**a),
        "set a contract's status (not TRADING: -1121)",
        {"symbol": Arg(str, True), "status": Arg(str, True, choices=CONTRACT_STATUSES)},
    ),
    "event.shutdown": Op(
        lambda c, a: c.server_shutdown(**a), "send the serverShutdown event", dict(_TARGET)
    ),
    "scenario.stop": Op(lambda c, a: c.stop_scenario(), "stop the running scenario"),
    "reset": Op(
        lambda c, a: c.reset(), "faults, clock, limits, bans and statuses back to the start"
    ),
}


def _check_value(op: str, name: str, arg: Arg, value: Any) -> None:
    if arg.kind is int:
        if type(value) is not int:
            raise ControlError(f"{op}: {name!r} must be an integer, got {value!r}")
        if arg.minimum is not None and value < arg.minimum:
            raise ControlError(f"{op}: {name!r} must be at least {arg.minimum}")
        if arg.maximum is not None and value > arg.maximum:
            raise ControlError(f"{op}: {name!r} must be at most {arg.maximum}")
    elif type(value) is not str or not 0 < len(value) <= MAX_STR:
        raise ControlError(f"{op}: {name!r} must be a non-empty string, got {value!r}")
    if arg.choices is not None and value not in arg.choices:
        raise ControlError(f"{op}: {name!r} must be one of {list(arg.choices)}, got {value!r}")


def validate_args(op: str, args: Any) -> dict[str, Any]:
    """Check ``args`` against operation ``op``; returns them as keyword arguments.

    Raises :class:`ControlError` (404 for an unknown operation, 400 for bad arguments) with
    a message naming the operation and the argument.
    """
    spec = OPS.get(op)
    if spec is None:
        raise ControlError(f"unknown operation {op!r}", 404)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ControlError(f"{op}: arguments must be a JSON object")
    for name, value in args.items():
        arg = spec.args.get(name)
        if arg is None:
            known = ", ".join(spec.args) or "none"
            raise ControlError(f"{op}: unknown argument {name!r} (known: {known})")
        _check_value(op, name, arg, value)
    for name, arg in spec.args.items():
        if arg.required and name not in args:
            raise ControlError(f"{op}: argument {name!r} is required")
    if spec.check is not None:
        spec.check(op, args)
    return dict(args)


def describe_ops() -> dict[str, Any]:
    """Every operation as ``GET /control/ops`` lists it: path, help, argument types."""
    return {
        name: {
            "path": "/control/" + name.replace(".", "/"),
            "help": op.help,
            "args": {
                arg_name: {"type": arg.kind.__name__, "required": arg.required}
                for arg_name, arg in op.args.items()
            },
        }
        for name, op in OPS.items()
    }
