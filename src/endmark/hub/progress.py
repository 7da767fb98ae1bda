"""A download's progress for people: a bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import time
from typing import TextIO

from endmark.hub.download import OnProgress, Progress


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class TerminalBar:
    """`file [#####-----] 12.3/45.6 MB  3.2 MB/s  ETA 0:05`, redrawn at most ten times a second."""

    def __init__(self, out: TextIO, width: int = 24) -> None:
        self.out = out
        self.width = width
        self._file = ""
        self._started = 0.0
        self._first = 0
        self._drawn = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if p.file != self._file:
            self._file, self._started, self._first, self._drawn = p.file, now, p.done, 0.0
        if p.status == "cached":
            self.out.write(f"{p.file}: in the cache ({human_bytes(p.total)})\n")
        elif p.status == "verifying":
            self._draw(p, now)
            self.out.write(f"\n{p.file}: verifying sha256 ...")
        elif p.status == "done":
            self.out.write(" ok\n")
        elif now - self._drawn >= 0.1 or p.done >= p.total:
            self._draw(p, now)
            self._drawn = now
        self.out.flush()

    def _draw(self, p: Progress, now: float) -> None:
        frac = p.done / p.total if p.total else 0.0
        filled = int(frac * self.width)
        speed = (p.done - self._first) / max(now - self._started, 1e-3)
        eta = _clock((p.total - p.done) / speed) if speed > 0 and p.total else "?"
        self.out.write(
            f"\r{p.file} [{'#' * filled}{'-' * (self.width - filled)}] "
            f"{human_bytes(p.done)}/{human_bytes(p.total)}  {human_bytes(speed)}/s  ETA {eta} "
        )


class LogLines:
    """One line per tenth of each file, and one when it is verified: for logs and pipes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._tenth: dict[str, int] = {}

    def __call__(self, p: Progress) -> None:
        if p.status == "downloading":
            tenth = int(10 * p.done / p.total) if p.total else 0
            if self._tenth.get(p.file) == tenth:
                return
            self._tenth[p.file] = tenth
            line = f"{p.file}: {human_bytes(p.done)} of {human_bytes(p.total)} ({10 * tenth}%)"
        elif p.status == "cached":
            line = f"{p.file}: in the cache"
        elif p.status == "verifying":
            line = f"{p.file}: verifying sha256"
        else:
            line = f"{p.file}: done ({human_bytes(p.total)}, sha256 {p.sha256[:12] or 'n/a'})"
        self.out.write(line + "\n")
        self.out.flush()


def progress_for(out: TextIO) -> OnProgress:
    return TerminalBar(out) if out.isatty() else LogLines(out)
