"""The day files of a recording: zipping a finished day with its ``.CHECKSUM``, repairing a
torn last line, and reading back the last aggregate id written (see :mod:`.recording`)."""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path

log = logging.getLogger("tickerd.feeds.recording")

HEADER = b"agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
_TAIL_BYTES = 64 * 1024


def zip_day(csv_path: Path) -> Path:
    """``X.csv`` → ``X.zip`` (holding ``X.csv``) and ``X.zip.CHECKSUM``; removes the CSV."""
    zip_path = csv_path.with_suffix(".zip")
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(csv_path, csv_path.name)
    _fsync(tmp)
    os.replace(tmp, zip_path)
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    side = zip_path.with_name(zip_path.name + ".CHECKSUM")
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(f"{digest}  {zip_path.name}\n", encoding="ascii")
    _fsync(side_tmp)
    os.replace(side_tmp, side)
    csv_path.unlink()
    return zip_path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def repair(path: Path) -> None:
    """Cut a torn last line (one without its newline) off ``path``."""
    size = path.stat().st_size
    with open(path, "rb+") as f:
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read()
        if not tail or tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        keep = size - len(tail) + cut + 1 if cut >= 0 else 0
        f.truncate(keep)
        log.warning("recording: cut a torn last line off %s (%d bytes)", path, size - keep)
    if keep == 0:
        path.write_bytes(HEADER)


def last_id_in(folder: Path, symbol: str) -> int:
    """The aggregate id of the last complete row of the symbol's newest file, or -1."""
    csvs = sorted(folder.glob(f"{symbol}-aggTrades-*.csv"))
    zips = sorted(folder.glob(f"{symbol}-aggTrades-*.zip"))
    newest_csv = csvs[-1] if csvs else None
    newest_zip = zips[-1] if zips else None
    if newest_csv is not None and (newest_zip is None or newest_csv.stem >= newest_zip.stem):
        repair(newest_csv)
        data = newest_csv.read_bytes()[-_TAIL_BYTES:]
    elif newest_zip is not None:
        with zipfile.ZipFile(newest_zip) as zf, zf.open(newest_zip.stem + ".csv") as member:
            data = member.read()[-_TAIL_BYTES:]
    else:
        return -1
    for line in reversed(data.split(b"\n")):
        head = line.split(b",", 1)[0]
        if head.isdigit():
            return int(head)
    return -1
