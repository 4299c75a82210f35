"""``tickerd watch`` on a real terminal: a real process on a pseudo-terminal, screens compared.

Each test starts ``python -m tickerd watch`` with a pseudo-terminal of a given size as its
stdin, stdout and stderr, against a real in-process server (``tickerd_server``, with its
manual clock), reads everything the process writes and renders it with ``pyte``, a
terminal emulator. pyte has no alternate screen, so :class:`Terminal` adds one the way
xterm does (mode 1049: save the main screen, draw on a blank one, put the main screen back).
A screen capture is taken just before each redraw starts (rich starts each one by homing
the cursor) and just before the alternate screen is left, so each capture is a whole frame.
"""

from __future__ import annotations

import copy
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from typing import Any

import pyte
import pytest

from tickerd import SyncClient
from tickerd.testing import TickerdServer
from tickerd.timestamps import iso_time

RUN_TIMEOUT_S = 40.0
ALT_SCREEN = 1049
PROMPT = "$ tickerd watch"
HOME = b"\x1b[H"
LEAVE_ALT = b"\x1b[?1049l"
TITLE_RE = re.compile(r"tickerd watch  (\S+Z)  refresh ([0-9]+)  (.*)")


class Terminal(pyte.HistoryScreen):
    """pyte's screen with scrollback, plus xterm's alternate screen (private mode 1049)."""

    def __init__(self, columns: int, lines: int) -> None:
        super().__init__(columns, lines, history=10_000)
        self.saved: tuple[Any, Any] | None = None

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private") and ALT_SCREEN in modes:
            self.saved = (copy.deepcopy(self.buffer), copy.copy(self.cursor))
            self.erase_in_display(2)
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private") and ALT_SCREEN in modes and self.saved is not None:
            self.buffer, self.cursor = self.saved
            self.saved = None
            self.dirty.update(range(self.lines))
        super().reset_mode(*modes, **kwargs)

    @property
    def in_alt_screen(self) -> bool:
        return (ALT_SCREEN << 5) in self.mode


@dataclass
class Run:
    """What a ``tickerd watch`` process did on its terminal."""

    returncode: int
    raw: bytes
    term: Terminal
    master: int
    process: subprocess.Popen[bytes]
    frames: list[list[str]] = field(default_factory=list)  # whole frames, in order
    scrollback: list[int] = field(default_factory=list)  # history length at each frame
    stop_at: int | None = None  # refreshes after which to send the stop signal

    def by_refresh(self) -> dict[int, list[str]]:
        """The last capture of each refresh number."""
        out: dict[int, list[str]] = {}
        for frame in self.frames:
            m = TITLE_RE.match(frame[0])
            if m:
                out[int(m[2])] = frame
        return out


def child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TICKERD_") and k not in ("COLUMNS", "LINES", "NO_COLOR")
    }
    env.update(TERM="xterm-256color", PYTHONUNBUFFERED="1")
    return env


