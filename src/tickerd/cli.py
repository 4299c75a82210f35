"""Command line: ``tickerd serve`` (every flag also a TICKERD_* environment variable),
``tickerd price`` and ``tickerd watch`` (terminal.py)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
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
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if settings.workers.strip() != "1":  # --workers: a supervisor forks the workers
            return _supervise(settings)
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


def _supervise(settings: Settings) -> int:
    """``tickerd serve --workers N``: bind the public ports once, run N workers on them."""
    from .cluster.supervisor import Supervisor, worker_count

    try:
        n = worker_count(settings.workers)
    except ValueError as exc:
        print(f"tickerd: {exc}", file=sys.stderr)
        return 2
    if (
        n > 1
        and not settings.redis
        and (settings.control_port >= 0 or "push" in settings.feed.split(","))
    ):
        print(
            "tickerd: --workers with the control plane or the push feed needs --redis "
            "(the workers share prices and limits through it)",
            file=sys.stderr,
        )
        return 2
    ports = {"ws": settings.port}
    if settings.rest_port >= 0:
        ports["rest"] = settings.rest_port
    supervisor = Supervisor(
        lambda i, socks: _worker(settings, bound, i, socks), n, settings.host, ports
    )
    try:
        bound = supervisor.bind()
    except OSError as exc:
        print(f"tickerd: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("tickerd.supervisor").info(
        "tickerd supervisor: %d workers, WebSocket port %d, REST port %s",
        n,
        bound["ws"],
        bound.get("rest", "off"),
    )
    return supervisor.run()


def _worker(settings: Settings, ports: dict[str, int], index: int, socks: dict[str, Any]) -> int:
    from .app import Service

    # Worker 0 alone serves the control plane (its operations reach the others via Redis).
    settings = dataclasses.replace(
        settings,
        port=ports["ws"],
        rest_port=ports.get("rest", -1),
        control_port=settings.control_port if index == 0 else -1,
    )
    try:
        service = Service(settings, sockets=socks, worker=index)
        _run(service.serve_forever(on_ready=gc.freeze))
    except (TickerdError, OSError) as exc:
        print(f"tickerd: worker {index}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
