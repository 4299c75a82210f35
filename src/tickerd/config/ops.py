"""Ops settings: the read-only operations surface (metrics, status, dashboard)."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import PORT_OR_OFF, setting


@dataclass
class OpsSettings:
    """The ops surface: /metrics, /status and /dashboard on a port of its own."""

    ops_host: str = setting(
        "127.0.0.1",
        help="address of the ops surface (metrics, status, dashboard)",
        group="ops",
        kind="host",
        requires="ops",
    )
    ops_port: int = setting(
        9003,
        help="ops port: /metrics, /status, /dashboard",
        group="ops",
        kind="int",
        **PORT_OR_OFF,
        special={0: "any free port", -1: "off"},
    )