def watch_in_pty(
    args: list[str],
    columns: int,
    lines: int,
    *,
    stop_after: int | None = None,
    stop_with: signal.Signals = signal.SIGTERM,
    between: Any = None,
) -> Run:
    """Run ``tickerd watch ARGS`` on a ``columns`` × ``lines`` pseudo-terminal.

    With ``stop_after`` N, ``stop_with`` is sent once N whole frames have been drawn;
    ``between(run)`` is called once, after the first whole frame (it may move
    ``run.stop_at``).
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    term = Terminal(columns, lines)
    stream = pyte.ByteStream(term)
    stream.feed(f"{PROMPT}\r\n".encode())
    process = subprocess.Popen(
        [sys.executable, "-m", "tickerd", "watch", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=child_env(),
        close_fds=True,
        start_new_session=True,
    )
    os.close(slave)
    run = Run(-1, b"", term, master, process, stop_at=stop_after)
    pending = b""
    signalled = called = False
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            run.raw += chunk
            pending += chunk
            pending = _feed_frames(stream, run, pending)
            if between is not None and not called and run.by_refresh():
                called = True
                between(run)
            if run.stop_at is not None and not signalled and len(run.by_refresh()) >= run.stop_at:
                signalled = True
                process.send_signal(stop_with)
        stream.feed(pending)
        run.returncode = process.wait(10)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return run


def _feed_frames(stream: pyte.ByteStream, run: Run, data: bytes) -> bytes:
    """Feed ``data`` up to its last frame boundary, capturing the screen at each boundary;
    return what is left (possibly a boundary's first bytes)."""
    while True:
        cuts = [i for i in (data.find(HOME), data.find(LEAVE_ALT)) if i >= 0]
        if not cuts:
            keep = max(len(HOME), len(LEAVE_ALT)) - 1  # a boundary may be split
            stream.feed(data[:-keep] if len(data) > keep else b"")
            return data[-keep:] if len(data) > keep else data
        cut = min(cuts)
        stream.feed(data[:cut])
        term = stream.listener
        if term.in_alt_screen:
            run.frames.append(list(term.display))
            run.scrollback.append(len(term.history.top))
        step = len(HOME) if data.startswith(HOME, cut) else len(LEAVE_ALT)
        stream.feed(data[cut : cut + step])
        data = data[cut + step :]


def every_symbol(srv: TickerdServer) -> list[str]:
    with SyncClient(srv.ws_url) as client:
        return sorted(t.symbol for t in client.ticker_price())


def assert_restored(run: Run) -> None:
    """The main screen is back as it was, the cursor shown, the alternate screen left."""
    assert not run.term.in_alt_screen
    assert not run.term.cursor.hidden
    assert run.term.display[0] == PROMPT.ljust(run.term.columns)
    assert run.raw.rstrip().endswith(b"\x1b[?25h" + LEAVE_ALT)


def assert_frame(
    frame: list[str], *, columns: int, url: str, now_ms: int, symbols: list[str]
) -> list[list[str]]:
    """The common shape of a whole frame; returns the split table rows it shows."""
    assert all(len(line) == columns for line in frame)
    m = TITLE_RE.match(frame[0])
    assert m, frame[0]
    assert m[1] == iso_time(now_ms)  # the served clock (manual: it stands still), not ours
    shown_url = m[3].rstrip()
    if shown_url.endswith("…"):  # cut to the width, never wrapped onto the next line
        assert url.startswith(shown_url[:-1]) and len(frame[0].rstrip()) == columns
    else:
        assert shown_url == url
    assert frame[1].split() == ["SYMBOL", "PRICE", "CHANGE", "CHANGE%", "AGE", "s"]
    body = [line.rstrip() for line in frame[2:]]
    more = [i for i, line in enumerate(body) if line.startswith("… ")]
    if len(symbols) > len(frame) - 2:
        assert more == [len(frame) - 3], body  # the last line of the screen
        hidden = int(body[-1].split()[1])
        assert body[-1] == f"… {hidden} more"
        rows = [line.split() for line in body[:-1]]
        assert len(rows) + hidden == len(symbols)
    else:
        assert more == []
        rows = [line.split() for line in body if line]
        assert body[len(rows) :] == [""] * (len(body) - len(rows))  # nothing stale below
    assert [r[0] for r in rows] == symbols[: len(rows)]
    assert all(len(r) == 5 for r in rows), rows
    return rows


@pytest.mark.parametrize(
    ("columns", "lines", "stop"), [(80, 24, signal.SIGTERM), (200, 50, signal.SIGINT)]
)
def test_every_symbol_fits_the_terminal_and_redraws_in_place(
    tickerd_server: TickerdServer, columns: int, lines: int, stop: signal.Signals
) -> None:
    srv = tickerd_server
    srv.set_price("BTCUSDT", "97000.10", time_ms=srv.now_ms - 2_500)
    symbols = every_symbol(srv)
    assert len(symbols) > 50  # taller than both terminals

    def move_btc(run: Run) -> None:
        srv.set_price("BTCUSDT", "48500.10", time_ms=srv.now_ms - 61_000)
        run.stop_at = len(run.by_refresh()) + 3  # refreshes surely fetched after the move

    args = ["--url", srv.ws_url, "--rest-url", srv.rest_url, "--interval", "0.2"]
    run = watch_in_pty(args, columns, lines, stop_after=4, stop_with=stop, between=move_btc)
    assert run.returncode == 0, run.raw[-500:]
    frames = run.by_refresh()
    assert len(frames) >= 4 and list(frames) == list(range(1, len(frames) + 1))
    before = ["BTCUSDT", "97000.10", "+0.00", "+0.00%", "2.5"]
    after = ["BTCUSDT", "48500.10", "-48500.00", "-50.00%", "61.0"]
    seen = []
    for frame in frames.values():
        rows = assert_frame(
            frame, columns=columns, url=srv.ws_url, now_ms=srv.now_ms, symbols=symbols
        )
        assert len(rows) == lines - 3  # title, column header, "… N more"
        seen.append(next(r for r in rows if r[0] == "BTCUSDT"))
        aave = next(r for r in rows if r[0] == "AAVEUSDT")
        assert aave == ["AAVEUSDT", "182.000", "+0.000", "+0.00%", "0.0"]
    # the price moved after the first frame: old rows, then new ones, each drawn whole
    moved = seen.index(after)
    assert seen == [before] * moved + [after] * (len(seen) - moved) and moved >= 1
    assert len(seen) - moved >= 2
    # redrawn in place: nothing scrolled into the scrollback, however many refreshes
    assert run.scrollback and set(run.scrollback) == {0}
    assert_restored(run)


def test_named_symbols_on_a_small_terminal(tickerd_server: TickerdServer) -> None:
    srv = tickerd_server
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "1000PEPEUSDT"]
    args = [*symbols, "--url", srv.ws_url, "--rest-url", srv.rest_url]
    run = watch_in_pty([*args, "--interval", "0.1", "--count", "3"], 80, 24)
    assert run.returncode == 0, run.raw[-500:]
    frames = run.by_refresh()
    assert sorted(frames) == [1, 2, 3]  # --count 3: three refreshes, then a clean exit
    for frame in frames.values():
        rows = assert_frame(frame, columns=80, url=srv.ws_url, now_ms=srv.now_ms, symbols=symbols)
        assert [r[1] for r in rows] == ["97000.00", "3150.00", "141.2000", "0.0045000"]
    assert run.scrollback and set(run.scrollback) == {0}
    assert_restored(run)


