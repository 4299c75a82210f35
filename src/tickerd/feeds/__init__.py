"""Price sources. Each feed writes ticks into a :class:`~tickerd.book.PriceBook`.

``tickerd serve --feed a,b`` builds feeds by name from :data:`BUILDERS`; several feeds may
run at once as long as their symbols do not overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..book import PriceBook
from ..clock import Clock
from ..config import Settings
from ..models import Tick
from ..symbols import SymbolUniverse
from .errors import FeedConfigError
from .state import FeedState

__all__ = [
    "BUILDERS",
    "Feed",
    "FeedConfigError",
    "FeedPlan",
    "FeedRegistry",
    "FeedState",
    "Reseedable",
    "Steppable",
    "assign_symbols",
    "build_feeds",
]

if TYPE_CHECKING:
    from .recording import TradeRecorder


class Feed(Protocol):
    """A source of ticks (synthetic, replay, mirror, push), as the service runs it.

    The lifecycle: :meth:`prime` (synchronous, before any port opens), :meth:`start`
    (awaited before the public port opens; an exception aborts the service start), then
    :meth:`run` as a task until the service stops, then :meth:`stop`. :meth:`status` is
    read by ``/healthz``.
    """

    name: str

    @property
    def symbols(self) -> frozenset[str] | None:
        """The symbols this feed writes, or None for "every TRADING symbol no other feed
        declares" until :func:`assign_symbols` has called :meth:`claim`."""
        ...

    def claim(self, symbols: frozenset[str]) -> None:
        """Take ``symbols`` (the TRADING symbols no other feed declares) as its own."""
        ...

    def prime(self, book: PriceBook) -> None:
        """Put the feed's first prices into the book before the server opens its port.

        With ``--store`` the book already holds the restored last prices: a feed with
        newer prices overwrites them, the synthetic feed keeps them.
        """
        ...

    async def start(self, book: PriceBook) -> None:
        """Prepare before the public port opens (bind a port, fetch a first snapshot)."""
        ...

    async def run(self, book: PriceBook) -> None:
        """Keep the book current; return only when the source is exhausted."""
        ...

    async def stop(self) -> None:
        """Release what :meth:`start` took (a port, a session); safe to call twice, and
        after a start that failed or never happened."""
        ...

    def status(self) -> dict[str, Any]:
        """A JSON-able dict for ``/healthz``: ``"state"`` (a :class:`FeedState` value) and
        the feed's own details."""
        ...


@runtime_checkable
class Reseedable(Protocol):
    """A feed whose prices come from a seed and can restart from another one."""

    name: str

    def reseed(self, seed: int, book: PriceBook) -> int:
        """Restart from ``seed``: put the seed's starting prices of the feed's own symbols
        into ``book`` (replacing what they had); returns how many symbols it walks."""
        ...


@runtime_checkable
class Steppable(Protocol):
    """A feed that can be moved forward one step at a time (a step-mode replay)."""

    name: str

    @property
    def stepped(self) -> bool:
        """Whether it moves only when stepped (False: it runs by itself)."""
        ...

    @property
    def finished(self) -> bool:
        """Whether there is nothing left to step through."""
        ...

    def step(self, n: int = 1) -> list[Tick]:
        """Apply the next ``n`` ticks now and return them."""
        ...


class FeedRegistry:
    """The feeds a service runs, and the optional capabilities some of them have."""

    def __init__(self, feeds: Iterable[Feed] = ()) -> None:
        self.feeds: list[Feed] = list(feeds)

    def __iter__(self) -> Iterator[Feed]:
        return iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)

    def reseedable(self) -> list[Reseedable]:
        """The feeds that can restart from a seed."""
        return [f for f in self.feeds if isinstance(f, Reseedable)]

    def steppable(self) -> list[Steppable]:
        """The feeds that can be stepped."""
        return [f for f in self.feeds if isinstance(f, Steppable)]

    def claimed(self) -> frozenset[str]:
        """Every symbol some feed declares or was given."""
        out: set[str] = set()
        for feed in self.feeds:
            out.update(feed.symbols or ())
        return frozenset(out)


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
    # "none": no proxy whatever HTTPS_PROXY says (the mirror's ""); unset: the environment's.
    proxy = "" if settings.mirror_proxy == "none" else settings.mirror_proxy
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
            clock=plan.clock or clock,
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
    # The extra columns (quantity, ids, maker) are read only for the market streams.
    options = replace(options, trades=settings.streams == "on")
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
    most one feed may take the rest, which it is given here (:meth:`Feed.claim`).
    """
    owner: dict[str, str] = {}
    takers: list[Feed] = []
    for feed in plan.feeds:
        declared = feed.symbols
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
        takers[0].claim(rest)


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
