"""Command line: ``tickerd serve`` (every flag also a TICKERD_* environment variable),
``tickerd price`` and ``tickerd watch`` (terminal.py)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import sys
from collections.abc import Sequence
from typing import Any

from .config import ENV_PREFIX, Settings
from .errors import TickerdError


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX system
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


def _add_settings(parser: argparse.ArgumentParser, env: dict[str, str]) -> None:
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        env_name = ENV_PREFIX + f.name.upper()
        default = getattr(defaults, f.name)
        kind = type(default) if default is not None else str
        raw = env.get(env_name)
        if raw is not None:
            try:
                default = kind(raw)
            except ValueError:
                parser.error(f"{env_name}={raw!r} is not a valid {kind.__name__}")
        parser.add_argument(
            flag,
            dest=f.name,
            type=kind,
            default=default,
            metavar=f.name.upper(),
            help=f"{f.metadata.get('help', '')} (env {env_name}; default {default})",
        )


def build_parser(env: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``env`` supplies TICKERD_* defaults (os.environ by default)."""
    env = dict(os.environ) if env is None else env
    parser = argparse.ArgumentParser(
        prog="tickerd", description="A self-hosted, Binance-compatible price service."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the WebSocket API and REST servers")
    _add_settings(serve, env)
    from .terminal import add_commands

    add_commands(sub, env)  # price, watch
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The :class:`Settings` named by parsed arguments."""
    return Settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tickerd`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        settings = settings_from(args)
        from .ops.logs import configure_logging

        try:
            configure_logging(settings.log_level, settings.log_format)
        except ValueError as exc:
            print(f"tickerd: {exc}", file=sys.stderr)
            return 1
        from .app import Service

        try:
            service = Service(settings)
            # Everything built at start-up lives as long as the process: keep it out of the
            # cyclic collector's full passes, which otherwise walk it every few thousand
            # requests.
            _run(service.serve_forever(on_ready=gc.freeze))
        except (TickerdError, OSError) as exc:
            print(f"tickerd: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command in ("price", "watch"):
        from .terminal import run_command

        return run_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
