"""The deliberately naive baseline that the tickerd benchmarks compare against.

A plain ``websockets`` (asyncio) + stdlib ``json`` server speaking the same ``ticker.price``
protocol as tickerd and giving byte-identical answers: compact JSON, key order ``id``,
``status``, ``result``/``error``, ``rateLimits``. It does everything the obvious way on
purpose — ``json.loads`` per request, a fresh result dict and ``json.dumps`` of the whole
envelope per reply, one ``send`` per reply, the library's defaults apart from ``max_size``
and ``compression=None``. Do not optimise it: it is the yardstick.

    python benchmarks/naive_server.py --port 0 --symbols 60 --weight-limit 1000000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

RequestId = str | int | None


def make_prices(n: int) -> dict[str, str]:
    """BTCUSDT, ETHUSDT, then SYM0001USDT, SYM0002USDT, ... with "97000.10"-style prices."""
    prices = {"BTCUSDT": "97000.10", "ETHUSDT": "3500.25"}
    for i in range(1, max(0, n - 2) + 1):
        prices[f"SYM{i:04d}USDT"] = f"{i * 1.25 + 0.01:.2f}"
    return dict(list(prices.items())[:n])


class Naive:
    def __init__(self, prices: dict[str, str], weight_limit: int) -> None:
        self.prices = prices
        self.time = int(time.time() * 1000)
        self.limit = weight_limit
        self.minute = -1
        self.used: dict[str, int] = {}

    def charge(self, ip: str, weight: int) -> int:
        minute = int(time.time() // 60)
        if minute != self.minute:
            self.minute, self.used = minute, {}
        self.used[ip] = self.used.get(ip, 0) + weight
        return self.used[ip]

    def reply(self, rid: RequestId, status: int, body: Any, count: int | None) -> str:
        key = "result" if status == 200 else "error"
        envelope = {"id": rid, "status": status, key: body}
        if count is not None:  # envelope-level errors (bad JSON) carry no rateLimits
            envelope["rateLimits"] = [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.limit,
                    "count": count,
                }
            ]
        return json.dumps(envelope, separators=(",", ":"))

    def answer(self, raw: str | bytes, ip: str) -> str:
        try:
            req = json.loads(raw)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            return self.reply(None, 400, {"code": -1000, "msg": "Invalid JSON request."}, None)
        rid: RequestId = req.get("id")
        if req.get("method") != "ticker.price":
            return self.reply(rid, 400, {"code": -1000, "msg": "Unknown method."}, 0)
        params = req.get("params") or {}
        symbol = params.get("symbol") if isinstance(params, dict) else None
        count = self.charge(ip, 1 if symbol is not None else 2)
        if count > self.limit:
            msg = (
                f"Too many requests; current limit of IP({ip}) is {self.limit} requests per "
                "minute. Please use the websocket for live updates to avoid polling the API."
            )
            return self.reply(rid, 429, {"code": -1003, "msg": msg}, count)
        if symbol is None:
            result: Any = [
                {"symbol": s, "price": p, "time": self.time} for s, p in self.prices.items()
            ]
        elif symbol in self.prices:
            result = {"symbol": symbol, "price": self.prices[symbol], "time": self.time}
        else:
            return self.reply(rid, 400, {"code": -1121, "msg": "Invalid symbol."}, count)
        return self.reply(rid, 200, result, count)


async def main(args: argparse.Namespace) -> None:
    naive = Naive(make_prices(args.symbols), args.weight_limit)

    async def handler(ws: ServerConnection) -> None:
        ip = str(ws.remote_address[0])
        try:
            async for message in ws:
                await ws.send(naive.answer(message, ip))
        except ConnectionClosed:
            pass

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler, args.host, args.port, max_size=args.max_size, compression=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--symbols", type=int, default=60)
    parser.add_argument("--weight-limit", type=int, default=2400)
    parser.add_argument("--max-size", type=int, default=1 << 16)
    asyncio.run(main(parser.parse_args()))
