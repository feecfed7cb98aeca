"""The Keras callbacks of every fit: metric names and history, learning-rate halving.

Kept apart from `keras_base` so that the model classes import without Keras (see there).
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import keras

from aeservice.models.base import EpochCallback
from aeservice.progress import PACE_ETA, PACE_RATE

__all__ = ["PACE_RATE", "PACE_ETA", "MONITOR", "Relay", "ReduceLearningRate", "LR_FACTOR", "LR_PATIENCE_SHARE"]

MONITOR = "val_loss_smoothed"
_SUFFIX = "_loss"  # Keras logs each named output's loss as <term>_loss: aeservice calls it <term>


LR_FACTOR = 0.5  # halve the step size ...
LR_PATIENCE_SHARE = 3  # ... after patience / 3 epochs without gain, so it is tried before stopping


class ReduceLearningRate(keras.callbacks.ReduceLROnPlateau):
    """Halves Adam's step after a plateau of the smoothed validation loss, once schedules settle."""

    def __init__(self, start_epoch: int, patience: int):
        super().__init__(monitor=MONITOR, mode="min", factor=LR_FACTOR, min_lr=1e-6,
                         patience=max(1, patience // LR_PATIENCE_SHARE), verbose=0)
        self.start_epoch = start_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch >= self.start_epoch:
            super().on_epoch_end(epoch, logs)


class Relay(keras.callbacks.Callback):
    """Renames Keras logs to aeservice's metric names, records history, and stops on NaN."""

    def __init__(self, listeners: list[EpochCallback], history: dict[str, list[float]], smoothing: float,
                 monitor_from: int, terms: Sequence[str] = ("recon",), offset: int = 0, rows: int = 0):
        super().__init__()
        self.listeners, self.history, self.smoothing = listeners, history, smoothing
        self.terms = tuple(terms)  # the kind's `loss_terms`: other outputs (the VAE's kl_term) are not logged
        self.offset = offset  # epochs of earlier restarts: listeners hear one running count
        self.monitor_from = monitor_from  # before it the objective is still changing: no memory
        self.smoothed: float | None = None
        self.rows = rows  # training rows per epoch, for the pace
        self._times: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def pace(self, epoch: int) -> dict[str, float]:
        """rows_per_second of this epoch, and eta_seconds: this fit's epochs left at its cap (early
        stopping usually ends it sooner) times the mean epoch so far, the first (compiling) left out
        once there are others."""
        self._times.append(time.perf_counter() - self._start)
        seconds = self._times[-1]
        typical = self._times[1:] or self._times
        left = max(0, int(self.params.get("epochs", epoch + 1)) - epoch - 1) if self.params else 0
        return {PACE_RATE: self.rows / seconds if seconds > 0 else 0.0,
                PACE_ETA: left * sum(typical) / len(typical)}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if "val_loss" in logs:
            value = float(logs["val_loss"])
            fresh = self.smoothed is None or epoch <= self.monitor_from
            self.smoothed = value if fresh else self.smoothing * self.smoothed + (
                1 - self.smoothing) * value
            logs[MONITOR] = self.smoothed
        out: dict[str, float] = {}
        for prefix in ("", "val_"):
            if prefix + "loss" in logs:
                out[prefix + "loss"] = float(logs[prefix + "loss"])
            for term in self.terms:
                if prefix + term + _SUFFIX in logs:
                    out[prefix + term] = float(logs[prefix + term + _SUFFIX])
            if prefix + "recon" not in out and prefix + "loss" in out:  # single-term graphs
                out[prefix + "recon"] = out[prefix + "loss"]
        for key, value in out.items():
            self.history.setdefault(key, []).append(value)
        if not all(math.isfinite(v) for v in out.values()):
            self.model.stop_training = True
            return
        heard = {**out, **self.pace(epoch)} if self.rows else out  # the pace is heard, not kept in history
        for listener in self.listeners:
            listener(self.offset + epoch, heard)
