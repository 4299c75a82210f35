"""Operations: what an operator sees of a running tickerd.

``/metrics`` (Prometheus), ``/status`` (JSON) and ``/dashboard`` (a live page) on the ops
port (:mod:`tickerd.ops.surface`), feed state tracking (:mod:`tickerd.ops.tracker`) and the
log formats (:mod:`tickerd.ops.logs`); under ``--workers`` the supervisor's ops process
serves the workers' views merged (:mod:`tickerd.ops.group`, :mod:`tickerd.ops.merge`).
The counters they read are kept where requests are handled, in :mod:`tickerd.counters`.
"""

from .surface import OpsOptions, OpsSurface

__all__ = ["OpsOptions", "OpsSurface"]
