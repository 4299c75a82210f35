"""The error of feeds that cannot be built as configured."""

from __future__ import annotations

from ..errors import TickerdError


class FeedConfigError(TickerdError):
    """Feeds that cannot be built as configured, with the reason."""
