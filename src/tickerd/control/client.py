"""A blocking client of a server's control plane over HTTP (``--control-port``)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from .errors import ControlError

#: Status of a :class:`ControlError` when no usable answer came back: the control plane
#: could not be reached (connection refused, DNS, reset) or answered something else than a
#: JSON object.
UNREACHABLE = 502
#: Status of a :class:`ControlError` when the control plane did not answer in time.
TIMED_OUT = 504


class ControlClient:
    """Calls a tickerd control plane in another process, for tests and scripts.

    Every failure raises :class:`~tickerd.control.ControlError`: the server's refusals
    with their HTTP status and message, and, with :data:`UNREACHABLE` or :data:`TIMED_OUT`,
    a control plane that cannot be reached, does not answer in ``timeout`` seconds or
    answers something that is not a JSON object.

    >>> ctl = ControlClient("http://127.0.0.1:9004", "secret")    # doctest: +SKIP
    >>> ctl.call("fault.http429", count=2)                        # doctest: +SKIP
    """

    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run operation ``op`` (e.g. ``"fault.http429"``) with ``args``."""
        return self._request("POST", "/control/" + op.replace(".", "/"), args)

    def state(self) -> dict[str, Any]:
        """``GET /control/state``."""
        return self._request("GET", "/control/state", None)

    def ops(self) -> dict[str, Any]:
        """``GET /control/ops``: every operation, its path and arguments."""
        return self._request("GET", "/control/ops", None)

    def run_scenario(self, doc: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """``POST /control/scenario`` with a scenario document; ``replace`` stops a running
        scenario instead of being refused with 409."""
        return self._request(
            "POST", "/control/scenario", {**doc, "replace": True} if replace else doc
        )

    def _request(self, method: str, path: str, body: Any) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        where = f"control plane {self.url}"
        try:
            request = urllib.request.Request(self.url + path, data=data, method=method)
        except ValueError as exc:
            raise ControlError(f"{where}: {exc}", UNREACHABLE) from None
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _refusal(exc) from None
        except TimeoutError:
            raise ControlError(f"{where}: no answer in {self.timeout} s", TIMED_OUT) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise ControlError(f"{where}: no answer in {self.timeout} s", TIMED_OUT) from None
            raise ControlError(f"{where}: {exc.reason}", UNREACHABLE) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ControlError(f"{where}: {exc!r}", UNREACHABLE) from None
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise ControlError(f"{where} answered something else than a JSON object", UNREACHABLE)
        return doc


def _refusal(exc: urllib.error.HTTPError) -> ControlError:
    """The server's error answer as a :class:`ControlError` with its status."""
    try:
        doc = json.loads(exc.read())
    except (ValueError, OSError):
        doc = None
    msg = doc.get("error") if isinstance(doc, dict) else None
    return ControlError(str(msg if msg is not None else exc.reason), exc.code)
