"""Progress of long jobs (27 GB checkpoint loads, conversions, batch runs, evaluations): a tqdm bar on a terminal
and/or a callback that receives `Progress` snapshots (for a node's log, throttled by `ThrottledProgressLog`).

The bar follows tqdm's own rule: shown only when stderr is a terminal (`disable=None`), so logs, pipes and CI
stay quiet. Callers pass `bar=False` to force it off, `bar=True` to force it on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_BYTE_UNITS = ("B", "KB", "MB", "GB", "TB")


def _human_bytes(value: float) -> str:
    for unit in _BYTE_UNITS:
        if abs(value) < 1000 or unit == _BYTE_UNITS[-1]:
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - loop always returns


@dataclass(frozen=True)
class Progress:
    """One snapshot: `done` of `total` units after `elapsed_s` seconds."""

    task: str
    done: float
    total: float
    unit: str
    elapsed_s: float
    finished: bool = False

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 1.0

    @property
    def rate(self) -> float:
        """Units per second so far (0 before any time has passed)."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None while the rate is unknown."""
        if self.done >= self.total:
            return 0.0
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def describe(self) -> str:
        """'loading checkpoint: 12.3 GB / 27.0 GB (46%), 310.0 MB/s, ETA 47 s'."""
        if self.unit == "B":
            amount = f"{_human_bytes(self.done)} / {_human_bytes(self.total)}"
            rate = f"{_human_bytes(self.rate)}/s"
        else:
            amount = f"{self.done:g} / {self.total:g} {self.unit}"
            rate = f"{self.rate:.2f} {self.unit}/s"
        eta = self.eta_s
        tail = "done" if self.finished else ("ETA ?" if eta is None else f"ETA {eta:.0f} s")
        return f"{self.task}: {amount} ({100 * self.fraction:.0f}%), {rate}, {tail}"


ProgressCallback = Callable[[Progress], None]


class ProgressReporter:
    """Counts work done; drives a tqdm bar (terminal only unless forced) and an optional callback."""

    def __init__(self, task: str, total: float, unit: str = "B", callback: ProgressCallback | None = None,
                 bar: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        from tqdm.auto import tqdm

        self.task, self.total, self.unit = task, float(total), unit
        self.done = 0.0
        self._callback, self._clock = callback, clock
        self._start = clock()
        is_bytes = unit == "B"
        self._bar = tqdm(total=total, desc=task, unit=unit, unit_scale=is_bytes, unit_divisor=1024 if is_bytes
                         else 1000, disable=None if bar is None else not bar, dynamic_ncols=True, leave=True)

    def snapshot(self, finished: bool = False) -> Progress:
        return Progress(self.task, self.done, self.total, self.unit, self._clock() - self._start, finished)

    def advance(self, amount: float) -> None:
        self.set(self.done + amount)

    def set(self, done: float) -> None:
        done = min(float(done), self.total) if self.total > 0 else float(done)
        self._bar.update(done - self.done)
        self.done = done
        if self._callback is not None:
            self._callback(self.snapshot())

    def close(self) -> None:
        self._bar.close()
        if self._callback is not None:
            self._callback(self.snapshot(finished=True))

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ThrottledProgressLog:
    """A progress callback that writes `describe()` lines through `log`, at most one every `period_s`.

    The first snapshot and the finished one are always written, so a load always says it started and ended.
    """

    def __init__(self, log: Callable[[str], Any], period_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._period, self._clock = log, float(period_s), clock
        self._last: float | None = None

    def __call__(self, progress: Progress) -> None:
        now = self._clock()
        if progress.finished or self._last is None or now - self._last >= self._period:
            self._last = now
            self._log(progress.describe())