def test_a_terminal_too_small_for_the_table_shows_what_fits(
    tickerd_server: TickerdServer,
) -> None:
    srv = tickerd_server
    symbols = every_symbol(srv)
    args = ["--url", srv.ws_url, "--rest-url", srv.rest_url, "--interval", "0.1", "--count", "2"]
    run = watch_in_pty(args, 56, 5)
    assert run.returncode == 0, run.raw[-500:]
    frame = run.by_refresh()[2]
    rows = assert_frame(frame, columns=56, url=srv.ws_url, now_ms=srv.now_ms, symbols=symbols)
    assert len(rows) == 2 and frame[4].rstrip() == f"… {len(symbols) - 2} more"
    assert frame[0].rstrip().endswith("  ws:…")
    assert set(run.scrollback) == {0}
    assert_restored(run)


def test_an_error_restores_the_terminal_and_says_one_line(
    tickerd_server: TickerdServer,
) -> None:
    srv = tickerd_server
    args = ["BTCUSDT", "NOPEUSDT", "--url", srv.ws_url, "--rest-url", srv.rest_url]
    run = watch_in_pty(args, 80, 24)
    assert run.returncode == 1
    assert not run.term.in_alt_screen and not run.term.cursor.hidden
    shown = [line.rstrip() for line in run.term.display if line.strip()]
    assert shown == [PROMPT, "tickerd: NOPEUSDT: Invalid symbol. (-1121)"]
    assert b"Traceback" not in run.raw


def test_a_resize_redraws_at_the_new_size(tickerd_server: TickerdServer) -> None:
    srv = tickerd_server
    symbols = every_symbol(srv)

    def resize(run: Run) -> None:
        fcntl.ioctl(run.master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        run.term.resize(30, 120)
        run.process.send_signal(signal.SIGWINCH)
        run.stop_at = len(run.by_refresh()) + 3

    args = ["--url", srv.ws_url, "--rest-url", srv.rest_url, "--interval", "0.2"]
    run = watch_in_pty(args, 80, 24, stop_after=5, between=resize)
    assert run.returncode == 0, run.raw[-500:]
    frames = run.by_refresh()
    first, last = frames[1], frames[max(frames)]
    assert (
        len(assert_frame(first, columns=80, url=srv.ws_url, now_ms=srv.now_ms, symbols=symbols))
        == 21
    )
    rows = assert_frame(last, columns=120, url=srv.ws_url, now_ms=srv.now_ms, symbols=symbols)
    assert len(last) == 30 and len(rows) == 27
    assert_restored(run)
