"""py-spy profiles of a benchmark's server: start, stop, and the functions holding the most samples."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def profile_start(pid: int, out: Path, log: Any, *, gil_only: bool = False) -> tuple[subprocess.Popen, Path] | None:
    """Start sampling the process with py-spy (its busy threads, 100 Hz) into `out`; None without py-spy.

    gil_only: only the thread holding the GIL, i.e. the Python CPU of a process of many threads.
    """
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        log("py-spy not installed; no profile")
        return None
    process = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--duration", "120",
         "--rate", "250" if gil_only else "100", *(["--gil"] if gil_only else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return process, out


def profile_stop(profile: tuple[subprocess.Popen, Path]) -> dict[str, Any]:
    """Stop the sampling and return its summary."""
    process, out = profile
    process.send_signal(2)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return summarise_profile(out)


def summarise_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Return the functions holding the most samples (inclusive) from py-spy's collapsed stacks."""
    if not path.exists():
        return {"error": "no profile written"}
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in sorted(table.items(), key=lambda i: -i[1])[:top]]

    return {"samples": total, "file": str(path), "inclusive_percent": ranked(inclusive), "self_percent": ranked(own)}
