"""Command line: ``tickerd serve`` (every flag also a TICKERD_* environment variable),
``tickerd price`` and ``tickerd watch`` (terminal.py)."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__
from .config import ENV_PREFIX, Settings
from .errors import TickerdError
from .loop import run
from .timestamps import UTCFormatter
from .tls import TLSError


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
    parser.add_argument("--version", action="version", version=f"tickerd {__version__}")
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
        handler = logging.StreamHandler()
        handler.setFormatter(UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
        from .app import Service
        from .transport.resources import raise_fd_limit

        raise_fd_limit()  # soft RLIMIT_NOFILE up to the hard limit (Service warns if too low)

        try:
            service = Service(settings)
            # Everything built at start-up lives as long as the process: keep it out of the
            # cyclic collector's full passes, which otherwise walk it every few thousand
            # requests.
            run(service.serve_forever(on_ready=gc.freeze))
        except TLSError as exc:
            print(f"tickerd: {exc}", file=sys.stderr)
            return 2
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
