"""The variational autoencoder: Gaussian decoder for continuous data, Bernoulli for images.

Besides the ELBO it reports an importance-sampled NLL (the IWAE bound of Burda et al.), the
number VAE papers compare on: `importance_nll`, logged as val_nll and test_nll (docs/codes.md).
"""
from __future__ import annotations

import math

import numpy as np

import dataclasses

from aeservice.data import rows
from aeservice.models.base import Searched
from aeservice.models.dense import DenseAutoencoder
from aeservice.models.keras_base import KerasAutoencoder, keras_module


def _prefixed(listener, prefix: str):
    """The listener, hearing every metric name with `prefix` in front (the AE start's ae_loss, ...)."""
    return lambda epoch, logs: listener(epoch, {prefix + k: v for k, v in logs.items()})

__all__ = ["VariationalAutoencoder"]

_ESTIMATE_ROWS = 100_000  # streamed training rows the start's slopes and the decoder's noise are estimated on
_NLL_VALUES = 2_000_000  # rows x samples x features decoded at once by importance_nll: 16 MB of float64
_LOG_2PI = math.log(2 * math.pi)


def _bounded(x):
    """Rows in memory: all of an array, the first _ESTIMATE_ROWS of a streamed file."""
    return x[:_ESTIMATE_ROWS] if rows.is_streamed(x) else x


