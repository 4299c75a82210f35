"""Instruction counts by valgrind's callgrind: the mirror-recording scenario and the
per-request figures of ``benchmarks/instructions.py``.

Counts do not move with the other work on the machine (same binary, inputs and
``PYTHONHASHSEED``: the same count), so these rows hold on a shared box where timings do not.
Without valgrind each says "not measured: valgrind missing".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO

from .config import HERE, ROOT, Result

VALGRIND_MISSING = "not measured: valgrind missing"
WORKER = HERE / "recording_worker.py"
INSTRUCTIONS = HERE / "instructions.py"
STEP_TIMEOUT_S = 300.0  # one phase under callgrind (a Python start-up there is ~50x slower)


def have_valgrind() -> bool:
    """Whether valgrind and callgrind_control are on PATH."""
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def totals(path: Path) -> int:
    """The instruction total of one callgrind dump."""
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line")


def control(pid: int, command: str) -> None:
    """``callgrind_control COMMAND PID`` (-z: zero the counters, -d: dump them)."""
    subprocess.run(["callgrind_control", command, str(pid)], check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def expect(stream: IO[str], prefix: str) -> str:
    """The worker's next line, which must start with ``prefix``."""
    line = stream.readline()
    if not line.startswith(prefix):
        raise RuntimeError(f"recording worker: expected {prefix!r}, got {line.strip()!r}")
    return line.strip()


def recording_phases(events: int, work: Path) -> dict[str, int]:
    """Instructions of each worker phase (``plain``, ``recorded``), ``events`` messages each."""
    out = work / "recording.cg"
    env = dict(os.environ, PYTHONHASHSEED="0")
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
            sys.executable, str(WORKER), "--events", str(events)]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    figures: dict[str, int] = {}
    try:
        for phase in ("plain", "recorded"):
            expect(proc.stdout, f"READY {phase}")
            control(proc.pid, "-z")
            proc.stdin.write("go\n")
            proc.stdin.flush()
            done = expect(proc.stdout, f"DONE {phase}")
            control(proc.pid, "-d")
            if int(done.split()[2]) != events:
                raise RuntimeError(f"recording worker applied {done.split()[2]} of {events}")
            dumps = sorted(work.glob(f"recording.cg.{proc.pid}.*"), key=lambda p: int(p.suffix[1:]))
            figures[phase] = totals(dumps[-1])
            proc.stdin.write("go\n")
            proc.stdin.flush()
        expect(proc.stdout, "ROWS ")  # the worker checks that every row was written
        if proc.wait(STEP_TIMEOUT_S) != 0:
            raise RuntimeError(f"recording worker exited {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STEP_TIMEOUT_S)
    return figures


def mirror_recording(work: Path, events: int) -> Result:
    """The mirror's instructions per applied aggTrade with and without a TradeRecorder."""
    if not have_valgrind():
        return {"status": VALGRIND_MISSING}
    try:
        figures = recording_phases(events, work)
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        return {"status": f"failed: {exc}"[:300], "failed": str(exc)[:300]}
    plain, recorded = figures["plain"] / events, figures["recorded"] / events
    return {
        "status": "measured: callgrind, MirrorState.on_event with and without a TradeRecorder",
        "events": events,
        "plain_instr_per_event": round(plain),
        "recorded_instr_per_event": round(recorded),
        "ratio": round(recorded / plain, 4),
    }


def instructions(work: Path, quick: bool) -> Result:
    """``benchmarks/instructions.py``: tickerd's and echo's instructions per request."""
    if not have_valgrind():
        return {"status": VALGRIND_MISSING}
    out = work / "instructions.json"
    size = ["--requests", "1000", "--conns", "2", "--servers", "tickerd,echo"] if quick else []
    argv = [sys.executable, str(INSTRUCTIONS), *size, "--json", str(out)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False,
                              cwd=ROOT)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"status": "failed: timed out after 900 s", "failed": "timed out after 900 s"}
    if done.returncode != 0 or not out.exists():
        why = done.stderr.strip()[-300:] or f"exit {done.returncode}"
        return {"status": f"failed: {why}", "failed": why}
    fig: dict[str, dict[str, float]] = json.loads(out.read_text())
    t, e = fig["tickerd"], fig["echo"]
    result: Result = {"status": "measured: callgrind (benchmarks/instructions.py)",
                      "argv": " ".join(["instructions.py", *size])}  # fmt: skip
    for phase in ("pipelined", "unpipelined"):
        result[f"tickerd_{phase}"] = round(t[phase])
        result[f"echo_{phase}"] = round(e[phase])
        result[f"over_echo_{phase}"] = round(t[phase] - e[phase])
        for kind in fig.keys() - {"tickerd", "echo"}:  # variants of tickerd, as ratios to it
            result[f"{kind}_{phase}"] = round(fig[kind][phase])
            result[f"{kind}_ratio_{phase}"] = round(fig[kind][phase] / t[phase], 4)
    return result
