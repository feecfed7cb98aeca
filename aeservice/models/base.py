"""The one interface every model kind implements, with preprocessing folded in.

Public methods take and return data in the user's units; subclasses implement the `_` methods
on scaled data. Learned state ends in `_` and `fit` returns self, as in scikit-learn.
"""
from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple, Sequence

import numpy as np

from aeservice.config import ModelConfig
from aeservice.data.preprocess import Scaler, scaler_for, scaler_from_state
from aeservice.errors import UserError
from aeservice.data.rows import sample_rows
from aeservice.models.detection import (CALIBRATION_ROWS, DEFAULT_CONTAMINATION, DETECTION_LATENT_DIM,
                                        contamination_threshold, error_scale)
from aeservice.sizes import Sizes, fit_sizes

__all__ = ["Autoencoder", "EpochCallback", "Searched", "resolve_latent_dim"]

# Called after every epoch with (epoch, logs); logs use aeservice's metric names
# (loss and the kind's `loss_terms`, such as recon and kl, and their val_ twins). Models never know who listens.
EpochCallback = Callable[[int, dict], None]


def resolve_latent_dim(config: ModelConfig, n_features: int) -> int:
    """The default is 2 (plottable), or DETECTION_LATENT_DIM when the config asks for detection (gives a
    contamination), or the feature count when the data has fewer features."""
    if config.latent_dim is not None:
        return config.latent_dim
    return min(2 if config.contamination is None else DETECTION_LATENT_DIM, n_features)


class Searched(NamedTuple):
    """One number `tune` searches for a kind, as plain data: `aeservice.tuning` makes the Optuna calls."""

    name: str  # a ModelConfig field, or hidden_width / hidden_depth (searched in place of hidden)
    low: float
    high: float
    log: bool = False
    integer: bool = False
    minimum: float = 0.0  # smallest value a narrowed range (--range) may reach
    below_one: bool = False  # a rate: must stay under 1


# The code size, searched by every kind. 32 is the top because larger codes stop being a compression
# of the data sets this service is for; tune also keeps it below the feature count and within `max_latent_dim`.
LATENT_SEARCH = Searched("latent_dim", 1, 32, log=True, integer=True, minimum=1)


def _sizes_from(meta: dict, config: ModelConfig) -> Sizes:
    """Saved sizes; models saved before sizes were resolved had them all in the config."""
    if "sizes" in meta:
        saved = meta["sizes"]
        later = [f.name for f in dataclasses.fields(Sizes)][3:]  # settings newer models saved too
        extra = {k: saved[k] for k in later if k in saved}
        return Sizes(tuple(saved["hidden"]), int(saved["epochs"]), int(saved["batch_size"]), **extra)
    return Sizes(tuple(config.hidden or ()), config.epochs or 0, config.batch_size or 0)


