"""Model kinds behind one interface; MODELS maps each kind to its class (a new kind: one line)."""
from __future__ import annotations

import json
from pathlib import Path

from aeservice.config import ModelConfig
from aeservice.errors import UserError
from aeservice.models.base import Autoencoder, EpochCallback, resolve_latent_dim
from aeservice.models.dense import DenseAutoencoder, SparseAutoencoder
from aeservice.models.keras_base import DivergedError
from aeservice.models.pca import PCAModel
from aeservice.models.vae import VariationalAutoencoder

__all__ = ["Autoencoder", "DivergedError", "EpochCallback", "MODELS", "build_model", "load_model",
           "resolve_latent_dim"]

MODELS: dict[str, type[Autoencoder]] = {
    "pca": PCAModel,
    "ae": DenseAutoencoder,
    "sparse": SparseAutoencoder,
    "vae": VariationalAutoencoder,
}


def build_model(config: ModelConfig, data_kind: str) -> Autoencoder:
    if config.model not in MODELS:
        raise UserError(f"unknown model kind {config.model!r}; choose one of {', '.join(MODELS)}")
    return MODELS[config.model](config, data_kind)


def load_model(path: str | Path) -> Autoencoder:
    """Load a model directory written by `Autoencoder.save`, whatever its kind."""
    kind = json.loads((Path(path) / "meta.json").read_text())["kind"]
    return MODELS[kind].load(path)
