"""A client for code without an event loop: :class:`~tickerd.client.Client` on a thread.

https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar, overload

from ..errors import ConnectionLost, RequestTimeout, TickerdError
from ..loop import new_event_loop
from ..models import PriceTicker
from .async_client import CLOSE_TIMEOUT_S, DEFAULT_URL, Client

__all__ = ["SyncClient"]

log = logging.getLogger("tickerd.client")

T = TypeVar("T")


class SyncClient:
    """:class:`Client` for code without an event loop: it runs one in a background thread.

    >>> with SyncClient("ws://127.0.0.1:9000/ws-fapi/v1") as client:  # doctest: +SKIP
    ...     print(client.ticker_price("BTCUSDT").price)

    Takes the same options as :class:`Client`; methods may be called from any thread.
    https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker
    """

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tickerd-sync-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def make() -> Client:
            return Client(url, **options)

        self._client: Client = self._call(make(), 5.0)
        c = self._client
        # Every wait inside the client is bounded; this outer bound only guards the thread.
        self._guard = (
            c.timeout + c.max_wait + c.connect_attempts * (c.connect_timeout + c.backoff_max) + 5
        )

    def _call(self, coro: Coroutine[Any, Any, T], guard: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise ConnectionLost("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(guard if guard is not None else self._guard)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestTimeout("the client's loop did not answer in time") from None

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The WebSocket API URL."""
        return self._client.url

    @property
    def weight_used(self) -> int | None:
        """See :attr:`Client.weight_used`."""
        return self._client.weight_used

    @property
    def weight_limit(self) -> int | None:
        """See :attr:`Client.weight_limit`."""
        return self._client.weight_limit

    @property
    def reconnects(self) -> int:
        """See :attr:`Client.reconnects`."""
        return self._client.reconnects

    def connect(self) -> None:
        """See :meth:`Client.connect`."""
        self._call(self._client.connect())

    @overload
    def ticker_price(self, symbol: str, *, timeout: float | None = None) -> PriceTicker: ...

    @overload
    def ticker_price(
        self, symbol: None = None, *, timeout: float | None = None
    ) -> list[PriceTicker]: ...

    def ticker_price(
        self, symbol: str | None = None, *, timeout: float | None = None
    ) -> PriceTicker | list[PriceTicker]:
        """See :meth:`Client.ticker_price`."""
        if symbol is None:
            return self._call(self._client.ticker_price(timeout=timeout))
        return self._call(self._client.ticker_price(symbol, timeout=timeout))

    def request(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """See :meth:`Client.request`."""
        return self._call(self._client.request(method, params, timeout=timeout))

    def close(self) -> None:
        """Close the connection and stop the background loop."""
        if self._closed:
            return
        try:
            self._call(self._client.close(), CLOSE_TIMEOUT_S + 5)
        except TickerdError:  # pragma: no cover - close is bounded; log and go on
            log.warning("closing the client timed out")
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()
