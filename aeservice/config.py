"""Settings for one training run, as dataclasses whose defaults say why they are what they are.

The three parts follow the layering: data settings are read by `aeservice.data`, model settings
by `aeservice.models`, and `TrainConfig` bundles them with the run-level seed. `flatten()` gives
the flat name -> value mapping that MLflow logs as parameters (names match the CLI options).

A setting that `train` and `tune` take as an option (`--latent-dim` for `latent_dim`) says so in
its field's metadata, and `aeservice.cli.options` builds the option from the field, so its name,
type, default and help are declared once, here:

- help: the option's help text. `{name}` is filled in with `aeservice.sizes.describe(...)[name]`
  and `{kinds}` with the model kinds' descriptions (`aeservice.cli.options.help_words`; both
  modules sit above this one);
- auto: for a None default (chosen from the data), what auto means: appended as
  "[default: auto = ...]", or "[default: auto]" when empty; the option also accepts "auto";
- choices: the words a text setting accepts.

An int field is a whole-number option that also takes MLproject's "30.0" (see `whole_number`).
A field without help (val_fraction, test_fraction) is not an option.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from aeservice.errors import UserError

__all__ = ["DataConfig", "ModelConfig", "TrainConfig", "parse_hidden", "whole_number", "is_auto", "ACTIVATIONS"]

ACTIVATIONS = ("relu", "gelu", "elu", "silu", "tanh")  # hidden layers; each has a numpy inference plan


@dataclass
class DataConfig:
    # bundled with scikit-learn, so it works offline and in CI
    dataset: str = field(default="digits", metadata={
        "help": "Built-in set (see `aeservice datasets`) or a path: .csv, .npy, .npz, an IDX file"
                " (t10k-images-idx3-ubyte[.gz], labels from a *-labels-idx1-ubyte[.gz] beside it) or a folder"
                " of PNG/JPEG images (sub-folder names as labels)."})
    # None: each generator's own size (see aeservice.data.BUILTIN)
    n_samples: int | None = field(default=None, metadata={
        "help": "Rows to generate for the synthetic sets.", "auto": ""})
    # None: each generator's own noise level
    noise: float | None = field(default=None, metadata={
        "help": "Noise level of the synthetic sets (normal1d: its std).", "auto": ""})
    # CSV column holding labels, kept out of the features
    label_column: str | None = field(default=None, metadata={
        "help": "CSV column with labels (plots; a 0/1 outlier flag also gives detection metrics); none: no labels."})
    # the label value that marks an outlier; None: a 0/1 label column is the flag itself
    outlier_label: str | None = field(default=None, metadata={
        "help": "The --label-column value of outliers (others are inliers): train logs test_roc_auc and other "
                "detection metrics; none: only a 0/1 column counts as the outlier flag."})
    # auto | continuous | image; picks scaling and the VAE likelihood
    data_kind: str = field(default="auto", metadata={
        "choices": ("auto", "continuous", "image"),
        "help": "image: pixels scaled to [0, 1], Bernoulli VAE; continuous: standardized, Gaussian VAE. auto: a file "
                "is images when every value is in [0, 1] or a whole number in 0-255 and its rows are 2-D arrays or "
                "a square of 8x8 or more features."})
    val_fraction: float = 0.15  # enough rows for early stopping to see over-fitting
    test_fraction: float = 0.15  # held out for the final, comparable metrics


@dataclass
class ModelConfig:
    # the kind users came for (a key of aeservice.models.MODELS); every kind shares this config
    model: str = field(default="vae", metadata={
        "help": "Model kind: {kinds}."})
    # None: 2 (plottable), or the feature count if that is smaller
    latent_dim: int | None = field(default=None, metadata={
        "help": "Size of the code: {latent_dim}.",
        "auto": "2, or the feature count if smaller"})
    # hidden, epochs and batch_size: None (auto) is chosen by aeservice.sizes.resolve_sizes from
    # the training rows, so a million rows do not take 64-row steps for 500 epochs and 200 rows
    # get smaller batches (README, Quality, has the measurements).
    # hidden: encoder widths, the decoder mirrors them; auto: 256,128
    hidden: tuple[int, ...] | None = field(default=None, metadata={
        "help": "Hidden layer widths of the encoder, comma-separated; the decoder mirrors them.", "auto": "{hidden}"})
    # arch: dense layers, or convolutions over each row as an image (aeservice.sizes, CONV_FILTERS)
    arch: str = field(default="auto", metadata={
        "choices": ("auto", "dense", "conv"),
        "help": "Encoder and decoder: dense layers, or conv (stride-2 3x3 convolutions, for images of known height "
                "and width; --hidden then gives their filter counts). auto: {arch}."})
    # activation and input_noise: None (auto) is chosen by the data kind (aeservice.sizes): images
    # get gelu and denoising (digits AE 0.56x PCA's test MSE at latent 2 against relu's 0.71x),
    # continuous data relu and none (gelu left the 1-D curves near-linear: scurve VAE 1.5x PCA).
    # activation: hidden layers: relu, gelu, elu, silu or tanh
    activation: str | None = field(default=None, metadata={
        "choices": ACTIVATIONS, "help": "Hidden-layer activation.", "auto": "{activation}"})
    # input_noise: std of Gaussian noise added to training inputs (scaled units)
    input_noise: float | None = field(default=None, metadata={
        "help": "Std of the Gaussian noise added to training inputs, in scaled units (images: pixels in [0, 1]); "
                "0 is none.", "auto": "{input_noise}"})
    # epochs: an upper bound: early stopping ends sooner (benchmark fits: 50-500)
    epochs: int | None = field(default=None, metadata={
        "help": "Most epochs to train (early stopping usually ends sooner).", "auto": "{epochs}"})
    # batch_size: rows per gradient step
    batch_size: int | None = field(default=None, metadata={
        "help": "Rows per gradient step.", "auto": "{batch_size}"})
    # Adam's default; stable for every kind here
    learning_rate: float = field(default=1e-3, metadata={
        "help": "Adam step size."})
    # KL weight; 1 is the true ELBO (0.5 narrowed normal1d samples to std 7.6)
    beta: float = field(default=1.0, metadata={
        "help": "VAE: weight of the KL term (1 = the true ELBO)."})
    # epochs of linear KL ramp (capped at epochs/2): escape posterior collapse
    kl_warmup: int = field(default=20, metadata={
        "help": "VAE: epochs over which the KL weight ramps from 0 to beta (at most epochs/2); on small data, {pace}."})
    # L1 on the (ReLU) code per unit and row: 30% zeros at 1.13x the AE's MSE on digits (docs/benchmarks.md)
    l1: float = field(default=1e-4, metadata={
        "help": "sparse: L1 weight on the code activations."})
    # KL sparsity (rho) penalty weight; 0 leaves it off
    sparsity_weight: float = field(default=0.0, metadata={
        "help": "sparse: weight of the KL sparsity penalty (0 = off)."})
    # rho, the target mean activation (Hosseini-Asl et al.)
    sparsity_target: float = field(default=0.05, metadata={
        "help": "sparse: target mean activation rho for the KL sparsity penalty."})
    # k-sparse code: ReLU, then each row keeps its k largest units (docs/codes.md). None (auto):
    # aeservice.models.dense.auto_k, a quarter of codes of 16+ units (latent 32: 75% zeros on MNIST
    # and digits at 2.4x and 3.4x the AE's MSE; L1 alone: 20% at 1.16x; k = 16: 50% at 1.6x), off
    # for smaller codes, which have no units to spare (the 1-D scurve code)
    k: int | None = field(default=None, metadata={
        "help": "sparse: keep each row's k largest code units and zero the rest (k-sparse code); 0 = off.",
        "auto": "latent_dim // 4 for codes of 16 or more units, else 0"})
    # importance samples per row for val_nll / test_nll (IWAE bound; docs/codes.md): 100 took 3-8 s
    # for 2000 MNIST rows and was within 1.1 nats of 1000 samples (about 4x the time)
    nll_samples: int = field(default=100, metadata={
        "help": "VAE: importance samples per row for val_nll and test_nll, the IWAE bound on -log p(x); 0 = off."})
    # L2 on kernels; a strong KL sparsity term may need it
    weight_decay: float = field(default=0.0, metadata={
        "help": "L2 penalty on all kernels."})
    # epochs without val_loss gain before stopping (lr halves after a third of them); 0 disables.
    # 100, not 30: a few hundred validation rows are a noisy judge, and 30 stopped fits that were
    # still gaining (two Gaussians, 1000 rows, AE: median 0.470x PCA against 0.532x; docs/benchmarks.md).
    # Counted in epochs even when they are short (aeservice.sizes: 60 rows get 300 steps).
    patience: int = field(default=100, metadata={
        "help": "Stop after this many epochs without val_loss improvement and restore the best weights; 0 turns "
                "early stopping off."})
    # restarts: None (auto) follows the training rows (aeservice.sizes): small data gets several
    # seeded fits, the best kept on validation, since one fit of a few dozen rows often stalls.
    restarts: int | None = field(default=None, metadata={
        "help": "Seeded fits of the nets; the one with the best validation loss is kept, and then only if it "
                "reconstructs the validation rows clearly better than PCA (else the kind's linear model is: run "
                "param kept).", "auto": "{restarts}"})
    # share of training rows taken for outliers: `detect`'s threshold (None: 0.1, PyOD's default)
    contamination: float | None = field(default=None, metadata={
        "help": "Share of training rows expected to be outliers: `detect` flags rows scoring above that quantile "
                "of the training scores.", "auto": "0.1"})
    # one seed drives the split, weight init, sampling noise and mixtures
    seed: int = field(default=0, metadata={
        "help": "Seeds the split, initial weights, sampling noise and mixtures."})


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # one experiment for every kind, so the UI compares them
    experiment: str = field(default="aeservice", metadata={
        "help": "MLflow experiment name."})

    def flatten(self) -> dict[str, Any]:
        """Flat parameter dict for MLflow; tuples become '256,128' so they read like the CLI."""
        flat: dict[str, Any] = {}
        for part in (self.data, self.model):
            for key, value in dataclasses.asdict(part).items():
                if isinstance(value, (tuple, list)):
                    value = ",".join(str(v) for v in value)
                elif value is None:
                    value = "auto"  # what the CLI and MLproject call "chosen from the data"
                flat[key] = value
        flat["experiment"] = self.experiment
        return flat

    @classmethod
    def from_flat(cls, params: Mapping[str, Any]) -> "TrainConfig":
        """The inverse of `flatten()`: a config rebuilt from a run's MLflow params.

        MLflow gives every param back as text, so "auto" becomes None again, "256,128" a tuple
        and "150.0" (how `mlflow run` may log an integer) an int. Keys that are not settings
        (n_features, n_train, latent_dim_used, ...) are ignored and missing ones keep their
        defaults, so runs logged by older versions still load. Not validated: `prepare` does that.
        """
        parts = {}
        for part in (DataConfig, ModelConfig):
            hints = typing.get_type_hints(part)
            parts[part] = part(**{f.name: _from_text(f.name, hints[f.name], params[f.name])
                                  for f in dataclasses.fields(part) if f.name in params})
        experiment = str(params.get("experiment", cls.__dataclass_fields__["experiment"].default))
        return cls(data=parts[DataConfig], model=parts[ModelConfig], experiment=experiment)

    def validate(self) -> "TrainConfig":
        """Reject settings no model can use, with one line that names the problem.

        The kind name is checked where the kinds are known, by `aeservice.models.model_class`
        (this module sits below the models); `training.prepare` and `fit_rows` call both.
        """
        m = self.model
        if m.latent_dim is not None and m.latent_dim < 1:
            raise UserError(f"latent_dim must be at least 1, got {m.latent_dim}")
        checks = [
            (m.epochs is None or m.epochs >= 1, f"epochs must be at least 1, got {m.epochs}"),
            (m.batch_size is None or m.batch_size >= 1, f"batch_size must be at least 1, got {m.batch_size}"),
            (m.learning_rate > 0, f"learning_rate must be positive, got {m.learning_rate}"),
            (m.beta >= 0, f"beta must be non-negative, got {m.beta}"),
            (m.kl_warmup >= 0, f"kl_warmup must be non-negative, got {m.kl_warmup}"),
            (m.l1 >= 0, f"l1 must be non-negative, got {m.l1}"),
            (m.sparsity_weight >= 0, f"sparsity_weight must be non-negative, got {m.sparsity_weight}"),
            (0 < m.sparsity_target < 1, f"sparsity_target must be in (0, 1), got {m.sparsity_target}"),
            (m.k is None or (_whole(m.k) and m.k >= 0), f"k must be a whole number of at least 0, got {m.k!r}"),
            (m.k is None or m.latent_dim is None or m.k <= m.latent_dim,
             f"k must be at most latent_dim ({m.latent_dim}), got {m.k}"),
            (_whole(m.nll_samples) and m.nll_samples >= 0,
             f"nll_samples must be a whole number of at least 0, got {m.nll_samples!r}"),
            (m.weight_decay >= 0, f"weight_decay must be non-negative, got {m.weight_decay}"),
            (m.patience >= 0, f"patience must be non-negative, got {m.patience}"),
            (m.contamination is None or 0 < m.contamination <= 0.5,
             f"contamination must be in (0, 0.5], got {m.contamination}"),
            (m.restarts is None or m.restarts >= 1, f"restarts must be at least 1, got {m.restarts}"),
            (m.activation is None or m.activation in ACTIVATIONS,
             f"activation must be one of {', '.join(ACTIVATIONS)} or auto, got {m.activation!r}"),
            (m.input_noise is None or m.input_noise >= 0, f"input_noise must be non-negative, got {m.input_noise}"),
            (m.arch in ("auto", "dense", "conv"), f"arch must be auto, dense or conv, got {m.arch!r}"),
            (m.hidden is None or all(_whole(h) and h >= 1 for h in m.hidden),
             f"hidden layer sizes must be positive whole numbers, got {m.hidden}"),
        ]
        d = self.data
        checks += [
            (0 < d.val_fraction < 1 and 0 < d.test_fraction < 1 and d.val_fraction + d.test_fraction < 1,
             "val_fraction and test_fraction must be in (0, 1) and sum to less than 1"),
            (d.data_kind in ("auto", "continuous", "image"),
             f"data_kind must be auto, continuous or image, got {d.data_kind!r}"),
            (d.n_samples is None or d.n_samples >= 1, f"n_samples must be at least 1, got {d.n_samples}"),
            (d.noise is None or d.noise >= 0, f"noise must be non-negative, got {d.noise}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        return self


def _whole(value: Any) -> bool:
    """An int and not a bool (True would pass for a width of 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _from_text(name: str, hint: Any, value: Any) -> Any:
    """One flattened param back to its field type; a one-line UserError when it cannot be."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if value is None:
        return None
    if typing.get_origin(base) is tuple:  # hidden: "auto" is None, "none" the empty net ()
        return parse_hidden(value if isinstance(value, (tuple, list)) else str(value))
    if optional and str(value).strip().lower() in ("auto", "none", ""):
        return None
    text = str(value).strip()
    if base is int:
        return whole_number(text, f"parameter {name}")
    if base is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"parameter {name} must be a number, got {text!r}") from None
    return text


def whole_number(value: Any, name: str) -> int:
    """30, 30.0 or "30.0" as 30: MLproject passes numbers as text such as "30.0". A one-line
    UserError naming `name` for anything that is not a whole number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number.is_integer():  # also NaN and infinity
        raise UserError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def is_auto(value: Any) -> bool:
    """Whether an option's value means "not given: choose it" (None, "auto" or "")."""
    return value is None or str(value).strip().lower() in ("auto", "")


def parse_hidden(text: str | tuple[int, ...] | list[int] | None) -> tuple[int, ...] | None:
    """'256,128' -> (256, 128); 'auto' -> None (chosen from the data); '' or 'none' -> () for a
    single-layer (linear-ish) net."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        return tuple(int(v) for v in text)
    text = text.strip()
    if text.lower() == "auto":
        return None
    if text.lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"hidden must be comma-separated integers like 256,128, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise UserError(f"hidden layer sizes must be positive, got {text!r}")
    return sizes
