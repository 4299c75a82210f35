"""Log formats: ``text`` for people (UTC times), ``json`` (one object per line) for log
pipelines.

A JSON line holds ``time`` (ISO 8601 UTC, milliseconds), ``level``, ``logger``,
``message`` (the formatted text, as the text format prints it) and, for a logged exception,
``exception`` (its traceback as one string). Nothing else is added, so every line of a run
has the same keys.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

from ..timestamps import UTCFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        millis = int(record.created * 1000)
        seconds, ms = divmod(millis, 1000)
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send the root logger's records to ``stream`` (stderr) at ``level`` in format ``fmt``,
    unless the root logger has handlers already.

    Raises ValueError, with a message naming the flag, for an unknown level or format.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    name = level.upper()
    if name not in logging.getLevelNamesMapping():
        raise ValueError(
            f"--log-level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not {level!r}"
        )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else UTCFormatter(TEXT_FORMAT))
    # As logging.basicConfig: a root logger that has handlers already (an embedding
    # program, pytest) keeps them.
    logging.basicConfig(level=name, handlers=[handler])
