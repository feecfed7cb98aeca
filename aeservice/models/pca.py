"""PCA, the linear baseline every other kind must beat (seeds 000 and 004)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from aeservice.models.base import LATENT_SEARCH, Autoencoder, EpochCallback

__all__ = ["PCAModel"]


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
        from sklearn.decomposition import PCA

        pca = PCA(n_components=self.latent_dim_, svd_solver="full", random_state=self.config.seed).fit(x_train)
        self.components_, self.mean_ = pca.components_, pca.mean_
        self.explained_variance_ = pca.explained_variance_
        train = float(np.mean((x_train - self._decode(self._encode(x_train))) ** 2))
        val = float(np.mean((x_val - self._decode(self._encode(x_val))) ** 2))
        logs = {"loss": train, "recon": train, "val_loss": val, "val_recon": val}
        self.history_ = {k: [v] for k, v in logs.items()}
        for callback in callbacks:  # one "epoch": curves and pruners see PCA like the others
            callback(0, logs)

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
