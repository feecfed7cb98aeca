"""Fit one model on one data set and measure it; knows nothing of MLflow or Optuna.

Listeners passed as `callbacks` hear every epoch (MLflow logging, Optuna pruning, progress).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from aeservice.config import TrainConfig
from aeservice.data import BUILTIN, Dataset, Split, load_dataset, split_dataset
from aeservice.data.outliers import outlier_flags
from aeservice.data.preprocess import scaler_for
from aeservice.data.rows import chunks, column_moments
from aeservice.errors import UserError
from aeservice.models import (MODELS, Autoencoder, EpochCallback, build_model, check_sizes, model_class,
                              resolve_latent_dim)
from aeservice.models.detection import detection_metrics
from aeservice.models.keras_base import KerasAutoencoder, keras_module
from aeservice.sizes import Sizes, fit_sizes, resolve_arch, resolve_sizes

__all__ = ["Prepared", "TrainResult", "import_libraries", "prepare", "prepared_sizes", "epoch_cap", "used_params",
           "fit_and_evaluate", "fit_rows", "evaluate", "dataset_outlier_flags",
           "require_outlier_flags"]


@dataclass
class Prepared:
    """Checked config plus loaded, split data: everything that can fail before a run starts."""

    config: TrainConfig
    dataset: Dataset
    split: Split
    test_flags: np.ndarray | None = None  # 0/1 outlier flags of the test rows, when the labels hold them


@dataclass
class TrainResult:
    model: Autoencoder
    metrics: dict[str, float]  # val_mse, test_mse, explained_variance (+ the kind's val_/test_ extra_metrics)
    history: dict[str, list[float]]


def import_libraries(config: TrainConfig) -> None:
    """Import Keras and its backend now if the kind trains with them (the model classes import
    without them; see `aeservice.models.keras_base`), so `train`'s time split counts the import
    as imports rather than as part of the fit."""
    if issubclass(MODELS.get(config.model.model, object), KerasAutoencoder):
        keras_module()


def prepare(config: TrainConfig, dataset: Dataset | None = None) -> Prepared:
    """Validate settings against the data so bad input fails before any run or epoch."""
    model_class(config.model.model)
    config.validate()
    data = dataset if dataset is not None else load_dataset(config.data, config.model.seed)
    split = split_dataset(data, config.data, config.model.seed)
    check_sizes(config.model, data.n_features, len(split.train), f"data set {data.name}")
    if model_class(config.model.model).trains_in_epochs:
        resolve_arch(config.model, data.kind, data.image_shape)  # --arch conv on rows that are not images: one line
    flags = dataset_outlier_flags(config, data)
    test_flags = None if flags is None else split_dataset(
        dataclasses.replace(data, labels=flags), config.data, config.model.seed).test_labels
    return Prepared(config, data, split, test_flags)


def require_outlier_flags(config: TrainConfig) -> None:
    """A one-line error unless the data set's labels are outlier flags (a detection objective needs them)."""
    dataset_outlier_flags(config, load_dataset(config.data, config.model.seed), required=True)


def dataset_outlier_flags(config: TrainConfig, data: Dataset, required: bool = False) -> np.ndarray | None:
    """The data set's labels as 0/1 outlier flags (`aeservice.data.outliers`), or None.

    A data file's 0/1 labels are the flags; --outlier-label VALUE makes the rows labelled VALUE the
    outliers. Asking for detection (--outlier-label, --contamination, or `required`: a detection
    objective) with labels that are not 0/1 is a one-line error; so is --outlier-label without labels.
    """
    d = config.data
    if d.outlier_label is not None and data.labels is None:
        raise UserError(f"--outlier-label needs labels: data set {data.name} has none (give --label-column)")
    if d.outlier_label is None and d.dataset in BUILTIN and not required:
        return None  # a built-in set's labels are classes or colours, not outlier flags
    asked = required or (data.labels is not None and (d.outlier_label is not None or config.model.contamination
                                                      is not None))
    return outlier_flags(data.labels, d.outlier_label, asked, d.label_column)


def prepared_sizes(prepared: Prepared) -> Sizes:
    """Width, epoch cap and batch the model will resolve on these training rows (before it fits)."""
    config, train, kind = prepared.config.model, prepared.split.train, prepared.dataset.kind
    denoises = model_class(config.model).denoises_images
    if not (config.input_noise is None and denoises and kind == "image"):  # no rows needed: no scaled copy
        return resolve_sizes(config, len(train), kind, 0.0, denoises, prepared.dataset.image_shape)
    return fit_sizes(config, scaler_for(kind).fit(train).transform(train), kind,
                     resolve_latent_dim(config, train.shape[1]), denoises, prepared.dataset.image_shape)


