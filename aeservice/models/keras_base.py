"""What the Keras kinds share: dense stacks, the fit loop, and inference through `nets_`.

A kind supplies its encoder/decoder and a training graph whose outputs are named loss terms
(`recon`, `kl`, `sparsity`); Keras then logs each as `<term>_loss`, renamed here to the term.

The nets live in `nets_`, a `FrozenNets` (aeservice.models.frozen), which runs them (as numpy
plans where those reproduce them), saves and loads their files, and deserializes a loaded net
on first need only. Keras is imported on first need (building, fitting, or loading nets without
saved plans), not with this module: a model loaded with its saved numpy plans answers without
it, so the model server and `train`'s tracking worker, which logs and checks the model, never
import Keras or its backend (about 1 s and 190 MB per process).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aeservice.config import ModelConfig
from aeservice.data import rows
from aeservice.data.preprocess import principal_axes
from aeservice.errors import UserError
from aeservice.models.base import LATENT_SEARCH, Autoencoder, EpochCallback, Searched
from aeservice.models.frozen import FrozenNets, infer

if TYPE_CHECKING:
    import keras

__all__ = ["KerasAutoencoder", "DivergedError", "infer", "keras_module"]


def keras_module():
    """Keras, with aeservice's layers registered and TensorFlow kept unloaded on other backends."""
    import keras

    import aeservice.models.layers  # noqa: F401  (registers the custom layers .keras files name)

    return keras


class DivergedError(UserError):
    """The loss became NaN or infinite; the message says at which epoch."""


class _ExpectedRetracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning, a false alarm here.

    Each net's compiled step is traced twice (first batch size, then any size). TensorFlow counts
    traces per function *code*, so a process that loads several models (tune trials, MLflow's
    check of each logged model) looks to it like tf.functions created in a loop.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_ExpectedRetracing())


