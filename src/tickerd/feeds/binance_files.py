"""Binance's historical trade files: names, discovery, checksums and opening.

The USDⓈ-M futures files of https://data.binance.vision, as the binance/binance-public-data
README describes them (sections "FUTURES" → "Trades" and "AggTrades", "CHECKSUM"):

* ``data/futures/um/{daily,monthly}/{trades,aggTrades}/SYM/SYM-trades-2024-01-01.zip`` (monthly:
  ``SYM-trades-2024-01.zip``), one CSV of the same base name inside, ``<zip>.CHECKSUM``
  (``sha256sum`` output) beside it;
* trades ``id,price,qty,quote_qty,time,is_buyer_maker``; aggTrades ``agg_trade_id,price,
  quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker`` (:data:`LAYOUTS`).

Rows are parsed by :mod:`.trade_rows` (each symbol on its own price grid) and put in time
order by :mod:`.trade_order`.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import TickerdError

TRADES = "trades"
AGG_TRADES = "aggTrades"

MAX_FILES = 100_000  # files one replay may name (folders are walked recursively)

_NAME_RE = re.compile(
    r"(?P<symbol>[A-Z0-9_]{1,32})-(?P<kind>trades|aggTrades)-"
    r"(?P<period>\d{4}-\d{2}(?:-\d{2})?)\.(?P<ext>csv|zip)"
)
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


class ReplayFileError(TickerdError):
    """A replay file that cannot be used: ``path``, ``line`` (1-based, if a row) and ``reason``."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")


@dataclass(frozen=True, slots=True)
class Layout:
    """The columns of one file kind and the role of each."""

    names: tuple[str, ...]
    price: int
    time: int
    maker: int
    ints: tuple[int, ...]
    decimals: tuple[int, ...]
    qty: int  # the traded quantity
    ids: tuple[int, ...]  # the aggregate id, then first and last trade id (or one id for all)


LAYOUTS: dict[str, Layout] = {
    TRADES: Layout(
        ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker"),
        price=1, time=4, maker=5, ints=(0,), decimals=(2, 3), qty=2, ids=(0,),
    ),
    AGG_TRADES: Layout(
        ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
         "transact_time", "is_buyer_maker"),
        price=1, time=5, maker=6, ints=(0, 3, 4), decimals=(2,), qty=2, ids=(0, 3, 4),
    ),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FileSpec:
    """What a file's name says: symbol, kind (trades or aggTrades) and period."""

    path: Path
    symbol: str
    kind: str
    period: str  # "2024-01-01" (a daily file) or "2024-01" (a monthly file)

    @property
    def layout(self) -> Layout:
        """The file's columns."""
        return LAYOUTS[self.kind]

    @property
    def first_day(self) -> str:
        """The first day the file covers (ISO date)."""
        return self.period if len(self.period) == 10 else self.period + "-01"

    @property
    def last_day(self) -> str:
        """The last day the file covers (ISO date; "-31" for any month compares right)."""
        return self.period if len(self.period) == 10 else self.period + "-31"

    def overlaps(self, other: FileSpec) -> bool:
        """Whether the two files cover a common day."""
        return self.first_day <= other.last_day and other.first_day <= self.last_day


def describe(path: str | Path) -> FileSpec:
    """Read symbol, kind and period from a Binance file name, or raise ReplayFileError."""
    p = Path(path)
    m = _NAME_RE.fullmatch(p.name)
    if m is None:
        raise ReplayFileError(
            p,
            "not a Binance trades file name: expected SYMBOL-trades-YYYY-MM-DD.csv, "
            "SYMBOL-aggTrades-YYYY-MM.zip and the like",
        )
    return FileSpec(p, m["symbol"], m["kind"], m["period"])


def discover(paths: Iterable[str | Path]) -> list[FileSpec]:
    """The files named by ``paths``: files as given, folders walked recursively.

    In folders only names of Binance's pattern count (``.CHECKSUM`` files and notes are
    skipped). Where both ``X.zip`` and ``X.csv`` exist, the zip is used (its checksum can
    be verified). The result is in path order.
    """
    chosen: dict[tuple[Path, str], FileSpec] = {}
    named = 0
    for raw in paths:
        named += 1
        p = Path(raw)
        if p.is_dir():
            found = [q for q in sorted(p.rglob("*")) if _NAME_RE.fullmatch(q.name) and q.is_file()]
            if not found:
                raise ReplayFileError(p, "the folder holds no trades or aggTrades files")
        elif p.is_file():
            found = [p]
        else:
            raise ReplayFileError(p, "no such file or folder")
        for q in found:
            spec = describe(q)
            key = (q.resolve().parent, q.stem)
            if key not in chosen or q.suffix == ".zip":
                chosen[key] = spec
            if len(chosen) > MAX_FILES:
                raise ReplayFileError(p, f"more than {MAX_FILES} files to replay")
    if not named:
        raise ReplayFileError("(none)", "no replay files named")
    return sorted(chosen.values(), key=lambda s: str(s.path))


def verify_checksum(path: Path) -> bool:
    """Check ``path`` against ``<path>.CHECKSUM`` if that file exists.

    Returns whether a checksum was verified; raises :class:`ReplayFileError` on a mismatch
    or a checksum file that is not ``sha256sum`` output.
    """
    side = path.with_name(path.name + ".CHECKSUM")
    if not side.is_file():
        return False
    try:
        parts = side.read_bytes()[:4096].decode("ascii", "replace").split()
    except OSError as exc:
        raise ReplayFileError(side, f"cannot read: {exc}") from exc
    if not parts or not _SHA256_RE.fullmatch(parts[0]):
        raise ReplayFileError(side, "not a sha256sum line ('<64 hex digits>  <file name>')")
    if len(parts) > 1 and parts[1].lstrip("*") != path.name:
        raise ReplayFileError(side, f"names {parts[1]!r}, not {path.name!r}")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise ReplayFileError(path, f"cannot read: {exc}") from exc
    if digest.hexdigest() != parts[0].lower():
        raise ReplayFileError(
            path,
            f"sha256 {digest.hexdigest()} does not match {parts[0].lower()} in {side.name} "
            "(a damaged or replaced download?)",
        )
    return True


@contextmanager
def open_csv(spec: FileSpec) -> Iterator[IO[bytes]]:
    """The CSV of ``spec`` opened for reading (a zip's member after its checksum is checked)."""
    path = spec.path
    if path.suffix != ".zip":
        try:
            plain: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ReplayFileError(path, f"cannot open: {exc}") from exc
        with plain:
            yield plain
        return
    verify_checksum(path)
    member = path.stem + ".csv"
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ReplayFileError(path, f"not a readable zip file: {exc}") from exc
    with zf:
        names = zf.namelist()
        if member not in names:
            held = ", ".join(names[:5]) or "nothing"
            raise ReplayFileError(path, f"the zip holds no {member} (it holds {held})")
        with zf.open(member) as f:
            yield f


def csv_size(spec: FileSpec) -> int:
    """The bytes of CSV the file holds (a zip's member uncompressed); 0 if unknown."""
    try:
        if spec.path.suffix != ".zip":
            return spec.path.stat().st_size
        with zipfile.ZipFile(spec.path) as zf:
            return zf.getinfo(spec.path.stem + ".csv").file_size
    except (OSError, KeyError, zipfile.BadZipFile):
        return 0  # opening the file reports what is wrong with it
