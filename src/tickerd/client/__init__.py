"""A client of the Binance USDⓈ-M Futures WebSocket API: tickerd's, or Binance's own.

https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-api-general-info

:class:`Client` (asyncio) and :class:`SyncClient` (a background loop, for code without
one); each reply's result is a :class:`~tickerd.models.PriceTicker`. The modules: ``link``
(one WebSocket connection), ``replies`` (results, errors, refused handshakes),
``async_client`` and ``sync_client``.
"""

from ..models import PriceTicker
from .async_client import DEFAULT_URL, Client
from .sync_client import SyncClient

__all__ = ["DEFAULT_URL", "Client", "PriceTicker", "SyncClient"]
