"""Service settings: one dataclass, every field a ``tickerd serve`` flag and a TICKERD_* variable."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from . import weights

ENV_PREFIX = "TICKERD_"


@dataclass(slots=True)
class Settings:
    """Everything ``tickerd serve`` can be told. Durations are seconds unless named _ms."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=9000, metadata={"help": "WebSocket API port (0: any free port)"})
    path: str = field(default="/ws-fapi/v1", metadata={"help": "WebSocket API path"})
    rest_port: int = field(
        default=9001, metadata={"help": "REST API port (0: any free port, -1: no REST API)"}
    )
    symbols_file: str | None = field(
        default=None, metadata={"help": "exchangeInfo JSON file of the symbol universe"}
    )
    seed: int = field(default=1, metadata={"help": "seed of the synthetic market"})
    tick_rate: float = field(
        default=20.0, metadata={"help": "synthetic ticks per second, all symbols together"}
    )
    feed: str = field(
        default="synthetic",
        metadata={"help": "price sources, comma-separated: synthetic, replay, mirror, push"},
    )
    replay_path: str | None = field(
        default=None,
        metadata={"help": "Binance trades/aggTrades files or folders to replay, comma-separated"},
    )
    replay_speed: str = field(
        default="1", metadata={"help": "replay speed: 1 (real time), N (N times), max, step"}
    )
    mirror_rest_url: str = field(
        default="https://fapi.binance.com",
        metadata={"help": "REST base URL the mirror bootstraps prices from"},
    )
    mirror_stream_url: str = field(
        default="wss://fstream.binance.com/market",
        metadata={"help": "market-streams base URL the mirror subscribes to"},
    )
    mirror_symbols: str | None = field(
        default=None, metadata={"help": "symbols to mirror, comma-separated (default: all)"}
    )
    push_host: str = field(default="127.0.0.1", metadata={"help": "address of the push ingest"})
    push_port: int = field(default=9002, metadata={"help": "push ingest port (0: any free port)"})
    push_token: str | None = field(
        default=None, metadata={"help": "token the push ingest requires (required with push)"}
    )
    push_symbols: str | None = field(
        default=None,
        metadata={"help": "symbols the push ingest may write, comma-separated (default: all)"},
    )
    store: str | None = field(
        default=None, metadata={"help": "SQLite file that keeps last prices across restarts"}
    )
    store_flush_interval: float = field(
        default=1.0, metadata={"help": "seconds between writes of changed prices to the store"}
    )
    weight_limit: int = field(
        default=weights.REQUEST_WEIGHT_LIMIT,
        metadata={"help": "REQUEST_WEIGHT per IP per minute"},
    )
    connect_limit: int = field(
        default=weights.CONNECT_LIMIT,
        metadata={"help": "connection attempts per IP per 5 minutes (0: no limit)"},
    )
    max_connections: int = field(
        default=20_000, metadata={"help": "open WebSocket connections at most"}
    )
    max_message_bytes: int = field(
        default=64 * 1024, metadata={"help": "largest request message (larger: close 1009)"}
    )
    max_send_buffer_bytes: int = field(
        default=4 * 1024 * 1024,
        metadata={"help": "unsent reply bytes per connection before a slow reader is cut off"},
    )
    ping_interval: float = field(default=180.0, metadata={"help": "server ping interval"})
    pong_timeout: float = field(
        default=600.0, metadata={"help": "close when a ping is unanswered this long"}
    )
    max_lifetime: float = field(
        default=86_400.0, metadata={"help": "close connections older than this"}
    )
    handshake_timeout: float = field(
        default=5.0, metadata={"help": "drop connections that do not finish the handshake"}
    )
    close_timeout: float = field(
        default=5.0, metadata={"help": "drop peers that do not answer a close frame"}
    )
    control_host: str = field(
        default="127.0.0.1", metadata={"help": "address of the control plane (fault injection)"}
    )
    control_port: int = field(
        default=-1, metadata={"help": "control plane port (0: any free port, -1: off)"}
    )
    control_token: str | None = field(
        default=None, metadata={"help": "bearer token the control plane requires (required)"}
    )
    scenario: str | None = field(
        default=None, metadata={"help": "JSON scenario file of timed control steps to run"}
    )
    log_level: str = field(default="INFO", metadata={"help": "logging level"})
    log_format: str = field(
        default="text", metadata={"help": "log format: text, or json (one object per line)"}
    )
    ops_host: str = field(
        default="127.0.0.1", metadata={"help": "address of the ops surface (metrics, status)"}
    )
    ops_port: int = field(
        default=9003,
        metadata={"help": "ops port: /metrics, /status, /dashboard (0: any free port, -1: off)"},
    )


def setting_names() -> list[str]:
    """The names of every setting, in declaration order."""
    return [f.name for f in fields(Settings)]
