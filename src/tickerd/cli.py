"""Command line: ``tickerd serve`` (every flag also a TICKERD_* environment variable),
``tickerd price`` and ``tickerd watch`` (terminal.py), ``tickerd symbols fetch``
(universe_file.py)."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .config import GROUPS, Settings, default_text, env_of, flag_of, setting_rules, shown
from .errors import TickerdError
from .loop import run
from .tls import TLSError, TLSFiles
from .validation import Resolved, SettingError, resolve

if TYPE_CHECKING:
    from .ops.group import GroupPlan

SERVE_EXAMPLES = """\
examples:
  tickerd serve
      synthetic prices on ws://127.0.0.1:9000/ws-fapi/v1 and http://127.0.0.1:9001
  tickerd serve --feed replay --replay-path ~/binance/um/daily/trades --replay-speed 60
      Binance's own trades, replayed 60 times faster than they happened
  TICKERD_CONTROL_TOKEN=s3cret tickerd serve --control-port 9004 --store prices.db
      fault injection on 127.0.0.1:9004; last prices kept across restarts

Every flag is also a variable: --weight-limit 100 is TICKERD_WEIGHT_LIMIT=100 (a flag
wins over its variable). A bad value stops tickerd with one line and exit status 2.
"""
_METAVARS = {
    "float": "N", "int": "N", "choice": "LEVEL", "list": "NAMES", "symbols": "SYMBOLS",
    "host": "HOST", "path": "PATH", "url": "URL", "file": "FILE", "paths": "PATHS",
    "dbfile": "FILE", "token": "TOKEN", "speed": "SPEED", "str": "TEXT", "proxy": "URL",
    "folder": "FOLDER", "count": "N", "redis": "URL", "networks": "CIDRS", "keyprefix": "PREFIX",
}  # fmt: skip
_UNIT_METAVARS = {"s": "SECONDS", "bytes": "BYTES", "ticks/s": "RATE"}


def _metavar(name: str, rules: Mapping[str, Any]) -> str:
    if name == "port" or name.endswith("_port"):
        return "PORT"
    return str(_UNIT_METAVARS.get(rules.get("units", ""), _METAVARS[rules["kind"]]))


def flag_help(name: str, rules: Mapping[str, Any]) -> str:
    """The ``--help`` line of a setting: what, allowed values, units, default, variable."""
    text = str(rules["help"])
    if rules.get("choices") and rules["kind"] in ("choice", "list"):
        text += f" ({', '.join(rules['choices'])})"
    special = rules.get("special")
    if special:
        text += "; " + ", ".join(f"{shown(v)}: {m}" for v, m in special.items())
    text += f" [default: {default_text(name)}; env {env_of(name)}]"
    return text.replace("%", "%%")


def _add_settings(parser: argparse.ArgumentParser) -> None:
    rules = setting_rules()
    groups = {
        key: parser.add_argument_group(f"{title} flags")
        for key, title in GROUPS.items()
        if any(r["group"] == key for r in rules.values())
    }
    for name, rule in rules.items():
        groups[rule["group"]].add_argument(
            flag_of(name),
            dest=name,
            default=None,  # not given: the variable, else the default (see settings_from)
            metavar=_metavar(name, rule),
            help=flag_help(name, rule),
        )


def _one_line_error(prog: str, exit: Callable[[int, str], NoReturn]) -> Callable[[str], NoReturn]:
    def error(message: str) -> NoReturn:
        exit(2, f"{prog}: {message} (see {prog} --help)\n")

    return error


def build_parser(env: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``env`` supplies TICKERD_* defaults (os.environ by default)."""
    env = dict(os.environ) if env is None else env
    parser = argparse.ArgumentParser(
        prog="tickerd", description="A self-hosted, Binance-compatible price service."
    )
    parser.add_argument("--version", action="version", version=f"tickerd {__version__}")
    parser.error = _one_line_error(parser.prog, parser.exit)  # type: ignore[method-assign,assignment]
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the WebSocket API and REST servers",
        description="Serve Binance USD-M Futures prices: the WebSocket API, its REST twins, "
        "and on request a push ingest, a control plane and a store.",
        epilog=SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="tickerd serve [--FLAG VALUE ...]",
    )
    _add_settings(serve)
    from .terminal import add_commands

    add_commands(sub, env)  # price, watch
    from .universe_file import add_commands as add_symbols_commands

    add_symbols_commands(sub)  # symbols fetch
    for command in sub.choices.values():
        command.error = _one_line_error(command.prog, command.exit)  # type: ignore[method-assign,assignment]
    return parser


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The :class:`Settings` named by parsed ``serve`` arguments and TICKERD_* variables
    (``env``, os.environ by default); raises :class:`~tickerd.validation.SettingError`."""
    return resolve_args(args, env).settings


def resolve_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Resolved:
    """Like :func:`settings_from`, with the warnings about ignored variables."""
    flags = {name: getattr(args, name, None) for name in setting_rules()}
    return resolve(flags, os.environ if env is None else env)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tickerd`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        try:
            resolved = resolve_args(args)
        except SettingError as exc:
            print(f"tickerd serve: {exc}", file=sys.stderr)
            return 2
        for warning in resolved.warnings:
            print(f"tickerd serve: warning: {warning}", file=sys.stderr)
        settings = resolved.settings
        from .ops.logs import configure_logging
        from .transport.resources import raise_fd_limit

        # Text or JSON, set before --workers forks, so the workers log the same way.
        configure_logging(settings.log_level, settings.log_format)
        raise_fd_limit()  # soft RLIMIT_NOFILE up to the hard limit (Service warns if too low)
        if settings.workers != "1":  # --workers: a supervisor forks the workers
            return _supervise(settings)
        from .app import Service

        try:
            service = Service(settings)
            # Everything built at start-up lives as long as the process: keep it out of the
            # cyclic collector's full passes, which otherwise walk it every few thousand
            # requests.
            run(service.serve_forever(on_ready=gc.freeze))
        except TLSError as exc:  # files that exist but do not load
            print(f"tickerd serve: {exc}", file=sys.stderr)
            return 2
        except (TickerdError, OSError) as exc:
            print(f"tickerd: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "symbols":
        from .universe_file import run as run_symbols

        return run_symbols(args)
    if args.command in ("price", "watch"):
        from .terminal import run_command

        return run_command(args)
    return 2


def _supervise(settings: Settings) -> int:
    """``tickerd serve --workers N``: bind the public ports once, run N workers on them."""
    from .cluster.supervisor import Supervisor, worker_count
    from .ops.group import GroupPlan

    try:
        n = worker_count(settings.workers)
    except ValueError as exc:
        print(f"tickerd: {exc}", file=sys.stderr)
        return 2
    try:  # bad TLS files stop the start here, not in every worker again and again
        tls = TLSFiles.of(settings.tls_cert, settings.tls_key)
    except TLSError as exc:
        print(f"tickerd serve: {exc}", file=sys.stderr)
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
    if settings.streams == "on" and settings.stream_port >= 0:
        ports["streams"] = settings.stream_port
    plan: GroupPlan | None = None
    try:
        # The supervisor owns the ops port; each worker shows its view privately.
        if settings.ops_port >= 0:
            plan = GroupPlan(settings.ops_host, settings.ops_port, n)
        supervisor = Supervisor(
            lambda i, socks: _worker(settings, bound, i, socks, plan),
            n,
            settings.host,
            ports,
            forward=(signal.SIGHUP,) if tls else (),  # each worker reloads its certificate
            aux=_ops_main(plan, settings) if plan is not None else None,
        )
        bound = supervisor.bind()
    except OSError as exc:
        if plan is not None:
            plan.close()
        print(f"tickerd: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("tickerd.supervisor").info(
        "tickerd supervisor: %d workers, WebSocket port %d, REST port %s%s",
        n,
        bound["ws"],
        bound.get("rest", "off"),
        f", stream port {bound['streams']}" if "streams" in bound else "",
    )
    try:
        return supervisor.run()
    finally:
        if plan is not None:
            plan.close()


def _ops_main(plan: GroupPlan, settings: Settings) -> Callable[[], int]:
    from .ops.group import serve_group

    return lambda: serve_group(plan.sock, plan.host, plan.paths, shared=bool(settings.redis))


def _worker(
    settings: Settings,
    ports: dict[str, int],
    index: int,
    socks: dict[str, Any],
    plan: GroupPlan | None,
) -> int:
    from .app import Service
    from .ops import OpsOptions

    # Worker 0 alone serves the control plane (its operations reach the others via Redis);
    # the supervisor's ops process serves the ops port, from each worker's private socket.
    settings = dataclasses.replace(
        settings,
        port=ports["ws"],
        rest_port=ports.get("rest", -1),
        stream_port=ports.get("streams", -1),
        control_port=settings.control_port if index == 0 else -1,
        ops_port=-1,
    )
    if plan is not None:
        plan.sock.close()
    try:
        service = Service(settings, sockets=socks, worker=index)
        if plan is not None:
            service.ops.options = OpsOptions(path=plan.paths[index])
        run(service.serve_forever(on_ready=gc.freeze))
    except (TickerdError, OSError) as exc:
        print(f"tickerd: worker {index}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
