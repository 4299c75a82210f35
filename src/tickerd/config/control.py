"""Control settings: the fault-injection control plane and its scenarios."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import PORT_OR_OFF, setting


@dataclass
class ControlSettings:
    """The control plane (fault injection, clock, scenarios)."""

    control_host: str = setting(
        "127.0.0.1",
        help="address of the control plane (fault injection)",
        group="control",
        kind="host",
        requires="control",
    )
    control_port: int = setting(
        -1,
        help="control plane port",
        group="control",
        kind="int",
        **PORT_OR_OFF,
        special={0: "any free port", -1: "off"},
    )
    control_token: str | None = setting(
        None,
        help="bearer token the control plane requires; better as the variable",
        group="control",
        kind="token",
        default_text="required with --control-port",
        secret=True,
        requires="control",
    )
    scenario: str | None = setting(
        None,
        help="JSON scenario file of timed control operations, run at start-up",
        group="control",
        kind="file",
        default_text="none",
    )
