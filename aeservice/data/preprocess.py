"""Scalers fitted on training rows only and saved with the model, so outputs are in user units."""
from __future__ import annotations

import numpy as np

from aeservice.data import rows

__all__ = ["Scaler", "Standardizer", "UnitRange", "principal_axes", "scaler_for", "scaler_from_state"]

ESTIMATE_ROWS = 5000  # rows principal axes are estimated on: enough for a stable covariance


class Scaler:
    """Affine map x -> (x - offset_) / scale_; `state()` is what the saved model keeps."""

    name = "base"

    def fit(self, x: np.ndarray) -> "Scaler":
        raise NotImplementedError

    def transform(self, x: np.ndarray) -> np.ndarray:
        if isinstance(x, rows.RowSubset):  # scaled a chunk at a time as it is read: no scaled copy
            return x.scaled(self.offset_, self.scale_)
        if isinstance(x, np.ndarray) and x.dtype == np.float32:  # float32 rows stay float32: half the copy
            out = x - self.offset_.astype(np.float32)
            out /= self.scale_.astype(np.float32)
            return out
        return (x - self.offset_) / self.scale_

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        return z * self.scale_ + self.offset_

    def state(self) -> dict[str, np.ndarray]:
        return {"scaler_offset": self.offset_, "scaler_scale": self.scale_}


class Standardizer(Scaler):
    """Zero mean, unit variance per feature; constant features keep scale 1 instead of 0."""

    name = "standardize"

    def fit(self, x: np.ndarray) -> "Standardizer":
        if rows.is_streamed(x):  # one chunked pass
            self.offset_, variance = rows.column_moments(x)[:2]
            std = np.sqrt(variance)
        else:
            self.offset_ = x.mean(axis=0)
            std = x.std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        return self


class UnitRange(Scaler):
    """Images: keep [0, 1] data as it is; divide larger ranges (0-16, 0-255) by the training max."""

    name = "unit_range"

    def fit(self, x: np.ndarray) -> "UnitRange":
        if rows.is_streamed(x):
            top = float(rows.column_moments(x)[2].max()) if len(x) else 1.0
        else:
            top = float(x.max()) if x.size else 1.0
        self.offset_ = np.zeros(x.shape[1])
        self.scale_ = np.full(x.shape[1], top if top > 1.0 else 1.0)
        return self


_SCALERS = {cls.name: cls for cls in (Standardizer, UnitRange)}


def scaler_for(data_kind: str) -> Scaler:
    return UnitRange() if data_kind == "image" else Standardizer()


def scaler_from_state(name: str, state: dict[str, np.ndarray]) -> Scaler:
    scaler = _SCALERS[name]()
    scaler.offset_ = np.asarray(state["scaler_offset"], dtype=np.float64)
    scaler.scale_ = np.asarray(state["scaler_scale"], dtype=np.float64)
    return scaler


def principal_axes(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, variances, axes) of PCA on at most ESTIMATE_ROWS of the rows: variances in
    descending order, axes as the matching columns of a features x features matrix."""
    if len(x) > ESTIMATE_ROWS:
        x = x[np.random.default_rng(seed).choice(len(x), ESTIMATE_ROWS, replace=False)]
    x = np.asarray(x)
    mean = x.mean(axis=0)
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred / max(len(x) - 1, 1))  # ascending
    return mean, np.maximum(values[::-1], 0.0), vectors[:, ::-1]