class KerasAutoencoder(Autoencoder):
    """Encoder and decoder are separate Keras models; serving calls them directly."""

    # Early stopping watches val_loss smoothed as s = a * s + (1 - a) * val_loss. A sampled
    # (VAE) validation loss is noisy, and one lucky epoch must not end training.
    val_smoothing: float = 0.0
    init_seed_: int = 0  # the seed of the nets being built: the run's, or a restart's

    # What every Keras kind shares (see Autoencoder): trained in epochs, the network searched as a
    # first-layer width and a depth (hidden_width=128, hidden_depth=2 -> hidden 128,64).
    trains_in_epochs = True
    search = (LATENT_SEARCH,
              Searched("hidden_width", 16, 256, log=True, integer=True, minimum=1),  # each next layer halves
              Searched("hidden_depth", 1, 3, integer=True, minimum=1),
              Searched("learning_rate", 1e-4, 1e-2, log=True),  # around Adam's 1e-3
              Searched("weight_decay", 1e-7, 1e-3, log=True))
    comparison_params = ("hidden", "epochs", "learning_rate", "weight_decay")

    @classmethod
    def max_latent_dim(cls, n_features: int, n_rows: int) -> int | None:
        """The feature count: a code as wide as the rows compresses nothing, the linear model has
        no axes beyond it, and wider codes only cost memory (the mixture the AE samples from
        holds latent x latent covariances: 75 GiB at a code of 100000)."""
        return n_features

    def __init__(self, config: ModelConfig, data_kind: str = "continuous"):
        super().__init__(config, data_kind)
        self.nets_ = FrozenNets()  # the encoder and decoder, once built or loaded

    # The nets as Keras models, for building and fitting them (a loaded net is deserialized when
    # first asked for). Setting one replaces it in `nets_`, with any plan or file of the old one.
    @property
    def encoder_(self) -> keras.Model:
        return self._keras_net("encoder")

    @encoder_.setter
    def encoder_(self, net: keras.Model) -> None:
        self.nets_.set("encoder", net)

    @property
    def decoder_(self) -> keras.Model:
        return self._keras_net("decoder")

    @decoder_.setter
    def decoder_(self, net: keras.Model) -> None:
        self.nets_.set("decoder", net)

    def _keras_net(self, name: str) -> keras.Model:
        if not self.nets_.has(name):  # an AttributeError, as for any learned state not learned yet
            raise AttributeError(f"{type(self).__name__!r} object has no {name} net: it is neither fitted nor loaded")
        return self.nets_.keras_net(name)

    def _schedule_callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks that change the objective over epochs (the VAE's KL warm-up)."""
        return []

    def _monitor_from_epoch(self) -> int:
        """Early stopping starts watching after any schedule has settled."""
        return 0

    def _output_activation(self) -> str | None:
        """Images: a sigmoid, so pixels stay in [0, 1]; but not for the linear model, which is
        PCA's own reconstruction only without one (and is clipped to the pixel range when used)."""
        return "sigmoid" if self.data_kind == "image" and self.sizes_.hidden else None

    def _encoder_trunk(self, x):
        """The encoder's hidden layers on its input, up to (not including) the code layer(s)."""
        from aeservice.models.layers import conv_stack, dense_stack

        c, s = self.config, self.sizes_
        if self._convolutional():
            return conv_stack(x, self.image_shape_, s.hidden, s.activation, c.weight_decay, "enc", self.init_seed_)
        return dense_stack(x, s.hidden, s.activation, c.weight_decay, "enc", self.init_seed_)

    def _convolutional(self) -> bool:
        """Whether the nets being built convolve (a linear model, hidden none, never does)."""
        return self.sizes_.arch == "conv" and bool(self.sizes_.hidden)

    def _build_decoder(self) -> keras.Model:
        from aeservice.models.layers import deconv_stack, dense, dense_stack

        keras, c, s = keras_module(), self.config, self.sizes_
        z = keras.Input((self.latent_dim_,), name="z")
        if self._convolutional():
            out = deconv_stack(z, self.image_shape_, s.hidden, s.activation, self._output_activation(), c.weight_decay,
                               "dec", self.init_seed_)
            return keras.Model(z, out, name="decoder")
        h = dense_stack(z, tuple(reversed(s.hidden)), s.activation, c.weight_decay, "dec", self.init_seed_)
        out = dense(self.n_features_, "dec_out", self.init_seed_, self._output_activation(), c.weight_decay)(h)
        return keras.Model(z, out, name="decoder")

    def _corrupted(self, x):
        """Training inputs with the denoising noise added; the saved encoder never sees it."""
        if self.sizes_.input_noise <= 0:
            return x
        return keras_module().layers.GaussianNoise(self.sizes_.input_noise, seed=self.init_seed_, name="input_noise")(x)

    def _build(self) -> tuple[keras.Model, dict, dict]:
        """Set encoder_/decoder_ and return (training model, losses, loss weights)."""
        raise NotImplementedError

    def _fit(self, x_train: np.ndarray, x_val: np.ndarray, callbacks: list[EpochCallback], verbose: int) -> None:
        """Fit `sizes_.restarts` seeded nets (more, up to `max_restarts`, while none beats the
        linear model), keep the best, and weigh it against the linear model.

        Restarts are compared on their training loss over the validation rows, scored again
        after early stopping restored each one's best weights (the VAE's averaged over several
        posterior draws). The best is then weighed against the kind's best linear model
        (`_linear_start`: PCA, or PCA as a VAE) on what `val_mse` measures, the
        reconstruction error of each validation row: the net is kept only if it is lower by more
        than one standard error of the paired differences, and so on the training rows too.
        A net that does not clearly beat PCA on rows it never saw is not worth its nonlinearity,
        and with a few dozen validation rows a plain comparison often kept one that lost on new
        rows. Early stopping and the choice of restart both look at the validation rows, so with
        9 of them a net can win there by chance while it is worse than PCA on the 42 rows it was
        fitted to (two Gaussian clusters at 60 rows: 1.18x PCA's error on its training rows, 0.82x
        on validation, 1.13x on new rows; a sparse AE there: 0.999x, 0.92x, 1.03x); the training
        rows rule that out. `kept_` says which won.
        """
        xt, xv = x_train.astype("float32"), x_val.astype("float32")  # a streamed RowSubset is float32 already
        linear = self._linear_nets(x_train)
        linear_errors = _row_errors(*linear, xv)
        xt_check = xt[:_CHECK_ROWS]
        linear_train_errors = _row_errors(*linear, xt_check)
        if exact_reconstruction(xt_check, linear_errors, linear_train_errors):  # the code holds every dimension
            self.restart_scores_ = []
            self._keep("linear", *linear)
            return
        scores: list[float] = []
        best: tuple[float, int, object, object] | None = None
        beats = False  # whether the best so far clearly beats the linear model
        for restart in range(self.sizes_.max_restarts):
            if restart >= self.sizes_.restarts and beats:
                break  # the planned fits are done and one won: no retry needed
            first = len(self.history_.get("loss", []))
            model, targets = self._train_once(xt, xv, callbacks, verbose, _restart_seed(self.config.seed, restart))
            diverged = not all(math.isfinite(v) for v in self.history_.get("loss", [])[first:])
            score = math.inf if diverged else self._validation_score(model, xv, targets)
            scores.append(score)
            if math.isfinite(score) and (best is None or score < best[0]):
                best = (score, restart + 1, self.encoder_, self.decoder_)
                gains = (_row_errors(self.encoder_, self.decoder_, xv) - linear_errors,  # < 0: the net is better
                         _row_errors(self.encoder_, self.decoder_, xt_check) - linear_train_errors)
                beats = all(clearly_negative(gain) for gain in gains)
        if best is None:
            bad = [i for i, v in enumerate(self.history_.get("loss", [])) if not math.isfinite(v)]
            where = f"{self.history_['loss'][bad[0]]} at epoch {bad[0] + 1}" if bad else "not finite"
            raise DivergedError(f"training diverged: loss became {where}; try a smaller --learning-rate or --beta")
        self.restart_scores_ = scores
        if beats:
            self._keep(f"restart {best[1]}", best[2], best[3])
        else:
            self._keep("linear", *linear)

    def _keep(self, kept: str, encoder, decoder) -> None:
        """Make these nets the model's (the linear model's have no hidden layer), then freeze:
        everything after training (metrics, mixture, plots, the logged model's check) is
        inference on arrays of many shapes, and plans need no per-shape compile (JAX: ~0.08 s each)."""
        self.kept_, self.encoder_, self.decoder_ = kept, encoder, decoder
        if kept == "linear":
            self.sizes_ = dataclasses.replace(self.sizes_, hidden=(), arch="dense")
        self.freeze()

    def _train_once(self, xt: np.ndarray, xv: np.ndarray, callbacks: list[EpochCallback], verbose: int,
                    seed: int):
        """One seeded fit of fresh nets (set as encoder_ / decoder_); its history joins history_."""
        from aeservice.models.callbacks import MONITOR, ReduceLearningRate, Relay
        from aeservice.models.fused import compile_options, fuse_epochs

        keras, c = keras_module(), self.config
        self.init_seed_ = seed
        keras.utils.set_random_seed(seed)
        model, losses, weights = self._build()
        _set_weights((self.encoder_, self.decoder_), self._start_weights(xt))
        batch_size = min(self.sizes_.batch_size, len(xt))
        model.compile(optimizer=keras.optimizers.Adam(c.learning_rate), loss=losses, loss_weights=weights,
                      **compile_options(len(xt), batch_size, self._convolutional()))
        val_targets = {name: (xv if name == "recon" else np.zeros((len(xv), 1), "float32")) for name in losses}
        # Validation needs no small batches: one batch is one compiled shape and one step per epoch.
        val_batch = min(len(xv), _MAX_VAL_BATCH)
        val_parts = [(xv[i:i + val_batch], {k: v[i:i + val_batch] for k, v in val_targets.items()})
                     for i in range(0, len(xv), val_batch)]
        fused = fuse_epochs(model, val_parts[0] if len(val_parts) == 1 else val_parts)
        fused_validation = fused
        offset = len(self.history_.get("loss", []))  # restarts continue the epoch count
        keras_callbacks = [*self._schedule_callbacks(), Relay(callbacks, self.history_, self.val_smoothing,
                                                               self._monitor_from_epoch(), self.loss_terms, offset,
                                                               len(xt))]
        patience = self.sizes_.patience
        if patience > 0:  # after the relay, which adds the smoothed monitor to the logs
            keras_callbacks.append(ReduceLearningRate(self._monitor_from_epoch(), patience))
            keras_callbacks.append(keras.callbacks.EarlyStopping(
                monitor=MONITOR, mode="min", patience=patience, restore_best_weights=True,
                start_from_epoch=self._monitor_from_epoch()))
        if rows.is_streamed(xt):  # a memory-mapped file: shuffled batches read from it (aeservice.data.rows)
            def batch_targets(part):
                return {name: (part if name == "recon" else np.zeros((len(part), 1), "float32")) for name in losses}

            data = {"x": rows.batches(xt, batch_size, seed, batch_targets),
                    "steps_per_epoch": rows.steps_per_epoch(len(xt), batch_size), "shuffle": False}  # shuffled there
        else:
            targets = {name: (xt if name == "recon" else np.zeros((len(xt), 1), "float32")) for name in losses}
            data = {"x": xt, "y": targets, "batch_size": batch_size, "shuffle": True}
        model.fit(**data, validation_data=None if fused_validation else (xv, val_targets),
                  epochs=self.sizes_.epochs, validation_batch_size=val_batch,
                  verbose=verbose, callbacks=keras_callbacks)
        return model, val_targets

    # How many posterior draws the validation score of a sampled (VAE) loss averages over.
    score_draws: int = 1

    def _validation_score(self, model, xv: np.ndarray, val_targets: dict) -> float:
        """The training loss on the validation rows, at full weight of every term."""
        draws = self.score_draws
        if draws > 1 and len(xv) > _SCORE_ROWS:  # tiled draws of many rows: a bounded subset is enough
            xv, val_targets = xv[:_SCORE_ROWS], {k: v[:_SCORE_ROWS] for k, v in val_targets.items()}
        tiled = {k: np.tile(v, (draws, 1)) for k, v in val_targets.items()} if draws > 1 else val_targets
        x = np.tile(xv, (draws, 1)) if draws > 1 else xv
        model.steps_per_execution = 1  # the fused epochs' count would make evaluate hold every batch at once
        logs = model.evaluate(x, tiled, batch_size=min(len(x), _MAX_VAL_BATCH), verbose=0, return_dict=True)
        return float(logs["loss"]) if math.isfinite(float(logs["loss"])) else math.inf

    def _linear_nets(self, x_train: np.ndarray) -> tuple:
        """(encoder, decoder) of the kind's best linear model of these scaled training rows.

        The nets are the kind's own with no hidden layer, so the linear model saves, plans and
        serves like any other (its `hidden_used` is "none")."""
        trained, nets = self.sizes_, self.nets_
        self.sizes_, self.nets_ = dataclasses.replace(trained, hidden=(), arch="dense"), FrozenNets()  # _build sets them
        try:
            self._build()
            mean, variances, axes = principal_axes(x_train, self.config.seed)
            k = self.latent_dim_
            top, lead = np.zeros(k), np.zeros((self.n_features_, k))
            top[:min(k, len(variances))] = variances[:k]
            lead[:, :min(k, axes.shape[1])] = axes[:, :k]
            _set_weights((self.encoder_, self.decoder_), self._linear_start(mean, top, lead, x_train))
            return self.encoder_, self.decoder_
        finally:
            self.sizes_, self.nets_ = trained, nets

    def _start_weights(self, x_train: np.ndarray) -> dict[str, list[np.ndarray]]:
        """(kernel, bias) by layer name that a fit starts from instead of its random draws."""
        return {}

    def _linear_start(self, mean: np.ndarray, variances: np.ndarray, axes: np.ndarray,
                      x_train: np.ndarray) -> dict[str, list[np.ndarray]]:
        """(kernel, bias) by layer name for the kind's best linear model of these scaled rows.

        `variances` and `axes` are the leading `latent_dim_` principal variances and axes (zero
        where the code is wider than the data). Codes are whitened: unit variance per unit."""
        raise NotImplementedError

    # ---- inference and persistence: all through `nets_` ------------------------------------------
    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self.nets_.run("encoder", x)

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return self.nets_.run("decoder", z)

    def freeze(self) -> dict[str, bool]:
        """For inference only: each net runs as a numpy plan where one reproduces it (FrozenNets.freeze).

        `fit` freezes at its end and `load` at its; a loaded model whose saved plans passed their
        check freezes without Keras. Which nets have a plan, by attribute (encoder_, decoder_).
        """
        return {f"{name}_": planned for name, planned in self.nets_.freeze().items()}

    def serves_on_numpy(self) -> bool:
        """Only when both nets have a checked numpy plan; else a Keras call runs them."""
        return all(self.nets_.planned().values())

    def _save_files(self, path: Path) -> None:
        self.nets_.save(path)

    def _load(self, path: Path, state: dict[str, np.ndarray]) -> None:
        """The nets' files and saved plans; Keras nets are deserialized only where a plan is missing
        or fails its check, so that the model answers as the trained one did (it froze in `fit`)."""
        self._load_state(state)
        self.nets_ = FrozenNets.load(path)
        self.freeze()

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        """Kind-specific arrays from state.npz."""


def _row_errors(encoder, decoder, x: np.ndarray) -> np.ndarray:
    """Mean squared reconstruction error of each row through the nets (the VAE: posterior mean),
    a bounded number of rows per call: each call holds every layer's output for its rows."""
    if len(x) > _INFER_ROWS:
        return np.concatenate([_row_errors(encoder, decoder, x[start:start + _INFER_ROWS])
                               for start in range(0, len(x), _INFER_ROWS)])
    code = infer(encoder, x)
    return np.mean((x - infer(decoder, code[0] if isinstance(code, list) else code)) ** 2, axis=1)


def exact_reconstruction(x: np.ndarray, *errors: np.ndarray) -> bool:
    """Whether the linear model's mean errors are within float32 rounding of none: below
    EXACT_SHARE of the rows' mean variance. Then no net can clearly beat it (`_fit` keeps a net
    only if it does), so none is fitted: data of no more dimensions than the code (one feature,
    latent 1; rows on a plane, latent 2) took 4 restarts to the epoch cap, 16 s for 1000 rows."""
    scale = float(np.mean(np.var(x, axis=0))) if len(x) > 1 else 0.0
    return all(float(np.mean(e)) <= EXACT_SHARE * scale for e in errors)


def clearly_negative(values: np.ndarray) -> bool:
    """Whether the mean of these per-row values is below zero by more than its standard error."""
    values = np.asarray(values, dtype=np.float64)
    error = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return bool(np.mean(values) + error < 0)


def _set_weights(nets, weights: dict[str, list[np.ndarray]]) -> None:
    for net in nets:
        for layer in net.layers:
            if layer.name in weights:
                layer.set_weights([np.asarray(w, dtype="float32") for w in weights[layer.name]])


def _restart_seed(seed: int, restart: int) -> int:
    """The first fit uses the run's seed itself; later restarts seeds drawn from it."""
    return seed if restart == 0 else int(np.random.SeedSequence([seed, restart]).generate_state(1)[0] % 2**31)


# Float32 rounding leaves a relative squared error near 1e-14; no float32 net fitted by
# gradient steps gets within 1e-9 of the variance, so below that a reconstruction is exact.
EXACT_SHARE = 1e-9
_CHECK_ROWS = 20_000  # training rows the kept net is checked against the linear model on
_MAX_VAL_BATCH = 4096  # rows per validation step: bounds its memory on large data sets
_INFER_ROWS = 20_000  # rows per inference call of the nets while they train (the check rows: one call)
_SCORE_ROWS = 20_000  # validation rows a sampled (VAE) score tiles its draws of, at most
