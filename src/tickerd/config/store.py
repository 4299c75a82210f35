"""Store settings: the SQLite file that keeps last prices across restarts."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import DAY_S, SECONDS, setting


@dataclass
class StoreSettings:
    """The SQLite store that keeps last prices across restarts."""

    store: str | None = setting(
        None,
        help="SQLite file that keeps last prices across restarts",
        group="store",
        kind="dbfile",
        default_text="none",
    )
    store_flush_interval: float = setting(
        1.0,
        help="time between writes of changed prices to the store (what a crash can lose)",
        group="store",
        **SECONDS,
        min=0.01,
        max=DAY_S,
        requires="store",
    )
