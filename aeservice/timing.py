"""Where the seconds (and the memory) of a command go: named phases summed over a process, printed at the end.

`scripts/bench_training.py` reads the line `train` prints, so the split (start-up, data, fit,
tracking) comes from the command users run, not from a separate harness.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

__all__ = ["phase", "phases", "summary", "peak_memory_mb"]

_TOTALS: dict[str, float] = defaultdict(float)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the wall time of the block to `name` (blocks may repeat; nested ones count twice)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _TOTALS[name] += time.perf_counter() - start


def phases() -> dict[str, float]:
    return dict(_TOTALS)


def summary(order: tuple[str, ...] = ()) -> str:
    """'data 0.05 s, fit 2.61 s, ...' in the given order, then any other phase."""
    names = [n for n in order if n in _TOTALS] + [n for n in _TOTALS if n not in order]
    return ", ".join(f"{name} {_TOTALS[name]:.2f} s" for name in names)


def peak_memory_mb() -> float | None:
    """This process's own peak resident set in MB, or None where it cannot be read.

    Linux's `VmHWM` first: `getrusage`'s `ru_maxrss` survives `exec`, so a process started by one
    that had mapped a 3 GB file reported 3.4 GB of its own though it never held more than 1.2 GB.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
