"""Cluster settings: worker processes, the Redis cluster and load balancers (docs/CLUSTER.md)."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import setting


@dataclass
class ClusterSettings:
    """Scale-out: workers on one machine, nodes sharing one Redis, trusted load balancers."""

    workers: str = setting(
        "1",
        help="worker processes sharing the ports (N, or auto: one per core)",
        group="cluster",
        kind="count",
        min=1,
        max=1024,
        choices=("auto",),
    )
    redis: str | None = setting(
        None,
        help="Redis URL: cluster mode (one budget, book and feed owner for all)",
        group="cluster",
        kind="redis",
        default_text="none",
    )
    redis_prefix: str = setting(
        "tickerd:",
        help="prefix of every Redis key and channel",
        group="cluster",
        kind="keyprefix",
        requires="redis",
    )
    feed_lease_ms: int = setting(
        3000,
        help="feed lease TTL: another node takes the feeds over within 4/3 of it",
        group="cluster",
        kind="int",
        min=300,
        max=600_000,
        units="ms",
        requires="redis",
    )
    trusted_proxy: str | None = setting(
        None,
        help="load balancers whose X-Forwarded-For, Forwarded and PROXY protocol are believed",
        group="cluster",
        kind="networks",
        default_text="none",
    )
