"""PCA, the linear baseline every other kind must beat (seeds 000 and 004)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from aeservice.errors import UserError
from aeservice.models.base import Autoencoder, EpochCallback

__all__ = ["PCAModel"]


class PCAModel(Autoencoder):
    """scikit-learn PCA for the fit; encode/decode are two matrix products on saved arrays."""

    kind = "pca"

    def _fit(self, x_train: np.ndarray, x_val: np.ndarray, callbacks: list[EpochCallback], verbose: int) -> None:
        from sklearn.decomposition import PCA

        limit = min(x_train.shape)
        if self.latent_dim_ > limit:
            raise UserError(f"pca latent_dim must be at most {limit} (features and training rows), "
                            f"got {self.latent_dim_}")
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
