"""Progress of long CLI work on stderr (stdout keeps the result, `--json` included): one line,
rewritten in place on a terminal, a line per update elsewhere (a log file, CI), at most one
update per `every` seconds, nothing at all for work shorter than that."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, label: str, total: int, unit: str, out: TextIO | None = None,
                 every: float = 1.0) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.out = out if out is not None else sys.stderr
        self.every = every
        self.done = 0
        self._started = self._last = time.monotonic()
        self._shown = False
        self._shown_done = 0
        self._tty = self.out.isatty()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._show()

    def finish(self) -> None:
        """The last figure, if anything was shown."""
        if self._shown and self._shown_done != self.done:
            self._show()
        if self._shown:
            if self._tty:
                self.out.write("\n")
            self.out.flush()

    def _show(self) -> None:
        share = f" ({100 * self.done // self.total} %)" if self.total else ""
        elapsed = time.monotonic() - self._started
        text = (f"{self.label}: {self.done:,} of {self.total:,} {self.unit}{share}, "
                f"{elapsed:.0f} s")
        self.out.write(f"\r{text}\033[K" if self._tty else f"{text}\n")
        self.out.flush()
        self._shown = True
        self._shown_done = self.done
