"""The control plane's HTTP surface: its own port, loopback by default, a bearer token.

``tickerd serve --control-port 9003 --control-token SECRET`` serves :class:`~tickerd.control.Control`:

- ``GET /control/state``: clock, prices, statuses, weight limit, per-IP weight and bans,
  armed faults, connections (with the ids faults can aim at), the running scenario;
- ``GET /control/ops``: every operation, its arguments and what it does;
- ``POST /control/<op>`` with a JSON object of arguments (or no body), ``<op>`` an
  operation name with ``/`` for ``.`` (``/control/fault/http429``);
- ``POST /control/scenario`` with a scenario document (:mod:`tickerd.control.scenario`),
  refused with 409 while another scenario runs unless the document says
  ``"replace": true``.

Every request must carry ``Authorization: Bearer <token>``; the token is compared in
constant time (``hmac.compare_digest``), and a request without it or with a wrong one is
answered 401 before anything is read or done, unknown paths included. Answers are JSON:
the operation's result with 200, or ``{"error": "..."}`` with 400 (bad arguments), 401,
404 (unknown operation), 405, 409 (nothing to act on, a scenario already running) or
413 (a body over 1 MiB).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from ..control.errors import ControlError
from ..control.ops import describe_ops
from .aio import SHUTDOWN_TIMEOUT_S, HttpLimits, Site, bearer_matches, netloc

log = logging.getLogger("tickerd.control")

MAX_BODY_BYTES = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

if TYPE_CHECKING:
    from ..control.runtime import Control


@dataclass(frozen=True, slots=True)
class ControlOptions:
    """Where the control plane listens and the bearer token it requires."""

    token: str
    host: str = "127.0.0.1"
    port: int = 9003


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(doc),
        content_type="application/json",
        headers=headers,
    )


class ControlHTTPServer:
    """Serves a :class:`~tickerd.control.runtime.Control` on ``options.host:options.port``."""

    def __init__(self, control: Control, options: ControlOptions) -> None:
        if not options.token:
            raise ControlError("the control plane needs a token: set --control-token")
        self.control = control
        self.options = options
        self._token = options.token.encode()
        self.site = Site()

    @property
    def port(self) -> int:
        """The port listened on (useful when started on port 0)."""
        return self.site.port

    @property
    def url(self) -> str:
        """``http://host:port`` of the control plane."""
        return f"http://{netloc(self.options.host, self.port)}"

    async def start(self) -> None:
        """Listen on ``options.host:options.port``."""
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/control/state", self._state)
        app.router.add_get("/control/ops", self._ops)
        app.router.add_post("/control/scenario", self._scenario)
        app.router.add_post("/control/{op:.+}", self._op)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            keepalive_timeout=HttpLimits().idle_timeout,  # aiohttp's default is an hour
        )  # fmt: skip
        await self.site.listen(runner, self.options.host, self.options.port)

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        await self.site.stop()

    # -- middleware: the token first, then errors as JSON ---------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not bearer_matches(request, self._token):
            return _json(
                {"error": "missing or wrong control token"},
                401,
                {"WWW-Authenticate": 'Bearer realm="tickerd-control"'},
            )
        try:
            return await handler(request)
        except ControlError as exc:
            return _json({"error": exc.msg}, exc.status)
        except web.HTTPException as exc:
            return _json({"error": exc.reason}, exc.status)

    # -- endpoints ------------------------------------------------------------------------

    async def _state(self, request: web.Request) -> web.StreamResponse:
        return _json(self.control.state())

    async def _ops(self, request: web.Request) -> web.StreamResponse:
        return _json(describe_ops())

    async def _op(self, request: web.Request) -> web.StreamResponse:
        op = request.match_info["op"].strip("/").replace("/", ".")
        return _json({"ok": True, **self.control.apply(op, await _body(request))})

    async def _scenario(self, request: web.Request) -> web.StreamResponse:
        doc = await _body(request)
        replace = doc.pop("replace", False) if isinstance(doc, dict) else False
        if type(replace) is not bool:
            raise ControlError(f"'replace' must be true or false, got {replace!r}")
        return _json({"ok": True, **self.control.run_scenario_doc(doc, replace=replace)})


async def _body(request: web.Request) -> Any:
    """The request's JSON body (``{}`` when empty)."""
    data = await request.read()
    if not data.strip():
        return {}
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ControlError("the body is not valid JSON") from None
