"""Network width, epoch cap and batch size for a fit, when the user leaves them at auto.

One rule for every data set (issue 6: "defaults ... that scale with the number of rows"): the
figures behind each constant are in README, Quality, measured with scripts/sweep_quality.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from aeservice.config import ModelConfig

__all__ = ["Sizes", "resolve_sizes", "describe"]

MIN_BATCH, MAX_BATCH = 16, 512  # a few rows per step at least; beyond 512 a step costs more than it gains
BATCH_PER_SQRT_ROW = 2.0  # 64 for the benchmark's 850-1700 rows, 32 for 200, 256 for 8500
STEP_BUDGET = 10_000  # gradient steps the epoch cap allows: 500 epochs of 20 batches (digits)
MIN_EPOCHS, MAX_EPOCHS = 50, 500  # early stopping ends most fits long before the cap
# The hidden layers do not follow the rows: measured both ways, neither paid. Narrower nets did
# worse on 200-300 rows (curve3d VAE 3.3x PCA with 32,16 against 0.76x; early stopping already
# guards small data); 512,256 took 3x the time on 8500 and 17000 curve3d rows for AE 0.047x
# against 0.054x and 0.049x against 0.048x (README, Quality). 256 is wide enough for 8x8 digits.
HIDDEN = (256, 128)


@dataclass(frozen=True)
class Sizes:
    hidden: tuple[int, ...]
    epochs: int
    batch_size: int


def _power_of_two(value: float, low: int, high: int) -> int:
    """value rounded to a power of two in log scale, within [low, high]."""
    return int(min(high, max(low, 2 ** round(math.log2(max(value, 1.0))))))


def resolve_sizes(config: ModelConfig, n_rows: int) -> Sizes:
    """The config's sizes, with each one left at None (auto) chosen from the training rows.

    Batch: about 2 * sqrt(rows), so steps per epoch also grow like sqrt(rows): small data gets
    small batches (more, noisier steps: better on 200-300 rows), large data fewer steps per
    pass (30% less time on 8500 rows). Epochs: a cap of STEP_BUDGET steps, so a pass over a big
    data set is not repeated 500 times. Width: 256,128 whatever the rows (see HIDDEN). Explicit
    values always win.
    """
    batch = config.batch_size or _power_of_two(BATCH_PER_SQRT_ROW * math.sqrt(n_rows), MIN_BATCH, MAX_BATCH)
    steps = max(1, math.ceil(n_rows / min(batch, max(n_rows, 1))))
    epochs = config.epochs or int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(STEP_BUDGET / steps))))
    hidden = tuple(config.hidden) if config.hidden is not None else HIDDEN
    return Sizes(hidden, epochs, batch)


def describe() -> dict[str, str]:
    """The rule in words, for `--help`: one phrase per size."""
    return {"hidden": ",".join(map(str, HIDDEN)) + " (measured: neither narrower for few rows nor wider for many paid)",
            "batch_size": f"~{BATCH_PER_SQRT_ROW:g} x sqrt(training rows) as a power of two in {MIN_BATCH}-{MAX_BATCH}",
            "epochs": f"{STEP_BUDGET} steps' worth, {MIN_EPOCHS}-{MAX_EPOCHS}"}
