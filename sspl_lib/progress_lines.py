"""Progress as printed lines, one per event: a long loop's count, rate and ETA at most every `every` seconds
and when it ends. Lines read the same in a terminal, a log file, a notebook and papermill's output (no bars)."""

from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """'42 s', '3.5 min', '1.2 h' (sanitized as a time by notebooks/sanitize.cfg)."""
    if seconds != seconds or seconds == float("inf"):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def count(n: int, word: str) -> str:
    """'1 run', '3 runs'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


class ProgressLines:
    """`update(n)` as the loop goes; a line `[tag] what: n/total (p%), rate, ETA` at most every `every` s;
    `done()` prints the total time once."""

    def __init__(self, tag: str, what: str, total: int, *, unit: str = "samples", every: float = 10.0,
                 enabled: bool = True, initial: int = 0):
        self.tag, self.what, self.total, self.unit = tag, what, int(total), unit
        self.every, self.enabled = every, enabled
        self.n = self.initial = int(initial)  # `initial`: done before (a resume); not counted in the rate
        self.t0 = time.monotonic()
        self._last, self._closed, self._note = self.t0, False, ""

    @property
    def rate(self) -> float:
        return (self.n - self.initial) / max(time.monotonic() - self.t0, 1e-9)

    def eta(self) -> float:
        return (self.total - self.n) / self.rate if self.n > self.initial else float("nan")

    def _rate_text(self) -> str:
        r = self.rate
        return f"{r:.1f} {self.unit}/s" if r >= 1 or r == 0 else f"{duration(1 / r)} each"

    def update(self, n: int = 1, note: str = "") -> None:
        self.n += int(n)
        self._note = note  # the last one is shown by done()
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every and self.n < self.total:
            self._last = now
            pct = 100 * self.n / max(self.total, 1)
            print(f"[{self.tag}] {self.what}: {self.n}/{self.total} {self.unit} ({pct:.0f}%), {self._rate_text()}, "
                  f"ETA {duration(self.eta())}" + (f"; {note}" if note else ""), flush=True)

    def done(self, note: str = "") -> None:
        note = note or self._note
        if self.enabled and not self._closed:
            dt = time.monotonic() - self.t0
            print(f"[{self.tag}] {self.what}: {count(self.n, self.unit.removesuffix('s'))} in {duration(dt)} "
                  f"({self._rate_text()})"
                  + (f"; {note}" if note else ""), flush=True)
        self._closed = True
