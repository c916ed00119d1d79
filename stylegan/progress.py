"""Progress reporting: a tqdm bar on a terminal, periodic plain lines in batch logs (Slurm output files), each with
count, rate and the time left."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tqdm import tqdm


def process_age() -> float | None:
    """Seconds since this process started, by Linux's /proc: what came before any clock of its own (Python's start,
    `import torch`, CUDA's libraries). None where /proc does not say."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()  # the command's name may hold spaces
        return time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def format_time(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s // 60 % 60:02d}m"


class Progress:
    """`enabled` False: silent (the ranks other than the main one)."""

    def __init__(self, total: int, desc: str, unit: str = "img", interval: float = 30.0, enabled: bool = True):
        self.total, self.desc, self.unit, self.interval, self.enabled = total, desc, unit, interval, enabled
        self.count = 0
        self.start = self.last = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True) \
            if enabled and sys.stderr.isatty() else None

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.enabled and now - self.last >= self.interval:
            self.last = now
            self._line()

    def _line(self) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.count / elapsed
        left = f", {format_time((self.total - self.count) / rate)} left" if 0 < self.count < self.total else ""
        print(f"{self.desc}: {self.count}/{self.total} {self.unit} ({rate:.1f} {self.unit}/s, "
              f"{format_time(elapsed)} so far{left})", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._line()
