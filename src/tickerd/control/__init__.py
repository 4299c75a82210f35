"""The control plane: make every Binance misbehaviour reproducible on demand.

Prices and time (set a price, reset the book, reseed the synthetic market, freeze or move
the clock, step a replay), faults aimed at all clients, one IP or one connection (forced
429/418, latency, unanswered pings, closes with a chosen code, TCP drops, the 24-hour
rollover, ``serverShutdown`` events, non-trading symbols, a new weight limit) and
scenarios (timed steps of all of the above).

- :mod:`.ops`: the operations table (:data:`OPS`) and the validation of arguments, shared
  by the HTTP surface (``transport/control_http.py``), scenario files and
  :meth:`Control.apply`;
- :mod:`.runtime`: :class:`Control`, every operation as a method over narrow collaborators;
- :mod:`.scenario`: scenario documents and the runner of their timed steps;
- :mod:`.client`: :class:`ControlClient`, for a server in another process;
- :mod:`.hooks`: where the control plane meets the WebSocket transport (faults, connections).
"""

from __future__ import annotations

from .client import ControlClient
from .errors import ControlError
from .hooks import MAX_FAULTS
from .ops import CLOSE_CODES, CONTRACT_STATUSES, OPS, validate_args
from .runtime import Control
from .scenario import Scenario, ScenarioError, load_scenario, parse_scenario

__all__ = [
    "CLOSE_CODES",
    "CONTRACT_STATUSES",
    "MAX_FAULTS",
    "OPS",
    "Control",
    "ControlClient",
    "ControlError",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_scenario",
    "validate_args",
]