class Autoencoder(ABC):
    """A model kind. Besides the methods, the class says what the layers above need to know of it
    (the CLI, tuning, the main job, comparison); each reads these through `aeservice.models.MODELS`,
    so a new kind is its own module plus one line there."""

    kind: ClassVar[str]
    description: ClassVar[str] = ""  # a few words for `--model` in --help ("pca baseline"); empty: the kind
    # Trained in epochs by a network: the resolved sizes (hidden, epochs, batch, activation, input
    # noise) apply, every epoch is reported, and tune can prune between epochs. False: one fit that
    # reports once (logged without the *_used sizes).
    trains_in_epochs: ClassVar[bool] = False
    search: ClassVar[tuple[Searched, ...]] = (LATENT_SEARCH,)  # what tune searches, in suggestion order
    # Loss terms in the epoch logs besides the total `loss` (and their val_ twins); the terms of the
    # training graph's outputs, so tune can optimise them and the loss plot draws them.
    loss_terms: ClassVar[tuple[str, ...]] = ("recon",)
    extra_metrics: ClassVar[tuple[str, ...]] = ()  # names `evaluation_metrics` returns (logged as val_/test_<name>)
    denoises_images: ClassVar[bool] = False  # auto input_noise > 0 on image data (aeservice.sizes)
    # The settings that shape this kind: its row of the comparison table leaves the others blank.
    comparison_params: ClassVar[tuple[str, ...]] = ()
    fit_note: ClassVar[str] = ""  # how this kind fits, for `train`'s announce line; empty: nothing to say

    @classmethod
    def check_sizes(cls, config: ModelConfig, n_features: int, n_train: int, where: str = "these rows") -> None:
        """Refuse, in one line, sizes these training rows cannot take: before any run starts or net is built.

        The code may be at most `max_latent_dim` (PCA: the feature and training row counts; the
        nets: the feature count, a sparse code a few times it); an explicit batch may be at most
        the training rows, for the kinds that train in batches. Settings that need no data
        (positive whole widths, epochs, rates) are `TrainConfig.validate`'s. `training.prepare`
        calls both, so `train`, `tune`, its trials and the main job check alike; `fit` checks
        again for callers that fit rows directly. `where` names the data ("data set digits").
        """
        latent = resolve_latent_dim(config, n_features)
        bound = cls.max_latent_dim(n_features, n_train)
        if bound is not None and latent > bound:
            raise UserError(f"{cls.kind} latent_dim must be at most {_bound_text(bound, n_features, n_train)} "
                            f"for {where}, got {latent}")
        if cls.trains_in_epochs and config.batch_size is not None and config.batch_size > n_train:
            raise UserError(f"batch_size must be at most the training row count ({n_train}) for {where}, "
                            f"got {config.batch_size}")

    @classmethod
    def max_latent_dim(cls, n_features: int, n_rows: int) -> int | None:
        """The largest code this kind can learn from n_rows training rows of n_features; None: no bound."""
        return None

    # (height, width), or (height, width, channels) for colour, when each row is an image, as the data
    # set said (`Dataset.image_shape`); a client reshapes rows with it. Set by training, saved with
    # the model; None: not known or not images.
    image_shape_: tuple[int, ...] | None = None

    def __init__(self, config: ModelConfig, data_kind: str = "continuous"):
        self.config = config
        self.data_kind = data_kind

    # ---- training ---------------------------------------------------------------------------
    def fit(self, x_train: np.ndarray, x_val: np.ndarray, callbacks: Sequence[EpochCallback] = (),
            verbose: int = 0) -> "Autoencoder":
        self.n_features_ = int(x_train.shape[1])
        self.check_sizes(self.config, self.n_features_, len(x_train))
        self.latent_dim_ = resolve_latent_dim(self.config, self.n_features_)
        self.scaler_: Scaler = scaler_for(self.data_kind).fit(x_train)
        train = self.scaler_.transform(x_train)
        self.sizes_: Sizes = fit_sizes(self.config, train, self.data_kind, self.latent_dim_, self.denoises_images,
                                       self.image_shape_)
        self.history_: dict[str, list[float]] = {}
        self._fit(train, self.scaler_.transform(x_val), list(callbacks), verbose)
        self.fit_detection(train[sample_rows(len(train), CALIBRATION_ROWS, self.config.seed)])
        return self

    def fit_detection(self, train: np.ndarray) -> float:
        """What `score` and `detect` learn from the (scaled) training rows, once the model is fitted:
        each feature's mean squared reconstruction error (`error_scale_`, which `score` divides by)
        and `threshold_`, the score above which the configured share of the training rows lie."""
        self.error_scale_ = error_scale(self._row_errors(train))
        contamination = self.config.contamination or DEFAULT_CONTAMINATION
        self.threshold_: float | None = contamination_threshold(self._score_scaled(train), contamination)
        return self.threshold_

    # ---- the interface, in user units -------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        return self._encode(self.scaler_.transform(self._check_width(x, self.n_features_, "data")))

    def decode(self, z: np.ndarray) -> np.ndarray:
        return self._to_user(self._decode(self._check_width(z, self.latent_dim_, "latent")))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(x))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n new rows; the same seed gives the same rows."""
        return self._to_user(self._generate(int(n), np.random.default_rng(seed)))

    def score(self, x: np.ndarray) -> np.ndarray:
        """The anomaly score of each row, higher for rows less like the training data: its squared
        reconstruction error per feature, in the model's scaled units (continuous data: standardized)
        and divided by that feature's mean on the training rows (`error_scale_`), averaged over the
        features. A feature counts by how unusual its error is, whatever its units or how well the
        model reconstructs it; on the training rows the score averages about 1. docs/anomaly.md has
        the measurements behind the choice."""
        return self._score_scaled(self.scaler_.transform(self._check_width(x, self.n_features_, "data")))

    def _row_errors(self, scaled: np.ndarray) -> np.ndarray:
        """Squared reconstruction error of each row and feature, in scaled units."""
        return (scaled - self._decode(self._encode(scaled))) ** 2

    def _score_scaled(self, scaled: np.ndarray) -> np.ndarray:
        scale = getattr(self, "error_scale_", None)  # None: saved before scores were normalised
        errors = self._row_errors(scaled)
        return np.mean(errors if scale is None else errors / scale, axis=1)

    def detect(self, x: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """1 for rows whose score is above the threshold (the fitted `threshold_` unless given), else 0."""
        if threshold is None:
            threshold = getattr(self, "threshold_", None)
            if threshold is None:
                raise UserError("this model was saved without a detection threshold: pass one (param threshold)")
        return (self.score(x) > threshold).astype(np.int64)

    def freeze(self) -> dict[str, bool]:
        """Prepare for inference only (serving); kinds with a faster inference path take it here."""
        return {}

    def serves_on_numpy(self) -> bool:
        """Whether a loaded copy answers every method without Keras (what serving it must install)."""
        return True

    def used_settings(self) -> dict[str, Any]:
        """Settings of this kind that the fit resolved besides the sizes, logged as *_used params."""
        return {}

    def info(self) -> dict:
        """What a client needs to know before calling the model: its kind, the width of its data rows
        and of its code (what `decode` takes), the data kind and, for images, their shape."""
        shape = self.image_shape_
        threshold = getattr(self, "threshold_", None)
        return {"kind": self.kind, "n_features": int(self.n_features_), "latent_dim": int(self.latent_dim_),
                "data_kind": self.data_kind, "image_shape": [int(v) for v in shape] if shape else None,
                "threshold": None if threshold is None else float(threshold)}

    def evaluation_metrics(self, x: np.ndarray, seed: int = 0) -> dict[str, float]:
        """Kind-specific extra metrics on held-out rows (the VAE adds its ELBO)."""
        return {}

    # ---- persistence: plain files, no pickles --------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": self.kind,
            "config": {**self.config.__dict__,
                       "hidden": None if self.config.hidden is None else list(self.config.hidden)},
            "data_kind": self.data_kind,
            "n_features": self.n_features_,
            "latent_dim": self.latent_dim_,
            "sizes": dataclasses.asdict(self.sizes_),  # what auto resolved to, for the logged params
            "scaler": self.scaler_.name,
        }
        if self.image_shape_:
            meta["image_shape"] = [int(v) for v in self.image_shape_]
        if getattr(self, "threshold_", None) is not None:
            meta["threshold"] = float(self.threshold_)  # `detect`'s, from the training scores
        if getattr(self, "kept_", None):
            meta["kept"] = self.kept_  # which fit the training kept (see KerasAutoencoder._fit)
        (path / "meta.json").write_text(json.dumps(meta, indent=2))
        detection = {} if getattr(self, "error_scale_", None) is None else {"error_scale": self.error_scale_}
        np.savez(path / "state.npz", **self.scaler_.state(), **detection, **self._state())
        self._save_files(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Autoencoder":
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        hidden = meta["config"].get("hidden")
        config = ModelConfig(**{**meta["config"], "hidden": None if hidden is None else tuple(hidden)})
        model = cls(config, meta["data_kind"])
        model.n_features_, model.latent_dim_ = meta["n_features"], meta["latent_dim"]
        model.sizes_ = _sizes_from(meta, config)
        if "kept" in meta:
            model.kept_ = meta["kept"]
        model.threshold_ = meta.get("threshold")  # None: saved before thresholds were
        if meta.get("image_shape"):  # models saved before it was saved: not known
            model.image_shape_ = tuple(meta["image_shape"])
        with np.load(path / "state.npz", allow_pickle=False) as state:
            arrays = {k: state[k] for k in state.files}
        model.scaler_ = scaler_from_state(meta["scaler"], arrays)
        model.error_scale_ = arrays.get("error_scale")  # None: saved before scores were normalised
        model.history_ = {}
        model._load(path, arrays)
        return model

    # ---- what each kind provides ---------------------------------------------------------------
    @abstractmethod
    def _fit(self, x_train: np.ndarray, x_val: np.ndarray, callbacks: list[EpochCallback], verbose: int) -> None: ...

    @abstractmethod
    def _encode(self, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _decode(self, z: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _sample_latent(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n new rows in scaled units: the decoded latent draws, unless a kind models noise too."""
        return self._decode(self._sample_latent(n, rng))

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]: ...

    def _save_files(self, path: Path) -> None:
        """Files beyond state.npz (Keras models); nothing by default."""

    @abstractmethod
    def _load(self, path: Path, state: dict[str, np.ndarray]) -> None: ...

    # ---- helpers --------------------------------------------------------------------------------
    def _to_user(self, out: np.ndarray) -> np.ndarray:
        out = self.scaler_.inverse_transform(out)
        if self.data_kind == "image":  # images stay in the range they came in
            out = np.clip(out, 0.0, float(self.scaler_.scale_.max()))
        return out

    @staticmethod
    def _check_width(x: np.ndarray, width: int, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(1, -1) if x.shape[0] == width else x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[1] != width:
            raise UserError(f"{what} rows must have {width} column(s), got shape {tuple(x.shape)}")
        return x


def _bound_text(bound: int, n_features: int, n_train: int) -> str:
    if bound == n_features:
        return f"the feature count ({n_features})"
    if bound == n_train:
        return f"the training row count ({n_train})"
    if n_features and bound % n_features == 0:
        return f"{bound} ({bound // n_features}x the feature count)"
    return str(bound)
