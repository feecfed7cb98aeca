"""Dense autoencoders: the plain AE and the sparse AE (a ReLU code with L1, optional KL sparsity,
and a k-sparse code by default on codes of 16 or more units)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from aeservice.data import rows
from aeservice.errors import UserError
from aeservice.models.base import Searched, resolve_latent_dim
from aeservice.models.keras_base import KerasAutoencoder, keras_module
from aeservice.models.mixture import fit_mixture, sample_mixture

if TYPE_CHECKING:
    import keras

__all__ = ["DenseAutoencoder", "SparseAutoencoder", "auto_k", "code_metrics", "ACTIVE"]

OVERCOMPLETE = 4  # a sparse code may have up to this many units per feature
_CODE_MARGIN = 3.0  # in whitened code units: rows 3 standard deviations beyond the training rows still pass
_START_ROWS = 20_000  # training rows a ReLU code's starting bias is set from: enough to see the tails
_MIXTURE_ROWS = 50_000  # training codes the sampling mixture is fitted to, at most: its few parameters need no more
_START_LIFT = 0.1  # the lowest of them starts this many of the unit's standard deviations above zero
ACTIVE = 0.01  # a code activation counts as active at |a| >= this (code_share_inactive, code_dead_units)
_K_SHARE, _K_FROM = 4, 16  # auto k: a quarter of the code's units, for codes of at least 16 (docs/codes.md)


def auto_k(latent_dim: int) -> int:
    """The k-sparse code's k when --k is auto: latent_dim // 4 from 16 units up, else 0 (off).

    A quarter left 75% of each row's code at zero on MNIST and digits at latent 32 (docs/codes.md);
    a small code has no units to spare: the 1-D or 2-D codes of the curves need every one.
    """
    return latent_dim // _K_SHARE if latent_dim >= _K_FROM else 0


def code_metrics(codes: np.ndarray) -> dict[str, float]:
    """How sparse codes are, one row each: the mean count of nonzero units per row (the L0 norm:
    at most k for a k-sparse code), the units never active (|a| >= ACTIVE) on any row, and the
    share of activations below ACTIVE in size."""
    active = np.abs(codes) >= ACTIVE
    return {"code_l0": float(np.mean(np.count_nonzero(codes, axis=1))),
            "code_dead_units": float(np.sum(~active.any(axis=0))),
            "code_share_inactive": float(1.0 - active.mean())}


class DenseAutoencoder(KerasAutoencoder):
    """MSE autoencoder; samples from a Gaussian mixture fitted to the training codes."""

    kind = "ae"
    description = "dense ae"
    denoises_images = True  # auto input noise on images (aeservice.sizes, IMAGE_ACTIVATION's note)
    code_activation: str | None = None  # linear code: no clipped or dead latent units

    def _build_encoder(self) -> keras.Model:
        keras = keras_module()
        x = keras.Input((self.n_features_,), name="x")
        return keras.Model(x, self._code(self._encoder_trunk(x)), name="encoder")

    def _code(self, h):
        """The code layer on the encoder's last hidden output (a kind may add to it: k-sparse)."""
        from aeservice.models.layers import dense

        return dense(self.latent_dim_, "code", self.init_seed_, self.code_activation, self.config.weight_decay)(h)

    def _linear_start(self, mean, variances, axes, x_train):
        """PCA: whitened scores as the code, their inverse as the decoder. A ReLU code (sparse)
        is shifted so that every training row's code is at least _CODE_MARGIN above zero, so
        new rows somewhat beyond them are not clipped; the decoder shifts back."""
        scale = np.sqrt(variances)
        encode = np.divide(axes, scale, out=np.zeros_like(axes), where=scale > 1e-6)  # features x latent
        bias = -mean @ encode
        if self.code_activation == "relu":
            lowest = rows.map_rows(x_train, lambda part: (part @ encode + bias).min(axis=0, keepdims=True)).min(axis=0)
            bias = bias + np.maximum(-lowest, 0.0) + _CODE_MARGIN
        decode = (axes * scale).T  # latent x features
        return {"code": [encode, bias], "dec_out": [decode, mean - (mean @ encode + bias) @ decode]}

    def _terms(self, z) -> tuple[dict, dict]:
        """Extra loss terms on the code: none for the plain AE."""
        return {}, {}

    def _build(self):
        keras = keras_module()
        self.encoder_, self.decoder_ = self._build_encoder(), self._build_decoder()
        x = keras.Input((self.n_features_,), name="x")
        z = self.encoder_(self._corrupted(x))
        outputs, losses = {"recon": self.decoder_(z)}, {"recon": "mse"}
        extra_out, extra_loss = self._terms(z)
        outputs.update(extra_out)
        losses.update(extra_loss)
        return keras.Model(x, outputs, name=f"{self.kind}_trainer"), losses, {k: 1.0 for k in losses}

    def _fit(self, x_train, x_val, callbacks, verbose):
        super()._fit(x_train, x_val, callbacks, verbose)
        fitted = rows.sample_rows(len(x_train), _MIXTURE_ROWS, self.config.seed)  # all rows when few
        self.mixture_ = fit_mixture(self._encode(x_train if len(fitted) == len(x_train) else x_train[fitted]),
                                    self.config.seed)

    def _sample_latent(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return sample_mixture(self.mixture_, n, rng)

    def _state(self) -> dict[str, np.ndarray]:
        return dict(self.mixture_)

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.mixture_ = {k: state[k] for k in ("mix_weights", "mix_means", "mix_covariances")}


class SparseAutoencoder(DenseAutoencoder):
    """Adds `sparsity` = l1 * sum|z| (+ sparsity_weight * KL(rho || mean code)) to the loss, and
    keeps only each row's k largest code units (`k`; auto: `auto_k`).

    The code is a ReLU, so L1 switches units off exactly (a linear code under L1 only shrank:
    3% of digits codes below 0.01 at latent 32, against 30% with ReLU at 1.13x the AE's MSE).
    With the KL term on, it is a sigmoid so its mean activation is a Bernoulli rate. L1 alone
    left MNIST codes blurred and dense; the k-sparse code makes sparsity exact (docs/codes.md).

    When no net beats PCA, the linear model is kept (`kept_ == "linear"`) as for every kind: a
    dense, not a k-sparse code, since a sparse code that reconstructs worse than PCA is not what
    the constraint "never worse than PCA" allows. Its `k_` is then 0, logged as k_used, and the
    code metrics show it is dense.
    """

    kind = "sparse"
    description = "sparse ae"
    search = KerasAutoencoder.search + (
        Searched("l1", 1e-6, 1e-2, log=True),  # around train's default 1e-4
        Searched("sparsity_weight", 1e-3, 1.0, log=True),  # fix --sparsity-weight 0 to leave the KL term off
        Searched("sparsity_target", 0.01, 0.2, log=True, below_one=True))
    loss_terms = ("recon", "sparsity")
    extra_metrics = ("code_l0", "code_dead_units", "code_share_inactive")  # see code_metrics
    comparison_params = KerasAutoencoder.comparison_params + ("l1", "sparsity_weight")
    _linear_build = False  # building the linear fallback: no top-k

    @classmethod
    def check_sizes(cls, config, n_features, n_train, where="these rows"):
        super().check_sizes(config, n_features, n_train, where)
        latent = resolve_latent_dim(config, n_features)
        if config.k is not None and config.k > latent:
            raise UserError(f"k must be at most latent_dim ({latent}) for {where}, got {config.k}")

    @property
    def k_(self) -> int:
        """Units each row's code keeps: the config's k (auto: `auto_k`), 0 for the linear fallback."""
        if self._linear_build or getattr(self, "kept_", None) == "linear":
            return 0
        return auto_k(self.latent_dim_) if self.config.k is None else self.config.k

    def used_settings(self) -> dict[str, int]:
        return {"k_used": self.k_}

    def _code(self, h):
        from aeservice.models.layers import TopK

        code = super()._code(h)
        k = self.k_
        return TopK(k, name="top_k")(code) if 0 < k < self.latent_dim_ else code

    def _fit(self, x_train, x_val, callbacks, verbose):
        self.__dict__.pop("kept_", None)  # a refit's nets are k-sparse again until the linear model wins
        super()._fit(x_train, x_val, callbacks, verbose)

    def _linear_nets(self, x_train):
        self._linear_build = True
        try:
            return super()._linear_nets(x_train)
        finally:
            self._linear_build = False

    def _sample_latent(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The mixture's draws, made k-sparse as the encoder's codes are: the decoder saw no others."""
        from aeservice.models.plan import activation_function

        z = super()._sample_latent(n, rng)
        k = self.k_
        if not 0 < k < self.latent_dim_:
            return z
        return activation_function(f"top_k:{k}")(np.maximum(z, 0) if self.code_activation == "relu" else z)

    def evaluation_metrics(self, x: np.ndarray, seed: int = 0) -> dict[str, float]:
        """The code's sparsity on these rows (`code_metrics`)."""
        return code_metrics(self.encode(x))

    @classmethod
    def max_latent_dim(cls, n_features: int, n_rows: int) -> int | None:
        """A sparse code may be overcomplete, wider than the rows with most units off: up to
        OVERCOMPLETE times the feature count."""
        return OVERCOMPLETE * n_features

    @property
    def code_activation(self) -> str | None:
        return "sigmoid" if self.config.sparsity_weight > 0 else "relu"

    def _start_weights(self, x_train):
        """A ReLU code starts with every unit active on the training rows: its bias is shifted
        so that each unit's lowest pre-activation over them is a little above zero.

        With Keras's zero bias, a code unit behind ReLU hidden layers started active on 13-26% of
        the rows of the 3-D sheet; one such unit of two went dead for good (it gets no gradient)
        and the fit lost to PCA. L1 still switches units off, as training finds they are not needed.

        A k-sparse code starts each unit centred and scaled to unit spread instead: shifted up,
        the units with the largest bias were every row's k largest, and the rest never trained
        (11 of 16 digits units dead after 5 epochs at k = 4).
        """
        from aeservice.models.plan import DensePlan, dense_plan

        if self.code_activation != "relu":
            return {}
        plan = dense_plan(self.encoder_)  # dense or convolutional: the nets here always have one
        if plan is None:
            return {}
        at = next(i for i, step in enumerate(plan.steps) if step[0] == "code")
        name, source, kernel, bias, _ = plan.steps[at]
        plan = DensePlan(plan.input_name, [*plan.steps[:at], (name, source, kernel, bias, "linear")], [name], plan.ops)
        pre = plan(x_train[:_START_ROWS])  # the code before its ReLU (and any top-k)
        if 0 < self.k_ < self.latent_dim_:  # standardized units: each is among a row's k largest as often
            spread = np.maximum(pre.std(axis=0), 1e-6)
            return {name: [kernel / spread, (bias - pre.mean(axis=0)) / spread]}
        return {name: [kernel, bias - pre.min(axis=0) + _START_LIFT * pre.std(axis=0)]}

    def _terms(self, z):
        from aeservice.models.layers import SparsityPenalty, mean_of_prediction

        c = self.config
        penalty = SparsityPenalty(c.l1, c.sparsity_weight, c.sparsity_target, name="sparsity")(z)
        return {"sparsity": penalty}, {"sparsity": mean_of_prediction}
