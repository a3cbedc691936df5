"""Progress of long work as one rewritten status line with elapsed time and an ETA, on a terminal only.

Why one module: calibration passes, sensitivity scans, latency tables and confirmations, and bench runs
all report ``(phase, done, total)``; a single :class:`StatusLine` draws them alike, and
:func:`terminal_progress` decides once that pipes, files and ``--quiet`` get nothing (stdout keeps the
results; stderr stays free for the one-line notes and errors a script may parse).
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

Progress = Callable[[str, int, int], None]  # phase, done, total


def clock_text(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``: short enough for a status line."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class StatusLine:
    """``phase: 12/40 (30%) 0:04 elapsed, ETA 0:09`` rewritten in place on ``stream`` (stderr).

    The ETA extrapolates the phase's mean time per step (steps of one phase cost about the same: batches,
    ratios, table points).  Redraws are limited to ``interval`` seconds except at a phase's first and last
    step, so a million cheap steps do not flood a slow terminal; the last step ends the line.
    """

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 interval: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.clock = clock
        self.interval = interval
        self.phase: str | None = None
        self.started = self.drawn = 0.0
        self.width = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = self.clock()
        if phase != self.phase or done <= 0:
            self.phase, self.started, self.drawn = phase, now - 1e-9, float("-inf")
        finished = done >= total
        if not finished and done > 1 and now - self.drawn < self.interval:
            return
        self.drawn = now
        self._draw(self.text(phase, done, total, now - self.started), finished)

    @staticmethod
    def text(phase: str, done: int, total: int, elapsed: float) -> str:
        """The line for ``done`` of ``total`` after ``elapsed`` seconds (no ETA before the first step)."""
        share = f" ({100 * done / total:.0f}%)" if total else ""
        timing = f" {clock_text(elapsed)} elapsed"
        if 0 < done < total:
            timing += f", ETA {clock_text(elapsed / done * (total - done))}"
        return f"{phase}: {done}/{total}{share}{timing}"

    def _draw(self, line: str, finished: bool) -> None:
        padding = " " * max(0, self.width - len(line))  # clear what a longer previous line left
        self.stream.write(f"\r{line}{padding}" + ("\n" if finished else ""))
        self.stream.flush()
        self.width = 0 if finished else len(line)

    def steps(self, phase: str, total: int) -> Callable[[int], None]:
        """A ``step(n)`` callback (n steps done now) for loops that only count, e.g. the sensitivity scan."""
        done = [0]
        self(phase, 0, total)

        def step(count: int = 1) -> None:
            done[0] += count
            self(phase, done[0], total)
        return step

    def passes(self, name: str) -> Callable[[int, int], None]:
        """A ``(batch, batches)`` callback numbering each pass over the data (``calibration pass 2``)."""
        count = [0]

        def batch(number: int, total: int) -> None:
            count[0] += number == 1
            self(f"{name} pass {count[0]}", number, total)
        return batch


def terminal_progress(quiet: bool = False, stream: TextIO | None = None) -> StatusLine | None:
    """A status line on ``stream`` (stderr) when it is a terminal and ``quiet`` is off; None otherwise."""
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if quiet or isatty is None or not isatty():
        return None
    return StatusLine(stream)


class Steps:
    """Steps of a search whose length is only estimated (a bisection): ``done/expected`` while it runs,
    never shown as finished before :meth:`finish`, so the ETA stays an estimate and the line ends once."""

    def __init__(self, progress: Progress | None, phase: str, expected: int) -> None:
        self.progress, self.phase, self.expected, self.done = progress, phase, max(1, expected), 0

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.phase, self.done, max(self.expected, self.done + 1))

    def finish(self) -> None:
        if self.progress is not None and self.done:
            self.progress(self.phase, self.done, self.done)
