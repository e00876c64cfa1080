"""Byte counts for a pull, and the progress report an operator watches.

Weight pulls take minutes to hours; rate and ETA let an operator tell slow from
stuck. The counters are also what the result reports as downloaded and reused,
so they are kept whether or not anything is printed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO


def human(n: float) -> str:
    """A byte count for people: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def clock_text(seconds: float) -> str:
    """A duration as ``H:MM:SS``."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Byte counters for a pull, and when given a stream, a progress report.

    Weight pulls take minutes to hours; rate and ETA let an operator tell slow
    from stuck. On a terminal it is one line rewritten in place; in logs, a
    plain line every few seconds so they don't fill with carriage returns.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool = False,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream, self._live, self._clock = stream, live, clock
        self._interval = interval if interval is not None else (0.2 if live else 5.0)
        self._lock = threading.Lock()
        self._started = self._last = clock()
        self._width = 0
        self.total = self.done = self.downloaded = self.reused = 0

    def begin(self, total: int) -> None:
        with self._lock:
            self.total, self._started = total, self._clock()
            self._last = self._started

    def add(self, *, downloaded: int = 0, reused: int = 0, done: int = 0) -> None:
        """Count bytes; ``done`` moves the bar without counting a transfer (resumed or dropped)."""
        with self._lock:
            self.downloaded += downloaded
            self.reused += reused
            self.done += done + downloaded
            now = self._clock()
            if self._stream and now - self._last >= self._interval:
                self._last = now
                self._render(now)

    def finish(self) -> None:
        with self._lock:
            if self._stream and self.total:
                self._render(self._clock())
                if self._live:
                    self._stream.write("\n")
                    self._stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self.downloaded / elapsed
        left = max(self.total - self.done, 0)
        eta = clock_text(left / rate) if rate > 0 else "?"
        percent = 100 * self.done // self.total if self.total else 100
        return f"{human(self.done)} / {human(self.total)} ({percent}%)  {human(rate)}/s  ETA {eta}"

    def _render(self, now: float) -> None:
        assert self._stream is not None
        text = f"ocipull: {self.line(now)}"
        if self._live:
            self._width = max(self._width, len(text))
            self._stream.write("\r" + text.ljust(self._width))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
