"""The mirror through an outbound HTTP proxy: ``--mirror-proxy``, or ``HTTPS_PROXY`` and
``NO_PROXY`` when it is not given. The upstream is the fake Binance over TLS (a trustme
CA), so REST and streams both reach it through CONNECT tunnels of a small proxy that runs
in the test on 127.0.0.1 and records what it carried."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fake_binance import FakeBinance, eventually
from test_mirror import T0, price, running, universe
from tickerd import PriceBook
from tickerd.feeds.mirror import MirrorFeed
from tickerd.feeds.proxy import proxy_for

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.timeout(60)

MAX_HEAD = 16 * 1024
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy",
              "ALL_PROXY", "all_proxy")  # fmt: skip


class ConnectProxy:
    """An HTTP CONNECT proxy: ``tunnels`` lists every ``host:port`` it was asked for and
    ``ports`` the local port of each upstream connection it opened."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self.ports: set[int] = set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if method != "CONNECT" or len(head) > MAX_HEAD:
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        self.tunnels.append(target)
        host, _, port = target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self.ports.add(up_writer.get_extra_info("sockname")[1])
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            dst.close()


def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def with_tls_fake(
    scenario: Callable[[FakeBinance, ConnectProxy, ssl.SSLContext], Awaitable[None]],
) -> None:
    async def main() -> None:
        server_ctx, client_ctx = tls_pair()
        fake = FakeBinance(ssl_context=server_ctx)
        proxy = ConnectProxy()
        await fake.start()
        await proxy.start()
        try:
            await scenario(fake, proxy, client_ctx)
        finally:
            await proxy.stop()
            await fake.stop()

    asyncio.run(main())


def tls_feed(fake: FakeBinance, client_ctx: ssl.SSLContext, **kw: Any) -> MirrorFeed:
    return MirrorFeed(universe(), rest_url=fake.rest_url, stream_url=fake.stream_url,
                      symbols=["BTCUSDT"], bootstrap_delay_s=0.01, ssl_context=client_ctx,
                      backoff_initial_s=0.05, backoff_max_s=0.2, **kw)  # fmt: skip


async def mirror_once(fake: FakeBinance, feed: MirrorFeed) -> None:
    fake.set_price("BTCUSDT", "97000.1", T0)
    book = PriceBook(feed.universe)
    async with running(feed, book):
        assert price(book, "BTCUSDT") == ("97000.10", T0)  # the snapshot, before run()
        await eventually(lambda: len(fake.open_conns()) == 1, what="stream connected")
        await fake.trade("BTCUSDT", "97001.0", T0 + 1)
        await eventually(lambda: price(book, "BTCUSDT") == ("97001.00", T0 + 1))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_rest_and_streams_through_mirror_proxy(clean_env: pytest.MonkeyPatch) -> None:
    async def scenario(fake: FakeBinance, proxy: ConnectProxy, client_ctx: ssl.SSLContext) -> None:
        await mirror_once(fake, tls_feed(fake, client_ctx, proxy=proxy.url))
        # exchangeInfo, the snapshot and the stream handshake: every request the upstream
        # saw came out of one of the proxy's tunnels (aiohttp may reuse a tunnel).
        assert set(proxy.tunnels) == {f"127.0.0.1:{fake.port}"}
        assert len(fake.peer_ports) >= 3 and fake.ws_attempts and fake.info_hits
        assert set(fake.peer_ports) <= proxy.ports

    with_tls_fake(scenario)


def test_https_proxy_from_the_environment_and_no_proxy(clean_env: pytest.MonkeyPatch) -> None:
    async def scenario(fake: FakeBinance, proxy: ConnectProxy, client_ctx: ssl.SSLContext) -> None:
        clean_env.setenv("HTTPS_PROXY", proxy.url)
        await mirror_once(fake, tls_feed(fake, client_ctx))
        assert proxy.tunnels and set(fake.peer_ports) <= proxy.ports
        seen = len(proxy.tunnels)
        for exempt, explicit in (("localhost,127.0.0.1", None), ("", "")):
            # NO_PROXY names the host, or an explicit empty proxy ignores the environment.
            clean_env.setenv("NO_PROXY", exempt)
            fake.peer_ports.clear()
            await mirror_once(fake, tls_feed(fake, client_ctx, proxy=explicit))
            assert len(proxy.tunnels) == seen and fake.peer_ports
            assert not set(fake.peer_ports) & proxy.ports

    with_tls_fake(scenario)


def test_proxy_choice_rules() -> None:
    env = {"HTTPS_PROXY": "http://p:3128", "http_proxy": "http://q:8080",
           "NO_PROXY": ".internal, exact.host:443"}  # fmt: skip
    assert proxy_for("wss://fstream.binance.com/market/stream", None, env) == "http://p:3128"
    assert proxy_for("https://fapi.binance.com/x", None, env) == "http://p:3128"
    assert proxy_for("ws://127.0.0.1:9/market", None, env) == "http://q:8080"
    assert proxy_for("https://a.internal/x", None, env) is None
    assert proxy_for("https://exact.host/x", None, env) is None
    assert proxy_for("https://fapi.binance.com/x", "http://r:1", env) == "http://r:1"
    assert proxy_for("https://fapi.binance.com/x", "", env) is None
    assert proxy_for("https://fapi.binance.com/x", None, {}) is None
    assert proxy_for("https://fapi.binance.com/x", None, {**env, "NO_PROXY": "*"}) is None
