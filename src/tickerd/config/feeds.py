"""Feed settings: the synthetic market, replay, mirror, push and recording."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import DAY_S, INT64_MAX, PORT, SECONDS, setting


@dataclass
class FeedSettings:
    """The price sources: synthetic, replay, mirror, push, and recording."""

    feed: str = setting(
        "synthetic",
        help="price sources, comma-separated",
        group="feeds",
        kind="list",
        choices=("synthetic", "replay", "mirror", "push"),
    )
    seed: int = setting(
        1,
        help="seed of the synthetic market (same seed, same prices)",
        group="feeds",
        kind="int",
        min=0,
        max=INT64_MAX,
    )
    tick_rate: float = setting(
        20.0,
        help="synthetic ticks per second, all symbols together",
        group="feeds",
        kind="float",
        min=0,
        max=100_000,
        special={0: "prices stand still"},
        units="ticks/s",
    )
    replay_path: str | None = setting(
        None,
        help="Binance trades/aggTrades files (.csv, .zip) or folders of them, comma-separated",
        group="feeds",
        kind="paths",
        default_text="none",
        requires="feed:replay",
    )
    replay_speed: str = setting(
        "1",
        help="replay speed: 1 (real time), N (N times faster), max, step",
        group="feeds",
        kind="speed",
        min=0.001,
        max=1_000_000,
        choices=("max", "step"),
        requires="feed:replay",
    )
    replay_progress_every: float = setting(
        5.0,
        help="time between replay progress log lines",
        group="feeds",
        **SECONDS,
        min=0.1,
        max=DAY_S,
        requires="feed:replay",
    )
    mirror_rest_url: str = setting(
        "https://fapi.binance.com",
        help="REST base URL the mirror bootstraps prices from",
        group="feeds",
        kind="url",
        schemes=("http", "https"),
        requires="feed:mirror",
    )
    mirror_stream_url: str = setting(
        "wss://fstream.binance.com/market",
        help="market-streams base URL the mirror subscribes to",
        group="feeds",
        kind="url",
        schemes=("ws", "wss"),
        requires="feed:mirror",
    )
    mirror_symbols: str | None = setting(
        None,
        help="symbols to mirror, comma-separated",
        group="feeds",
        kind="symbols",
        default_text="all TRADING",
        requires="feed:mirror",
    )
    mirror_stale_after: float = setting(
        60.0,
        help="time without an event before a mirrored symbol is stale",
        group="feeds",
        **SECONDS,
        min=1,
        max=DAY_S,
        requires="feed:mirror",
    )
    mirror_rollover_after: float = setting(
        float(23 * 3600 + 50 * 60),
        help="age at which a stream connection is replaced (Binance cuts at 24 h)",
        group="feeds",
        **SECONDS,
        min=60,
        max=DAY_S,
        requires="feed:mirror",
    )
    mirror_idle_timeout: float = setting(
        300.0,
        help="silence after which a stream socket is replaced",
        group="feeds",
        **SECONDS,
        min=1,
        max=DAY_S,
        requires="feed:mirror",
    )
    mirror_universe_every: float = setting(
        3600.0,
        help="time between exchangeInfo refreshes of the universe",
        group="feeds",
        **SECONDS,
        min=0,
        max=7 * DAY_S,
        special={0: "off"},
        requires="feed:mirror",
    )
    mirror_proxy: str | None = setting(
        None,
        help="http(s) proxy for the mirror's REST and streams",
        group="feeds",
        kind="proxy",
        default_text="HTTPS_PROXY/NO_PROXY",
        requires="feed:mirror",
    )
    record: str | None = setting(
        None,
        help="folder to record the mirror's and push's trades in as Binance aggTrades files",
        group="feeds",
        kind="folder",
        default_text="none",
        requires="feed:record",
    )
    push_host: str = setting(
        "127.0.0.1",
        help="address of the push ingest",
        group="feeds",
        kind="host",
        requires="feed:push",
    )
    push_port: int = setting(
        9002,
        help="push ingest port",
        group="feeds",
        kind="int",
        **PORT,
        requires="feed:push",
    )
    push_token: str | None = setting(
        None,
        help="token the push ingest requires (required with push); better as the variable",
        group="feeds",
        kind="token",
        default_text="none",
        secret=True,
        requires="feed:push",
    )
    push_symbols: str | None = setting(
        None,
        help="symbols the push ingest may write, comma-separated",
        group="feeds",
        kind="symbols",
        default_text="all TRADING",
        requires="feed:push",
    )