def epoch_cap(prepared: Prepared) -> int:
    """The most epochs a fit of these rows will run: the epoch rule needs no pass over the data."""
    data = prepared.dataset
    return resolve_sizes(prepared.config.model, len(prepared.split.train), data.kind, image_shape=data.image_shape).epochs


def used_params(model: Autoencoder) -> dict[str, Any]:
    """The sizes the model resolved from the data (the config may say "auto"), as run params."""
    used: dict[str, Any] = {"latent_dim_used": model.latent_dim_}
    if model.trains_in_epochs:  # else no net, epochs or batches (PCA)
        sizes = model.sizes_
        used.update(arch_used=sizes.arch, hidden_used=",".join(map(str, sizes.hidden)) or "none", epochs_used=sizes.epochs,
                    epochs_trained=len(model.history_.get("loss", [])),  # every fit's, restarts included
                    batch_size_used=sizes.batch_size, activation_used=sizes.activation,
                    input_noise_used=sizes.input_noise, patience_used=sizes.patience,
                    restarts_used=len(getattr(model, "restart_scores_", [None] * sizes.restarts)))  # fits made
        used.update(model.used_settings())  # the VAE: kl_warmup_used
        if getattr(model, "kept_", None):  # which fit won on validation: "restart N" or "linear"
            used["kept"] = model.kept_
        if getattr(model, "restart_scores_", None):  # each restart's validation loss
            used["restart_val_losses"] = ",".join(f"{v:.5g}" for v in model.restart_scores_)
        if getattr(model, "ae_kept_", None):  # the VAE's plain AE start: which of its fits won
            used["ae_start_kept"] = model.ae_kept_
    return used


def fit_and_evaluate(prepared: Prepared, callbacks: Sequence[EpochCallback] = (), verbose: int = 0) -> TrainResult:
    cfg, split = prepared.config, prepared.split
    model = build_model(cfg.model, prepared.dataset.kind)
    model.image_shape_ = prepared.dataset.image_shape
    model.fit(split.train, split.val, callbacks=callbacks, verbose=verbose)
    metrics = evaluate(model, split, cfg.model.seed)
    if prepared.test_flags is not None:  # labelled outliers: how well score and detect find them
        found = detection_metrics(model.score(split.test), prepared.test_flags, model.threshold_)
        metrics.update({f"test_{k}": v for k, v in found.items()})
    return TrainResult(model, metrics, dict(model.history_))


def fit_rows(config: TrainConfig, x: np.ndarray, data_kind: str = "continuous",
             callbacks: Sequence[EpochCallback] = (), verbose: int = 0) -> Autoencoder:
    """Fit one model on the given rows, as `train` would on a data set's training part.

    For callers that hold out their own test rows (benchmarks, notebooks): `val_fraction` of
    the rows, chosen by the seed, become the validation rows early stopping watches.
    """
    model_class(config.model.model)
    config.validate()
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    n_val = max(1, int(round(len(x) * config.data.val_fraction)))
    if len(x) - n_val < 2:
        raise UserError(f"too few rows to fit on: {len(x)}")
    order = np.random.default_rng(config.model.seed).permutation(len(x))
    model = build_model(config.model, data_kind)
    return model.fit(x[order[n_val:]], x[order[:n_val]], callbacks=callbacks, verbose=verbose)


def evaluate(model: Autoencoder, split: Split, seed: int = 0) -> dict[str, float]:
    """The metrics every kind reports under the same names, in the user's units."""
    sse = _squared_error(model, split.test)
    mean = column_moments(split.test)[0]
    sst = sum(float(np.sum((part - mean) ** 2)) for part in chunks(split.test, EVAL_ROWS))
    metrics = {
        "val_mse": _squared_error(model, split.val) / split.val.size,
        "test_mse": sse / split.test.size,
        "explained_variance": 1.0 - sse / sst if sst > 0 else float("nan"),
    }
    for name, part in (("val", split.val), ("test", split.test)):  # val_ for tuning, test_ for reporting
        metrics.update({f"{name}_{k}": v for k, v in _kind_metrics(model, part, seed).items()})
    return metrics


EVAL_ROWS = 65_536  # rows evaluated per batch: memory bounded by it, not by the held-out rows


def _squared_error(model: Autoencoder, x: np.ndarray) -> float:
    return sum(float(np.sum((part - model.reconstruct(part)) ** 2)) for part in chunks(x, EVAL_ROWS))


def _kind_metrics(model: Autoencoder, x: np.ndarray, seed: int) -> dict[str, float]:
    """The kind's extra metrics (means over rows), batch by batch and weighted by the batch's rows."""
    if len(x) <= EVAL_ROWS:
        return model.evaluation_metrics(x, seed=seed)
    total: dict[str, float] = {}
    for part in chunks(x, EVAL_ROWS):
        for key, value in model.evaluation_metrics(part, seed=seed).items():
            total[key] = total.get(key, 0.0) + value * len(part) / len(x)
    return total
