"""Regenerate the replay sample files of this folder (see SOURCES.md for the format's source).

    python tests/data/replay/make_samples.py

Deterministic: a seeded random walk per file, written in the exact layout of
data.binance.vision's USDⓈ-M files. The zip gets a fixed timestamp so its bytes, and the
sha256 in its ``.CHECKSUM``, only change when the rows do.
"""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).parent
TRADES_HEADER = "id,price,qty,quote_qty,time,is_buyer_maker"


def shortest(value: Decimal) -> str:
    """Binance's number style: shortest decimal, at least one fractional digit (29223.0)."""
    text = format(value.normalize(), "f")
    return text if "." in text else text + ".0"


def walk(rng: random.Random, start_ticks: int, n: int) -> list[int]:
    ticks, out = start_ticks, []
    for _ in range(n):
        ticks += rng.choice((-2, -1, 0, 0, 0, 1, 2))
        out.append(ticks)
    return out


def trades_rows(
    rng: random.Random, *, first_id: int, start_ms: int, tick: Decimal, start_ticks: int,
    n: int, gaps: tuple[int, ...], qty_choices: tuple[str, ...],
) -> list[tuple[int, str, str, str, int, str]]:  # fmt: skip
    rows = []
    trade_id, t = first_id, start_ms
    for ticks in walk(rng, start_ticks, n):
        price = tick * ticks
        qty = Decimal(rng.choice(qty_choices))
        quote = (price * qty).quantize(Decimal("0.0001"))
        maker = "true" if rng.random() < 0.5 else "false"
        rows.append((trade_id, shortest(price), shortest(qty), shortest(quote), t, maker))
        trade_id += rng.choice((1, 1, 1, 2))  # ids have gaps
        t += rng.choice(gaps)
    return rows


def csv_bytes(header: str | None, rows: list[tuple[object, ...]]) -> bytes:
    lines = ([header] if header else []) + [",".join(map(str, r)) for r in rows]
    return ("\n".join(lines) + "\n").encode("ascii")


def write_csv(path: Path, header: str | None, rows: list[tuple[object, ...]]) -> None:
    path.write_bytes(csv_bytes(header, rows))


def main() -> None:
    # 1. BTCUSDT daily trades, 2024-01-01: header row (files from 2022-08-11 on have one).
    rng = random.Random(20240101)
    btc_day = trades_rows(
        rng, first_id=4_385_000_000, start_ms=1_704_067_200_012, tick=Decimal("0.1"),
        start_ticks=422_835, n=300, gaps=(0, 0, 3, 17, 41, 96, 180),
        qty_choices=("0.001", "0.002", "0.005", "0.010", "0.125", "1.000", "0"),
    )  # fmt: skip
    write_csv(HERE / "BTCUSDT-trades-2024-01-01.csv", TRADES_HEADER, list(btc_day))

    # 2. ETHUSDT daily aggTrades, 2022-08-10: no header (files up to 2022-08-10 have none).
    rng = random.Random(20220810)
    agg, agg_id, first_trade, t = [], 1_112_000_000, 2_589_000_000, 1_660_089_600_105
    for ticks in walk(rng, 170_241, 250):
        count = rng.choice((1, 1, 1, 2, 3, 7))
        qty = Decimal(rng.choice(("0.001", "0.010", "0.150", "1.500", "12.000")))
        maker = "true" if rng.random() < 0.5 else "false"
        price = shortest(Decimal("0.01") * ticks)
        last = first_trade + count - 1
        agg.append((agg_id, price, shortest(qty), first_trade, last, t, maker))
        agg_id, first_trade = agg_id + 1, last + 1
        t += rng.choice((0, 1, 5, 30, 250, 900))
    write_csv(HERE / "ETHUSDT-aggTrades-2022-08-10.csv", None, list(agg))

    # 3. BTCUSDT monthly trades, 2023-12, zipped with its .CHECKSUM: a thin sample of the
    #    month; two pairs of neighbouring rows swapped (monthly files are not always sorted).
    rng = random.Random(202312)
    month = trades_rows(
        rng, first_id=4_300_000_000, start_ms=1_701_388_800_321, tick=Decimal("0.1"),
        start_ticks=378_001, n=200, gaps=(3_600_000, 11_000_000, 14_000_000, 25_000),
        qty_choices=("0.003", "0.050", "0.400", "2.000"),
    )  # fmt: skip
    for start in (40, 120):
        i = next(j for j in range(start, len(month) - 1) if month[j][1] != month[j + 1][1])
        a, b = month[i], month[i + 1]
        month[i], month[i + 1] = (a[0], a[1], a[2], a[3], b[4] + 5, a[5]), b
    data = csv_bytes(TRADES_HEADER, list(month))
    zip_path = HERE / "BTCUSDT-trades-2023-12.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("BTCUSDT-trades-2023-12.csv", date_time=(2024, 1, 1, 4, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, data)
    zip_path.write_bytes(buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    (HERE / (zip_path.name + ".CHECKSUM")).write_text(f"{digest}  {zip_path.name}\n")

    # 4. ETHUSDT daily trades, 2024-01-01, times in µs (spot's unit since 2025-01-01; made
    #    up for futures, to test unit detection); its times interleave with file 1's.
    rng = random.Random(20240102)
    eth_day = trades_rows(
        rng, first_id=3_580_000_000, start_ms=1_704_067_200_020, tick=Decimal("0.01"),
        start_ticks=228_245, n=200, gaps=(0, 2, 11, 57, 150, 260),
        qty_choices=("0.005", "0.020", "0.500", "3.100"),
    )  # fmt: skip
    eth_us, prev_us = [], 0
    for r in eth_day:  # µs within the ms, strictly increasing like the trades themselves
        prev_us = max(prev_us + 1, r[4] * 1000 + rng.randrange(1000))
        eth_us.append((r[0], r[1], r[2], r[3], prev_us, r[5]))
    write_csv(HERE / "ETHUSDT-trades-2024-01-01.csv", TRADES_HEADER, list(eth_us))


if __name__ == "__main__":
    main()
