"""PCA, the linear baseline every other kind must beat (seeds 000 and 004)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from aeservice.data import rows
from aeservice.models.base import LATENT_SEARCH, Autoencoder, EpochCallback

__all__ = ["PCAModel", "STREAM_BATCH_ROWS"]

STREAM_BATCH_ROWS = 50_000  # rows per partial fit of the incremental PCA of a streamed file


class PCAModel(Autoencoder):
    """scikit-learn PCA for the fit; encode/decode are two matrix products on saved arrays."""

    kind = "pca"
    description = "pca baseline"
    trains_in_epochs = False  # one closed-form fit: no epochs to report or prune
    search = (LATENT_SEARCH,)  # so the main job, which fixes the code size, fits it once as the baseline
    comparison_params = ()  # no beta or hidden layers shaped a PCA

    @classmethod
    def max_latent_dim(cls, n_features: int, n_rows: int) -> int | None:
        return min(n_features, n_rows)  # components: at most the rank of the training rows

    def _fit(self, x_train: np.ndarray, x_val: np.ndarray, callbacks: list[EpochCallback], verbose: int) -> None:
        from sklearn.decomposition import PCA, IncrementalPCA

        if rows.is_streamed(x_train):  # a memory-mapped file: one pass of partial fits, a chunk at a time
            step = max(STREAM_BATCH_ROWS, 5 * self.latent_dim_)
            pca = IncrementalPCA(n_components=self.latent_dim_, batch_size=step)
            for part in rows.chunks(x_train, step):
                if len(part) >= self.latent_dim_:  # a short last chunk cannot be a partial fit of its own
                    pca.partial_fit(part)
        else:
            pca = PCA(n_components=self.latent_dim_, svd_solver="full", random_state=self.config.seed).fit(x_train)
        self.components_, self.mean_ = pca.components_, pca.mean_
        self.explained_variance_ = pca.explained_variance_
        train = self._mse(x_train)
        val = self._mse(x_val)
        logs = {"loss": train, "recon": train, "val_loss": val, "val_recon": val}
        self.history_ = {k: [v] for k, v in logs.items()}
        for callback in callbacks:  # one "epoch": curves and pruners see PCA like the others
            callback(0, logs)

    def _mse(self, x) -> float:
        """Mean squared reconstruction error over x's rows, a chunk at a time."""
        sse = sum(float(np.sum((part - self._decode(self._encode(part))) ** 2)) for part in rows.chunks(x))
        return sse / max(1, x.shape[0] * x.shape[1])

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) @ self.components_.T

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return z @ self.components_ + self.mean_

    def _sample_latent(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((n, self.latent_dim_)) * np.sqrt(self.explained_variance_)

    def _state(self) -> dict[str, np.ndarray]:
        return {"components": self.components_, "mean": self.mean_, "explained_variance": self.explained_variance_}

    def _load(self, path: Path, state: dict[str, np.ndarray]) -> None:
        self.components_, self.mean_ = state["components"], state["mean"]
        self.explained_variance_ = state["explained_variance"]
