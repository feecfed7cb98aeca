"""Network width, epoch cap and batch size chosen from the data when the user leaves them at auto.

One rule for every data set (issue 6: "defaults ... that scale with the number of rows"): the
figures behind each constant are in README, Quality, measured with scripts/benchmark_quality.py.
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
# First hidden layer (the next one halves it). Never below 256: narrower nets did worse on small
# data, early stopping guards them (200 curve3d rows, VAE: 3.3x PCA with 32,16 against 0.76x).
MIN_WIDTH, MAX_WIDTH = 256, 1024
ROWS_PER_UNIT = 32  # training rows per unit: widens from ~12k rows (at 8500, 512 bought 13% for 3x time)


@dataclass(frozen=True)
class Sizes:
    hidden: tuple[int, ...]
    epochs: int
    batch_size: int


def _power_of_two(value: float, low: int, high: int) -> int:
    return int(min(high, max(low, 2 ** round(math.log2(max(value, 1.0))))))


def resolve_sizes(config: ModelConfig, n_rows: int, n_features: int) -> Sizes:
    """The config's sizes, with each one left at None (auto) chosen from the training rows.

    Batch: about 2 * sqrt(rows), so steps per epoch also grow like sqrt(rows): small data gets
    small batches (more, noisier steps: better on 200-300 rows), large data fewer steps per
    pass (30% less time on 8500 rows). Epochs: a cap of STEP_BUDGET steps, so a pass over a big
    data set is not repeated 500 times. Width: 256 up to ~12k rows, then growing with them, as
    more rows can fit more weights. Explicit values always win.
    """
    batch = config.batch_size or _power_of_two(BATCH_PER_SQRT_ROW * math.sqrt(n_rows), MIN_BATCH, MAX_BATCH)
    steps = max(1, math.ceil(n_rows / min(batch, max(n_rows, 1))))
    epochs = config.epochs or int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(STEP_BUDGET / steps))))
    if config.hidden is not None:
        hidden = tuple(config.hidden)
    else:
        width = _power_of_two(n_rows / ROWS_PER_UNIT, MIN_WIDTH, MAX_WIDTH)
        hidden = (width, width // 2)
    return Sizes(hidden, epochs, batch)


def describe() -> dict[str, str]:
    """The rule in words, for `--help`: one phrase per size."""
    return {"hidden": f"W,W/2, W ~ training rows / {ROWS_PER_UNIT} as a power of two in {MIN_WIDTH}-{MAX_WIDTH}",
            "batch_size": f"~{BATCH_PER_SQRT_ROW:g} x sqrt(training rows) as a power of two in {MIN_BATCH}-{MAX_BATCH}",
            "epochs": f"{STEP_BUDGET} steps' worth, {MIN_EPOCHS}-{MAX_EPOCHS}"}
