"""The control plane's one error type: a message and the HTTP status that says why."""

from __future__ import annotations

from ..errors import TickerdError


class ControlError(TickerdError):
    """A control operation that cannot be done, with the HTTP status that says why.

    400: bad arguments; 404: an unknown operation or fault; 409: nothing to act on, or a
    conflict (a scenario already running); 502: the control plane could not be reached or
    answered something that is not JSON (:class:`~tickerd.control.ControlClient`).
    """

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status = status
