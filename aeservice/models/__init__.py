"""Model kinds behind one interface; MODELS maps each kind to its class.

A new kind is its own module (a subclass of `Autoencoder` with its class attributes set), its
import here and its line in MODELS; nothing else changes.

Every list of kinds and every kind-specific check elsewhere (CLI choices, config validation, the
tune search space, pruning, objectives, the main job's steps, comparison rows and colours, auto
input noise) is read from MODELS and the class attributes of `Autoencoder`, when it is needed.
"""
from __future__ import annotations

import json
from pathlib import Path

from aeservice.config import ModelConfig
from aeservice.errors import UserError
from aeservice.models.base import Autoencoder, EpochCallback, Searched, resolve_latent_dim
from aeservice.models.dense import DenseAutoencoder, SparseAutoencoder
from aeservice.models.keras_base import DivergedError
from aeservice.models.pca import PCAModel
from aeservice.models.vae import VariationalAutoencoder

__all__ = ["Autoencoder", "DivergedError", "EpochCallback", "MODELS", "Searched", "build_model", "load_model",
           "check_sizes", "model_class", "resolve_latent_dim"]

MODELS: dict[str, type[Autoencoder]] = {
    "pca": PCAModel,
    "ae": DenseAutoencoder,
    "sparse": SparseAutoencoder,
    "vae": VariationalAutoencoder,
}


def model_class(kind: str) -> type[Autoencoder]:
    """The class of a registered kind; a one-line UserError naming the kinds otherwise."""
    if kind not in MODELS:
        raise UserError(f"unknown model kind {kind!r}; choose one of {', '.join(MODELS)}")
    return MODELS[kind]


def check_sizes(config: ModelConfig, n_features: int, n_train: int, where: str = "these rows") -> None:
    """The kind's own check of the sizes these rows can take (`Autoencoder.check_sizes`)."""
    model_class(config.model).check_sizes(config, n_features, n_train, where)


def build_model(config: ModelConfig, data_kind: str) -> Autoencoder:
    return model_class(config.model)(config, data_kind)


def load_model(path: str | Path) -> Autoencoder:
    """Load a model directory written by `Autoencoder.save`, whatever its kind."""
    kind = json.loads((Path(path) / "meta.json").read_text())["kind"]
    return MODELS[kind].load(path)
