"""Where the control plane meets the WebSocket transport: the fault model, the injector
that arms faults on live connections, and the view of those connections.

Every import of the fault model and the injector by the control plane goes through this
module.
"""

from __future__ import annotations

from typing import Any

from ..faults import MAX_FAULTS, LatencyFault, PingFault, RequestFault, Target
from ..transport.faults import FaultInjector

__all__ = [
    "MAX_FAULTS",
    "FaultInjector",
    "LatencyFault",
    "PingFault",
    "RequestFault",
    "Target",
    "connection_rows",
]


def connection_rows(faults: FaultInjector) -> list[dict[str, Any]]:
    """The WebSocket connections the injector's server holds, by id, as the control
    state lists them: ``id``, ``ip``, ``port`` (the peer's), ``age_ms``, ``closing``."""
    ws = faults.ws
    if ws is None:
        return []
    now = ws.loop.time()
    return [
        {
            "id": c.conn_id,
            "ip": c.session.client,
            "port": _peer_port(c.ws),
            "age_ms": int((now - c.opened) * 1000),
            "closing": bool(c.close_sent_at),
        }
        for c in sorted(ws.connections, key=lambda c: c.conn_id)
    ]


def _peer_port(ws: Any) -> int | None:
    peer = ws.underlying_transport.get_extra_info("peername") if ws is not None else None
    return int(peer[1]) if isinstance(peer, tuple) and len(peer) > 1 else None
