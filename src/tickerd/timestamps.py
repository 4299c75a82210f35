"""Times as people read them: ISO 8601 UTC, with the epoch milliseconds kept beside them.

Binance's wire messages keep their epoch milliseconds untouched (``banned until
1796280507958``); log lines and command-line errors add the UTC form for the reader.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime

__all__ = ["UTCFormatter", "iso_time", "utc_stamp", "with_utc"]

_MIN_MS, _MAX_MS = 0, 253_402_300_799_999  # 1970-01-01 .. 9999-12-31T23:59:59.999Z
_UNTIL_RE = re.compile(r"\b(until|at) ([0-9]{10,16})\b")


def iso_time(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds, computed without floats."""
    if not _MIN_MS <= ms <= _MAX_MS:
        return f"{ms} ms"
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def utc_stamp(ms: int) -> str:
    """``2026-12-03T08:00:00.000Z (1796284800000)``: the UTC time, then the epoch ms."""
    return f"{iso_time(ms)} ({ms})"


def with_utc(text: str) -> str:
    """``text`` with each ``until <ms>`` / ``at <ms>`` followed by its UTC time, e.g.
    ``banned until 1796280507958 (2026-12-02T…Z)``: for a person reading a wire message."""
    return _UNTIL_RE.sub(lambda m: f"{m[1]} {m[2]} ({iso_time(int(m[2]))})", text)


class UTCFormatter(logging.Formatter):
    """Log records stamped ``2026-12-03T08:00:00.123Z``: UTC, whatever the machine's zone."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"