class VariationalAutoencoder(KerasAutoencoder):
    """encode gives the posterior mean; sample draws z from the N(0, I) prior."""

    kind = "vae"
    description = "vae"
    search = KerasAutoencoder.search + (
        Searched("beta", 0.05, 5.0, log=True),)  # KL weight: from nearly an AE to a strongly regularised code
    loss_terms = ("recon", "kl")
    extra_metrics = ("elbo", "nll")  # see evaluation_metrics
    comparison_params = KerasAutoencoder.comparison_params + ("beta",)
    val_smoothing = 0.7  # its validation loss is a one-sample ELBO estimate: noisy
    score_draws = 8  # restarts and the linear model are compared on an 8-draw ELBO estimate
    fit_note = "from a plain AE fitted first (ae_* lines)"

    def _warmup_epochs(self) -> int:
        return min(self.sizes_.kl_warmup, self.sizes_.epochs // 2)

    def used_settings(self) -> dict[str, int]:
        return {"kl_warmup_used": self._warmup_epochs()}

    def _schedule_callbacks(self):
        warmup, target = self._warmup_epochs(), self._kl_weight

        def set_weight(epoch, logs=None):
            target.weight_now.assign(min(1.0, (epoch + 1) / warmup) if warmup else 1.0)

        return [keras_module().callbacks.LambdaCallback(on_epoch_begin=set_weight)]

    def _monitor_from_epoch(self) -> int:
        return self._warmup_epochs()

    @property
    def gaussian(self) -> bool:
        return self.data_kind != "image"

    def _build(self):
        from aeservice.models.layers import (KLDivergence, Sampling, ScheduledWeight, bernoulli_nll, dense,
                                             gaussian_nll, mean_of_prediction)

        keras, c = keras_module(), self.config
        x = keras.Input((self.n_features_,), name="x")
        h = self._encoder_trunk(x)
        mean = dense(self.latent_dim_, "z_mean", self.init_seed_)(h)
        log_var = dense(self.latent_dim_, "z_log_var", self.init_seed_)(h)
        self.encoder_ = keras.Model(x, [mean, log_var], name="encoder")
        self.decoder_ = self._build_decoder()

        inp = keras.Input((self.n_features_,), name="x")
        m, lv = self.encoder_(self._corrupted(inp))
        decoded = self.decoder_(Sampling(seed=self.init_seed_, name="sampling")([m, lv]))
        recon_loss = gaussian_nll if self.gaussian else bernoulli_nll
        kl = KLDivergence(name="kl")([m, lv])
        self._kl_weight = ScheduledWeight(name="kl_warmup")
        # "kl" is reported as it is (weight 0: a metric); "kl_term" is what the loss optimises
        outputs = {"recon": decoded, "kl": kl, "kl_term": self._kl_weight(kl)}
        losses = {"recon": recon_loss, "kl": mean_of_prediction, "kl_term": mean_of_prediction}
        return keras.Model(inp, outputs, name="vae_trainer"), losses, {"recon": 1.0, "kl": 0.0, "kl_term": c.beta}

    def _linear_start(self, mean, variances, axes, x_train):
        """PCA as a VAE: the posterior mean is PCA's whitened score and the decoder its inverse,
        so the linear model reconstructs exactly as PCA does; the posterior variance per unit is
        s2 / (l + s2), s2 the per-feature variance PCA leaves and l the unit's principal
        variance (the linear-Gaussian posterior). The ELBO's own linear optimum (probabilistic
        PCA) shrinks every code toward the prior by s2 / l, which costs reconstruction: 1.07x
        PCA's error for the 3-D sheet at 60 rows, 1.31x for the two Gaussians."""
        from aeservice.models.layers import MIN_VARIANCE

        if rows.is_streamed(x_train):
            n = len(x_train)
            total = float(np.sum(rows.column_moments(x_train)[1])) * n / max(n - 1, 1)
        else:
            total = float(np.sum(np.var(x_train, axis=0, ddof=1)))
        noise = max((total - float(variances.sum())) / self.n_features_, MIN_VARIANCE)
        scale = np.sqrt(variances)
        encode = np.divide(axes, scale, out=np.zeros_like(axes), where=scale > 1e-6)
        return {"z_mean": [encode, -mean @ encode],
                "z_log_var": [np.zeros_like(encode), np.log(noise / (variances + noise))],
                "dec_out": [(axes * scale).T, mean]}

    def _fit(self, x_train, x_val, callbacks, verbose):
        from aeservice.models.layers import MIN_VARIANCE

        self._ae_start = self._fit_deterministic_start(x_train, x_val, callbacks, verbose)
        if self._ae_start is not None:  # the AE made the restarts, and its posterior is not collapsed:
            self.sizes_ = dataclasses.replace(self.sizes_, restarts=1, max_restarts=1, kl_warmup=0)  # one fit
        super()._fit(x_train, x_val, callbacks, verbose)
        self.decoder_log_var_ = np.zeros(0)
        if self.gaussian:  # the decoder's sigma^2: training MSE per feature under q(z|x)
            x_train = _bounded(x_train)
            mean, log_var = self._posterior(x_train)
            z = mean + np.exp(0.5 * log_var) * np.random.default_rng(self.config.seed).standard_normal(mean.shape)
            self.decoder_log_var_ = np.log(np.mean((x_train - self._decode(z)) ** 2, axis=0) + MIN_VARIANCE)

    def _fit_deterministic_start(self, x_train, x_val, callbacks, verbose) -> dict | None:
        """A plain autoencoder of the same nets, fitted first (with its restarts); the VAE then
        starts from its encoder and decoder, its codes whitened, and a posterior variance per
        unit from the decoder's slope there (Laplace: s2 / (|dx/dz|^2 + s2), s2 the residual).
        None when the autoencoder kept its linear model: then the VAE starts from random nets.

        The ELBO's own gradient rarely finds a curved code from random weights on small data
        (a 1-D curve of 60 rows: 1.2-1.4x PCA's error, where the same nets as a plain AE reached
        0.2-0.4x); the autoencoder's restarts find it, and the VAE keeps what the ELBO likes."""
        start = DenseAutoencoder(dataclasses.replace(self.config, model="ae"), self.data_kind)
        start.n_features_, start.latent_dim_, start.history_ = self.n_features_, self.latent_dim_, {}
        start.sizes_, start.image_shape_ = self.sizes_, self.image_shape_
        listeners = [_prefixed(listener, "ae_") for listener in callbacks]
        KerasAutoencoder._fit(start, x_train, x_val, listeners, verbose)
        self.ae_kept_ = start.kept_
        if start.kept_ == "linear":
            return None
        x_train = _bounded(x_train)
        codes = start._encode(x_train)
        centre, spread = codes.mean(axis=0), np.maximum(codes.std(axis=0), 1e-6)
        rec = start._decode(codes)
        noise = max(float(np.mean((x_train - rec) ** 2)), 1e-6)
        step = 1e-2
        slope2 = np.empty(self.latent_dim_)
        for j in range(self.latent_dim_):  # mean |d x / d z_j|^2 in whitened units
            dz = np.zeros(self.latent_dim_)
            dz[j] = step * spread[j]
            diff = (start._decode(codes + dz) - start._decode(codes - dz)) / (2 * step)
            slope2[j] = float(np.mean(np.sum(diff**2, axis=1)))
        weights = {}
        for layer in start.encoder_.layers:
            if layer.weights:
                weights[layer.name] = layer.get_weights()
        kernel, bias = weights.pop("code")
        weights["z_mean"] = [kernel / spread, (bias - centre) / spread]
        width = kernel.shape[0]  # the code layer's input: the last hidden layer (or the flat maps, or the rows)
        weights["z_log_var"] = [np.zeros((width, self.latent_dim_)), np.log(noise / (slope2 + noise))]
        first = "dec_0" if self.sizes_.hidden else "dec_out"
        for layer in start.decoder_.layers:
            if layer.weights:
                weights[layer.name] = layer.get_weights()
        kernel, bias = weights[first]
        weights[first] = [kernel * spread[:, None], bias + centre @ kernel]
        return weights

    def _start_weights(self, x_train):
        return self._ae_start or {}

    def _posterior(self, x_scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, log_var = self.nets_.run("encoder", x_scaled)
        return mean, log_var

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self._posterior(x)[0]

    def _sample_latent(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((n, self.latent_dim_))

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draws of the model's p(x): decoded prior draws plus the Gaussian decoder's own noise.

        Decoded means alone are too narrow: the ELBO is as good with a smaller decoder slope and
        more decoder noise, so on normal1d the means' spread was 9.4 for data of spread 9.8.
        Images (Bernoulli) keep the mean image, the usual picture of a sample.
        """
        out = super()._generate(n, rng)
        if self.gaussian:
            out = out + np.exp(0.5 * self.decoder_log_var_) * rng.standard_normal(out.shape)
        return out

    def evaluation_metrics(self, x: np.ndarray, seed: int = 0, draws: int = 8) -> dict[str, float]:
        """Mean per-row ELBO (nats, beta = 1); for continuous data in the user's units."""
        x = self._check_width(x, self.n_features_, "data")
        xs = self.scaler_.transform(x)
        mean, log_var = self._posterior(xs)
        kl = -0.5 * np.sum(1 + log_var - mean**2 - np.exp(log_var), axis=1)
        rng = np.random.default_rng(seed)
        nll = np.zeros(len(x))
        for _ in range(draws):
            z = mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)
            nll -= self._log_likelihood(xs, self._decode(z))
        nll /= draws
        if self.gaussian:  # change of variables back to the user's units
            nll += np.sum(np.log(self.scaler_.scale_))
        metrics = {"elbo": float(np.mean(-(nll + kl)))}
        if self.config.nll_samples > 0:
            metrics["nll"] = float(np.mean(self.importance_nll(x, self.config.nll_samples, seed)))
        return metrics

    def importance_nll(self, x: np.ndarray, samples: int, seed: int = 0) -> np.ndarray:
        """-log p(x) of each row by importance sampling from q(z|x), the IWAE bound: -logmeanexp
        over `samples` draws z_k of log p(x|z_k) + log p(z_k) - log q(z_k|x). In nats, with the
        ELBO's likelihood and units (continuous: the user's, images: Bernoulli on [0, 1]). Its
        expectation is at most -ELBO and falls toward the true NLL as `samples` grows; the
        rows x samples x features decoded at once are bounded by _NLL_VALUES."""
        from scipy.special import logsumexp

        x = self._check_width(x, self.n_features_, "data")
        xs = self.scaler_.transform(x)
        mean, log_var = self._posterior(xs)
        rng = np.random.default_rng(seed)
        per_call = max(1, _NLL_VALUES // self.n_features_)  # decoded rows (row x draw) per call
        group = min(samples, per_call)  # draws of one row decoded together
        rows_per = max(1, per_call // group)
        out = np.empty(len(x))
        for start in range(0, len(x), rows_per):
            part = slice(start, start + rows_per)
            m, lv, target = mean[part], log_var[part], xs[part]
            weights = []
            for first in range(0, samples, group):
                eps = rng.standard_normal((len(m), min(group, samples - first), self.latent_dim_))
                z = m[:, None] + np.exp(0.5 * lv)[:, None] * eps
                log_q = -0.5 * np.sum(eps**2 + lv[:, None] + _LOG_2PI, axis=2)
                log_prior = -0.5 * np.sum(z**2 + _LOG_2PI, axis=2)
                decoded = self._decode(z.reshape(-1, self.latent_dim_)).reshape(*z.shape[:2], -1)
                weights.append(self._log_likelihood(target[:, None], decoded) + log_prior - log_q)
            out[part] = math.log(samples) - logsumexp(np.concatenate(weights, axis=1), axis=1)
        if self.gaussian:  # change of variables back to the user's units
            out += np.sum(np.log(self.scaler_.scale_))
        return out

    def _log_likelihood(self, xs: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        """log p(x|z) summed over features, scaled units: the decoder's Gaussian or Bernoulli."""
        if self.gaussian:
            lv = self.decoder_log_var_
            return -0.5 * np.sum((xs - decoded) ** 2 * np.exp(-lv) + lv + _LOG_2PI, axis=-1)
        p = np.clip(decoded, 1e-7, 1 - 1e-7)
        return np.sum(xs * np.log(p) + (1 - xs) * np.log(1 - p), axis=-1)

    def _state(self) -> dict[str, np.ndarray]:
        return {"decoder_log_var": self.decoder_log_var_}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.decoder_log_var_ = state["decoder_log_var"]
