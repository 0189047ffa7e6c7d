"""Progress on stderr: a bar while sequences run (terminals only) and a one-line summary.

The bar (sequences done/total, sequences per second, time left) is drawn only when the
stream is a terminal and the run is not ``--quiet``; the summary line is printed at the
end of every run that is not ``--quiet``, terminal or not, so logs keep a record of it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 28
MIN_REDRAW_SECONDS = 0.1


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 stage"``, ``"2 stages"``, ``"0 stages"``: a count and its noun, agreeing in number.

    ``plural_form`` for nouns whose plural is not ``noun + "s"`` (``plural(n, "was", "were")``
    gives ``"1 was"``; use it for verbs through the noun).
    """
    return f"{n} {noun if n == 1 else (plural_form or noun + 's')}"


def format_duration(seconds: float) -> str:
    """``"42s"``, ``"3m05s"`` or ``"2h07m"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_bytes(n: float) -> str:
    """``"512 B"``, ``"3.2 KiB"``, ``"1.50 GiB"``."""
    n = float(n)
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    return f"{n:.0f} B"


def memory_option(n_bytes: float) -> str:
    """A ``--max-memory`` value a little above ``n_bytes``: ``800K``, ``13M``, ``2.5G``."""
    need = n_bytes * 1.1
    if need < 2**20:
        return f"{-(-int(need) // 2**10)}K"
    if need < 2**30:
        return f"{-(-int(need) // 2**20)}M"
    return f"{-(-int(need * 10) // 2**30) / 10:g}G"


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress bar counting sequences, usable as ``progress(done, total)``.

    Parameters
    ----------
    total: the number of sequences.
    quiet: draw nothing (the summary is not printed either).
    stream: where to draw (default ``sys.stderr``); the bar is drawn only on a terminal.
    label: a word shown before the bar.
    """

    def __init__(self, total: int, *, quiet: bool = False, stream: TextIO | None = None,
                 label: str = "ISM") -> None:
        self.total = int(total)
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.bar = not quiet and is_terminal(self.stream)
        self.start = time.perf_counter()
        self.first_done = 0
        self.done = 0
        self._last_draw = 0.0
        self._drawn = False

    def restart_at(self, done: int) -> None:
        """Count rate and time left from ``done`` (rows resumed from an earlier run)."""
        self.first_done = self.done = int(done)
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int | None = None) -> None:
        self.update(done, total)

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = int(total)
        self.done = int(done)
        if not self.bar:
            return
        now = time.perf_counter()
        if self.done < self.total and now - self._last_draw < MIN_REDRAW_SECONDS:
            return
        self._last_draw = now
        self._draw(now)

    def _draw(self, now: float) -> None:
        total = max(self.total, 1)
        frac = min(1.0, self.done / total)
        filled = int(round(frac * BAR_WIDTH))
        elapsed = now - self.start
        new = self.done - self.first_done
        rate = new / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = format_duration(left) if left is not None else "?"
        line = (
            f"\r{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{self.done}/{self.total} seq  {rate:.1f} seq/s  ETA {eta} "
        )
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line (the summary goes on its own line)."""
        if self.bar and self._drawn:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def summary(self, line: str) -> None:
        """Print the one-line summary (unless quiet)."""
        self.close()
        if not self.quiet:
            self.stream.write(line.rstrip("\n") + "\n")
            self.stream.flush()


def summary_line(*, n_sequences: int, seconds: float, path, provider: str, resumed: int = 0,
                 what: str = "ISM") -> str:
    """``ISM of 16 sequences in 1.2s (13.3 seq/s) on CPUExecutionProvider → out.npz``."""
    rate = n_sequences / seconds if seconds > 0 else float("inf")
    resumed_text = f", {resumed} resumed from an earlier run" if resumed else ""
    return (
        f"{what} of {plural(n_sequences, 'sequence')} in {format_duration(seconds)} ({rate:.1f} seq/s{resumed_text}) "
        f"on {provider} -> {path}"
    )
