"""The Keras callbacks of every fit: metric names and history, learning-rate halving.

Kept apart from `keras_base` so that the model classes import without Keras (see there).
"""
from __future__ import annotations

import math
from typing import Sequence

import keras

from aeservice.models.base import EpochCallback

__all__ = ["MONITOR", "Relay", "ReduceLearningRate", "LR_FACTOR", "LR_PATIENCE_SHARE"]

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
                 monitor_from: int, terms: Sequence[str] = ("recon",), offset: int = 0):
        super().__init__()
        self.listeners, self.history, self.smoothing = listeners, history, smoothing
        self.terms = tuple(terms)  # the kind's `loss_terms`: other outputs (the VAE's kl_term) are not logged
        self.offset = offset  # epochs of earlier restarts: listeners hear one running count
        self.monitor_from = monitor_from  # before it the objective is still changing: no memory
        self.smoothed: float | None = None

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
        for listener in self.listeners:
            listener(self.offset + epoch, out)
