"""Price sources. Each feed writes ticks into a :class:`~tickerd.book.PriceBook`.

``tickerd serve --feed a,b`` builds feeds by name from :data:`BUILDERS`; several feeds may
run at once as long as their symbols do not overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..book import PriceBook
from ..clock import Clock
from ..config import Settings
from ..errors import TickerdError
from ..symbols import SymbolUniverse

if TYPE_CHECKING:
    from .recording import TradeRecorder


class Feed(Protocol):
    """A source of ticks. ``run`` applies ticks to the book until cancelled.

    Optional members, looked up with ``getattr``: ``symbols`` (a frozenset of the names the
    feed writes, or None for "every TRADING symbol no other feed declares" — see
    :func:`assign_symbols`), ``async start(book)`` (awaited before the server opens its
    port; an exception aborts the start) and ``status()`` (a JSON-able dict for
    ``/healthz``).
    """

    name: str

    def prime(self, book: PriceBook) -> None:
        """Put the feed's first prices into the book before the server opens its port.

        With ``--store`` the book already holds the restored last prices: a feed with
        newer prices overwrites them, the synthetic feed keeps them.
        """
        ...

    async def run(self, book: PriceBook) -> None:
        """Keep the book current; return only when the source is exhausted."""
        ...


class FeedConfigError(TickerdError):
    """Feeds that cannot be built as configured, with the reason."""


@dataclass
class FeedPlan:
    """The feeds to run and the clock the server should follow (a replay brings its own)."""

    feeds: list[Feed] = field(default_factory=list)
    clock: Clock | None = None


Builder = Callable[[Settings, SymbolUniverse, Clock, FeedPlan], None]


def _synthetic(settings: Settings, universe: SymbolUniverse, clock: Clock, plan: FeedPlan) -> None:
    from .synthetic import SyntheticFeed, SyntheticMarket

    market = SyntheticMarket(universe, settings.seed)
    plan.feeds.append(SyntheticFeed(market, plan.clock or clock, settings.tick_rate))


def _symbol_list(raw: str | None, universe: SymbolUniverse, flag: str) -> frozenset[str] | None:
    """The symbols named by a comma-separated flag (None when the flag is unset)."""
    if raw is None or not raw.strip():
        return None
    names = frozenset(n.strip().upper() for n in raw.split(",") if n.strip())
    unknown = sorted(n for n in names if n not in universe)
    if unknown:
        raise FeedConfigError(f"{flag}: unknown symbol(s) {', '.join(unknown)}")
    return names


def _mirror(settings: Settings, universe: SymbolUniverse, clock: Clock, plan: FeedPlan) -> None:
    from .mirror import MirrorFeed

    rest, stream = settings.mirror_rest_url, settings.mirror_stream_url
    if not rest.startswith(("http://", "https://")):
        raise FeedConfigError(f"--mirror-rest-url must be an http(s) URL, not {rest!r}")
    if not stream.startswith(("ws://", "wss://")):
        raise FeedConfigError(f"--mirror-stream-url must be a ws(s) URL, not {stream!r}")
    symbols = _symbol_list(settings.mirror_symbols, universe, "--mirror-symbols")
    proxy = settings.mirror_proxy
    if proxy and not proxy.startswith(("http://", "https://")):
        raise FeedConfigError(f"--mirror-proxy must be an http(s) URL, not {proxy!r}")
    recorder = _recorder(settings, plan, clock)
    try:
        feed = MirrorFeed(
            universe,
            rest_url=rest,
            stream_url=stream,
            symbols=symbols,
            stale_after_s=settings.mirror_stale_after,
            rollover_after_s=settings.mirror_rollover_after,
            idle_timeout_s=settings.mirror_idle_timeout,
            universe_every_s=settings.mirror_universe_every,
            proxy=proxy,
            clock=plan.clock or clock,
            recorder=recorder,
        )
    except ValueError as exc:  # a stream route that cannot serve aggTrade, a bad interval
        raise FeedConfigError(f"--feed mirror: {exc}") from None
    plan.feeds.append(feed)


def _recorder(settings: Settings, plan: FeedPlan, clock: Clock) -> TradeRecorder | None:
    """The one recorder of ``--record`` (shared by the mirror and the push ingest)."""
    if not settings.record:
        return None
    for feed in plan.feeds:
        found = getattr(feed, "recorder", None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    from .recording import TradeRecorder

    try:
        return TradeRecorder(settings.record, plan.clock or clock)
    except OSError as exc:
        raise FeedConfigError(str(exc)) from None


def _push(settings: Settings, universe: SymbolUniverse, clock: Clock, plan: FeedPlan) -> None:
    from .push import PushFeed

    if not settings.push_token:
        raise FeedConfigError(
            "the push feed needs a token: set TICKERD_PUSH_TOKEN (or --push-token); "
            "clients send it as 'Authorization: Bearer <token>'"
        )
    symbols = _symbol_list(settings.push_symbols, universe, "--push-symbols")
    plan.feeds.append(
        PushFeed(
            universe,
            token=settings.push_token,
            host=settings.push_host,
            port=settings.push_port,
            symbols=symbols,
        )
    )
    recorder = _recorder(settings, plan, clock)
    if recorder is not None:
        from .book_recording import BookRecording

        plan.feeds.append(BookRecording(recorder, plan.feeds[-1]))


def _replay(settings: Settings, universe: SymbolUniverse, clock: Clock, plan: FeedPlan) -> None:
    from .replay import ReplayFeed, ReplayOptions

    options = ReplayOptions.parse(
        settings.replay_path, settings.replay_speed, settings.replay_progress_every
    )
    feed = ReplayFeed.from_options(options, universe)
    plan.feeds.append(feed)
    plan.clock = feed.clock  # the server follows the replay's trade time


BUILDERS: dict[str, Builder] = {
    "synthetic": _synthetic,
    "mirror": _mirror,
    "push": _push,
    "replay": _replay,
}


def assign_symbols(plan: FeedPlan, universe: SymbolUniverse) -> None:
    """Give every feed its symbols, or raise :class:`FeedConfigError`.

    The rule: each feed declares the symbols it writes (``feed.symbols``) or None, meaning
    "every TRADING symbol no other feed declares". Declared sets must not overlap, and at
    most one feed may take the rest; that feed's ``symbols`` is set to the rest here.
    """
    owner: dict[str, str] = {}
    takers: list[Feed] = []
    for feed in plan.feeds:
        declared: frozenset[str] | None = getattr(feed, "symbols", None)
        if declared is None:
            takers.append(feed)
            continue
        clash = sorted(s for s in declared if s in owner)
        if clash:
            shown = ", ".join(clash[:10]) + (" ..." if len(clash) > 10 else "")
            raise FeedConfigError(
                f"feeds {owner[clash[0]]} and {feed.name} both claim {shown}: "
                "each symbol may come from one feed only"
            )
        owner.update(dict.fromkeys(declared, feed.name))
    if len(takers) > 1:
        names = " and ".join(f.name for f in takers)
        raise FeedConfigError(
            f"feeds {names} would each take every symbol: name the symbols of all but one "
            "(--mirror-symbols, --push-symbols)"
        )
    if takers:
        rest = frozenset(s.symbol for s in universe.trading() if s.symbol not in owner)
        takers[0].symbols = rest  # type: ignore[attr-defined]


def build_feeds(settings: Settings, universe: SymbolUniverse, clock: Clock) -> FeedPlan:
    """Build the feeds named by ``settings.feed`` (comma-separated) in order."""
    names = [n.strip() for n in settings.feed.split(",") if n.strip()]
    if not names:
        raise FeedConfigError("no feed named (--feed)")
    if len(set(names)) != len(names):
        raise FeedConfigError(f"a feed is named twice in --feed {settings.feed!r}")
    plan = FeedPlan()
    # A replay brings the clock the others must follow: build it first, whatever the order.
    for name in sorted(names, key=lambda n: n != "replay"):
        builder = BUILDERS.get(name)
        if builder is None:
            raise FeedConfigError(f"unknown feed {name!r}; known: {', '.join(BUILDERS)}")
        builder(settings, universe, clock, plan)
    if settings.record and not {"mirror", "push"} & set(names):
        raise FeedConfigError("--record records the trades of --feed mirror or push")
    assign_symbols(plan, universe)
    return plan
