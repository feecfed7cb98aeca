"""The variational autoencoder: Gaussian decoder for continuous data, Bernoulli for images."""
from __future__ import annotations

import numpy as np

from aeservice.models.base import Searched
from aeservice.models.keras_base import KerasAutoencoder, keras_module

__all__ = ["VariationalAutoencoder"]


class VariationalAutoencoder(KerasAutoencoder):
    """encode gives the posterior mean; sample draws z from the N(0, I) prior."""

    kind = "vae"
    description = "vae"
    search = KerasAutoencoder.search + (
        Searched("beta", 0.05, 5.0, log=True),)  # KL weight: from nearly an AE to a strongly regularised code
    loss_terms = ("recon", "kl")
    extra_metrics = ("elbo",)  # see evaluation_metrics
    comparison_params = KerasAutoencoder.comparison_params + ("beta",)
    val_smoothing = 0.7  # its validation loss is a one-sample ELBO estimate: noisy

    def _warmup_epochs(self) -> int:
        return min(self.config.kl_warmup, self.sizes_.epochs // 2)

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
        from aeservice.models.layers import (KLDivergence, Sampling, ScheduledWeight, bernoulli_nll, dense, dense_stack,
                                             gaussian_nll, mean_of_prediction)

        keras, c = keras_module(), self.config
        x = keras.Input((self.n_features_,), name="x")
        h = dense_stack(x, self.sizes_.hidden, self.sizes_.activation, c.weight_decay, "enc", c.seed)
        mean = dense(self.latent_dim_, "z_mean", c.seed)(h)
        log_var = dense(self.latent_dim_, "z_log_var", c.seed)(h)
        self.encoder_ = keras.Model(x, [mean, log_var], name="encoder")
        self.decoder_ = self._build_decoder()

        inp = keras.Input((self.n_features_,), name="x")
        m, lv = self.encoder_(self._corrupted(inp))
        decoded = self.decoder_(Sampling(seed=c.seed, name="sampling")([m, lv]))
        recon_loss = gaussian_nll if self.gaussian else bernoulli_nll
        kl = KLDivergence(name="kl")([m, lv])
        self._kl_weight = ScheduledWeight(name="kl_warmup")
        # "kl" is reported as it is (weight 0: a metric); "kl_term" is what the loss optimises
        outputs = {"recon": decoded, "kl": kl, "kl_term": self._kl_weight(kl)}
        losses = {"recon": recon_loss, "kl": mean_of_prediction, "kl_term": mean_of_prediction}
        return keras.Model(inp, outputs, name="vae_trainer"), losses, {"recon": 1.0, "kl": 0.0, "kl_term": c.beta}

    def _fit(self, x_train, x_val, callbacks, verbose):
        from aeservice.models.layers import MIN_VARIANCE

        super()._fit(x_train, x_val, callbacks, verbose)
        self.decoder_log_var_ = np.zeros(0)
        if self.gaussian:  # the decoder's sigma^2: training MSE per feature under q(z|x)
            mean, log_var = self._posterior(x_train)
            z = mean + np.exp(0.5 * log_var) * np.random.default_rng(self.config.seed).standard_normal(mean.shape)
            self.decoder_log_var_ = np.log(np.mean((x_train - self._decode(z)) ** 2, axis=0) + MIN_VARIANCE)

    def _posterior(self, x_scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, log_var = self._run("encoder_", x_scaled)
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
            xh = self._decode(z)
            if self.gaussian:
                lv = self.decoder_log_var_
                nll += 0.5 * np.sum((xs - xh) ** 2 * np.exp(-lv) + lv + np.log(2 * np.pi), axis=1)
            else:
                p = np.clip(xh, 1e-7, 1 - 1e-7)
                nll += -np.sum(xs * np.log(p) + (1 - xs) * np.log(1 - p), axis=1)
        nll /= draws
        if self.gaussian:  # change of variables back to the user's units
            nll += np.sum(np.log(self.scaler_.scale_))
        return {"elbo": float(np.mean(-(nll + kl)))}

    def _state(self) -> dict[str, np.ndarray]:
        return {"decoder_log_var": self.decoder_log_var_}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.decoder_log_var_ = state["decoder_log_var"]
