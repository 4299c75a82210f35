"""The mirror's manners towards its upstream: backoff, Retry-After holds, bounded GETs.

Binance answers too many requests with HTTP 429, a ban with 418, a restricted location with
451, each with ``Retry-After`` seconds where it can
(developers.binance.com/docs/derivatives/usds-margined-futures/general-info and
``error-code``). :class:`UpstreamGate` keeps one hold per kind of request ("rest", "stream"):
after a refusal nothing of that kind leaves before its ``Retry-After`` (or, without one,
before the longest backoff). REST weight and stream connections are counted separately by
Binance, so a refused snapshot never holds back a stream handshake.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import aiohttp

from ..backoff import jittered_backoff
from .mirror_state import (
    EXCERPT,
    REFUSALS,
    MirrorStats,
    UpstreamDataError,
    UpstreamError,
    retry_after,
)
from .proxy import proxy_for

log = logging.getLogger("tickerd.feeds.mirror")

#: Failures worth a retry: refusals, bad answers and network trouble.
RETRYABLE = (
    UpstreamError,
    UpstreamDataError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    ValueError,
)
KINDS = ("rest", "stream")


class UpstreamGate:
    """Backoff delays, the per-kind Retry-After holds and the log lines of failures."""

    def __init__(
        self,
        stats: MirrorStats,
        *,
        backoff_initial_s: float,
        backoff_max_s: float,
        rng: random.Random,
        monotonic: Callable[[], float],
    ) -> None:
        self.stats = stats
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.rng = rng
        self.monotonic = monotonic
        self.hold_until = dict.fromkeys(KINDS, 0.0)

    def delay(self, failures: int, retry_after_s: int | None) -> float:
        """Exponential backoff with jitter (half to all of the step), at least Retry-After."""
        delay = jittered_backoff(failures, self.backoff_initial_s, self.backoff_max_s, self.rng)
        return max(delay, float(retry_after_s or 0))

    async def hold(self, kind: str) -> None:
        """Wait out the last Retry-After of ``kind``, if it has not passed."""
        wait = self.hold_until[kind] - self.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def report(self, what: str, exc: BaseException, delay: float | None, kind: str) -> None:
        """Log a failure (ERROR for a refusal, WARNING otherwise) and hold ``kind`` after a
        refusal."""
        then = f"; retrying in {delay:.2f} s" if delay is not None else ""
        if not isinstance(exc, UpstreamError):
            log.warning("%s failed: %s%s", what, describe(exc), then)
            return
        hold: float | None = exc.retry_after_s
        if hold is None and exc.status in REFUSALS:
            hold = self.backoff_max_s  # a refusal without Retry-After: the longest wait
        if hold:
            self.hold_until[kind] = max(self.hold_until[kind], self.monotonic() + hold)
        self.stats.refusals += 1
        self.stats.last_refusal = {
            "what": what,
            "status": exc.status,
            "retry_after": exc.retry_after_s,
        }
        log.error(
            "upstream refused %s: %s; Retry-After %s%s",
            what,
            exc,
            exc.retry_after_s if exc.retry_after_s is not None else "none",
            then,
        )


async def http_get(
    session: aiohttp.ClientSession,
    url: str,
    *,
    proxy: str | None,
    timeout_s: float,
    max_bytes: int,
) -> bytes:
    """GET ``url`` (through the proxy :func:`.proxy.proxy_for` picks) and return its body,
    at most ``max_bytes``; :class:`UpstreamError` for any status but 200."""
    async with asyncio.timeout(timeout_s):
        async with session.get(url, allow_redirects=False, proxy=proxy_for(url, proxy)) as response:
            body = await _read_bounded(response, max_bytes)
            if response.status != 200:
                detail = body[:EXCERPT].decode("utf-8", "replace")
                raise UpstreamError(
                    f"GET {url}", response.status, retry_after(response.headers), detail
                )
    return body


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The response body, refusing one larger than ``limit`` bytes."""
    if response.content_length is not None and response.content_length > limit:
        raise UpstreamDataError(f"response body of {response.content_length} bytes; limit {limit}")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise UpstreamDataError(f"response body over {limit} bytes")
    return bytes(body)


def describe(exc: BaseException) -> str:
    """An exception as ``Type: text`` for a log line."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
