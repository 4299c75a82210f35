"""Server settings: where tickerd listens and what it serves."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import PORT, PORT_OR_OFF, setting


@dataclass
class ServerSettings:
    """Where tickerd listens and what it serves."""

    host: str = setting("127.0.0.1", help="address to listen on", group="server", kind="host")
    port: int = setting(9000, help="WebSocket API port", group="server", kind="int", **PORT)
    path: str = setting(
        "/ws-fapi/v1",
        help="WebSocket API path",
        group="server",
        kind="path",
        reserved=("/healthz",),
    )
    rest_port: int = setting(
        9001,
        help="REST API port",
        group="server",
        kind="int",
        **PORT_OR_OFF,
        special={0: "any free port", -1: "no REST API"},
    )
    symbols_file: str | None = setting(
        None,
        help="exchangeInfo JSON file of the symbol universe",
        group="server",
        kind="file",
        default_text="bundled",
    )
    log_level: str = setting(
        "INFO",
        help="logging level",
        group="server",
        kind="choice",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    )
    log_format: str = setting(
        "text",
        help="log format: text, or json (one object per line)",
        group="server",
        kind="choice",
        choices=("text", "json"),
    )
