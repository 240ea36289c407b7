"""The one progress clock of the data engines: each step logged as it ends (rows, seconds, peak RSS so far)."""

from __future__ import annotations

import logging
import resource
import time


class StepClock:
    """``lap(step, rows)`` logs the step that just ended to ``log`` and keeps its wall seconds in ``laps``
    (keyed by the step's name before any ``" ("`` or ``" into "`` detail)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, step: str, rows: int) -> None:
        now = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB
        self.log.info("  %-34s %14s rows  %7.1f s  peak RSS so far %.2f GB", step, f"{rows:,}", now - self.t, peak)
        self.laps[step.split(" (")[0].split(" into ")[0]] = now - self.t
        self.t = now
