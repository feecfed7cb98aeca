"""Keras 3 layers for the training graphs, written with `keras.ops` only (any backend).

Each loss term is a layer output with its own per-row value, so Keras logs it as a named
metric (`kl_loss`, `sparsity_loss`) without a backend-specific train step.
"""
from __future__ import annotations

import math
import zlib

import keras
import numpy as np
from keras import ops

import aeservice.models.keras_patch  # noqa: F401  (TensorFlow stays unimported on other backends; see there)

__all__ = ["dense", "dense_stack", "conv", "conv_stack", "deconv_stack", "conv_grid", "image_dims",
           "gelu_tanh", "HostGlorotUniform", "HostZeros", "Sampling", "KLDivergence",
           "ScheduledWeight", "SparsityPenalty", "TopK", "MIN_VARIANCE", "gaussian_nll",
           "bernoulli_nll", "mean_of_prediction"]

_LOG_2PI = math.log(2 * math.pi)


@keras.saving.register_keras_serializable(package="aeservice")
class HostGlorotUniform(keras.initializers.Initializer):
    """Keras's default Dense kernel init, drawn by NumPy.

    On JAX, Keras's own initializers run an eager random op that compiles once per kernel shape:
    six compiles of ~0.3 s for one autoencoder, more than half a 100-epoch fit of digits.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = (shape[0], shape[-1]) if len(shape) > 1 else (shape[0], shape[0])
        if len(shape) > 2:  # a convolution kernel (kh, kw, in, out): fans count its window, as Keras's do
            window = int(np.prod(shape[:-2]))
            fan_in, fan_out = window * shape[-2], window * shape[-1]
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return np.random.default_rng(self.seed).uniform(-limit, limit, size=shape).astype(dtype or "float32")

    def get_config(self):
        return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="aeservice")
class HostZeros(keras.initializers.Initializer):
    """Zeros made by NumPy: Keras's `zeros` also compiles once per shape on JAX."""

    def __call__(self, shape, dtype=None):
        return np.zeros(shape, dtype=dtype or "float32")


@keras.saving.register_keras_serializable(package="aeservice", name="gelu_tanh")
def gelu_tanh(x):
    """GELU in its tanh form (as in BERT and GPT-2), which `--activation gelu` means here.

    Within 1e-3 of the erf form, and cheaper with its gradient on CPU: 100 epochs of the training
    benchmark's net on digits took 2.09 s against 2.53 s, for the same test MSE to 4 digits.
    """
    return keras.activations.gelu(x, approximate=True)


_ACTIVATIONS = {"gelu": gelu_tanh}  # names whose Keras built-in is not the one used


def dense(units: int, name: str, seed: int, activation: str | None = None, l2: float = 0.0) -> keras.layers.Dense:
    """A Dense layer with host-side init; each layer's seed comes from the model seed and its name."""
    return keras.layers.Dense(
        units, activation=_ACTIVATIONS.get(activation, activation), name=name,
        kernel_initializer=HostGlorotUniform(zlib.crc32(name.encode()) ^ int(seed)), bias_initializer=HostZeros(),
        kernel_regularizer=keras.regularizers.L2(l2) if l2 > 0 else None)


def dense_stack(x, sizes, activation: str, l2: float, prefix: str, seed: int):
    for i, size in enumerate(sizes):
        x = dense(size, f"{prefix}_{i}", seed, activation, l2)(x)
    return x


CONV_KERNEL, CONV_STRIDE = 3, 2  # each convolution halves height and width (rounding up)


def conv(filters: int, name: str, seed: int, activation: str | None = None, l2: float = 0.0,
         transposed: bool = False):
    """A 3x3 stride-2 convolution ("same" padding), or its transpose (doubles height and width),
    with the same host-side, name-seeded init as `dense`."""
    layer = keras.layers.Conv2DTranspose if transposed else keras.layers.Conv2D
    return layer(filters, CONV_KERNEL, strides=CONV_STRIDE, padding="same", name=name,
                 activation=_ACTIVATIONS.get(activation, activation),
                 kernel_initializer=HostGlorotUniform(zlib.crc32(name.encode()) ^ int(seed)),
                 bias_initializer=HostZeros(), kernel_regularizer=keras.regularizers.L2(l2) if l2 > 0 else None)


def image_dims(image_shape) -> tuple[int, int, int]:
    """(height, width, channels) of a (h, w) or (h, w, c) image shape."""
    h, w = int(image_shape[0]), int(image_shape[1])
    return h, w, int(image_shape[2]) if len(image_shape) > 2 else 1


def conv_grid(image_shape, depth: int) -> tuple[int, int]:
    """Height and width after `depth` stride-2 "same" convolutions of an image."""
    h, w, _ = image_dims(image_shape)
    for _ in range(depth):
        h, w = -(-h // CONV_STRIDE), -(-w // CONV_STRIDE)
    return h, w


def conv_stack(x, image_shape, filters, activation: str, l2: float, prefix: str, seed: int):
    """Flat rows -> images -> stride-2 convolutions -> flat features (the encoder's trunk)."""
    x = keras.layers.Reshape(image_dims(image_shape), name=f"{prefix}_image")(x)
    for i, size in enumerate(filters):
        x = conv(size, f"{prefix}_{i}", seed, activation, l2)(x)
    return keras.layers.Flatten(name=f"{prefix}_flat")(x)


def deconv_stack(z, image_shape, filters, activation: str, out_activation: str | None, l2: float, prefix: str,
                 seed: int):
    """The mirror of `conv_stack`: a dense layer to the smallest maps, transposed convolutions
    back to the image (cropped where the sides were not multiples of the strides), flat rows out.
    `filters` are the encoder's, so the decoder widens them in reverse."""
    h, w, channels = image_dims(image_shape)
    gh, gw = conv_grid(image_shape, len(filters))
    x = dense(gh * gw * filters[-1], f"{prefix}_0", seed, activation, l2)(z)
    x = keras.layers.Reshape((gh, gw, filters[-1]), name=f"{prefix}_maps")(x)
    for i, size in enumerate(reversed(filters[:-1])):
        x = conv(size, f"{prefix}_{i + 1}", seed, activation, l2, transposed=True)(x)
    x = conv(channels, f"{prefix}_out", seed, out_activation, l2, transposed=True)(x)
    extra_h, extra_w = gh * CONV_STRIDE ** len(filters) - h, gw * CONV_STRIDE ** len(filters) - w
    if extra_h or extra_w:
        x = keras.layers.Cropping2D(((extra_h // 2, extra_h - extra_h // 2), (extra_w // 2, extra_w - extra_w // 2)),
                                    name=f"{prefix}_crop")(x)
    return keras.layers.Flatten(name=f"{prefix}_flat")(x)


@keras.saving.register_keras_serializable(package="aeservice")
class Sampling(keras.layers.Layer):
    """z = mean + exp(log_var / 2) * eps: log-variance, not log-sigma (a common mix-up)."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        mean, log_var = inputs
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="aeservice")
class KLDivergence(keras.layers.Layer):
    """KL(q(z|x) || N(0, I)) per row, summed over latent units (the ELBO's own scale)."""

    def call(self, inputs):
        mean, log_var = inputs
        kl = -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
        return ops.expand_dims(kl, -1)


@keras.saving.register_keras_serializable(package="aeservice")
class ScheduledWeight(keras.layers.Layer):
    """Multiplies a per-row term by a weight that a callback changes between epochs (KL warm-up).

    The weight is a non-trainable variable of the model, so every backend carries it as state.
    """

    def build(self, input_shape):
        self.weight_now = self.add_weight(shape=(), initializer="ones", trainable=False, name="weight_now")

    def call(self, term):
        return term * self.weight_now


@keras.saving.register_keras_serializable(package="aeservice")
class SparsityPenalty(keras.layers.Layer):
    """l1 * sum|z| per row, plus weight * mean_j KL(rho || rho_hat_j) over the batch's mean codes.

    The KL term averages over units rather than summing: the sum blurred digits.
    """

    def __init__(self, l1: float = 0.0, weight: float = 0.0, target: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.l1, self.weight, self.target = float(l1), float(weight), float(target)

    def call(self, z):
        penalty = self.l1 * ops.sum(ops.abs(z), axis=-1)
        if self.weight > 0:
            rho = self.target
            rho_hat = ops.clip(ops.mean(z, axis=0), 1e-6, 1 - 1e-6)
            kl = rho * ops.log(rho / rho_hat) + (1 - rho) * ops.log((1 - rho) / (1 - rho_hat))
            penalty = penalty + self.weight * ops.mean(kl)
        return ops.expand_dims(penalty, -1)

    def get_config(self):
        return {**super().get_config(), "l1": self.l1, "weight": self.weight, "target": self.target}


@keras.saving.register_keras_serializable(package="aeservice")
class TopK(keras.layers.Layer):
    """Keeps each row's k values largest in size and zeroes the rest: a k-sparse code (Makhzani &
    Frey 2013; after a ReLU, the k largest: the TopK code of Gao et al. 2024).

    The mask comes from the indices `top_k` returns, so a row has exactly k kept units even where
    values tie (after a ReLU, kept zeros stay zero: at most k nonzero). It carries no gradient: the
    loss trains only the kept units. Exactly k at inference too, so a code is as sparse as in training.
    """

    def __init__(self, k: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.k = int(k)

    def call(self, z):
        _, kept = ops.top_k(ops.abs(z), self.k)
        mask = ops.sum(ops.one_hot(kept, ops.shape(z)[-1], dtype=z.dtype), axis=-2)
        return z * ops.stop_gradient(mask)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "k": self.k}


MIN_VARIANCE = 1e-6  # in standardized units: a floor, so exact fits do not divide by zero


def gaussian_nll(y_true, y_pred):
    """-log N(x | mean, sigma^2 I) per row, summed over features, with the optimal sigma.

    sigma^2 is the batch's own mean squared error over all features, held constant for the
    gradient: the calibrated decoder of Rybkin et al. (sigma-VAE) in closed form. As the fit
    improves sigma shrinks and reconstruction outweighs KL by itself, so beta = 1 needs no
    tuning (seeds 000 and 003, where a fixed MSE/KL ratio let KL swamp the reconstruction).
    One sigma for all features, as in the paper: with one per feature the VAE could perfect
    one feature (log sigma_j -> -inf) and give up another, and did: curve3d test MSE 1.44x
    PCA's and scurve 0.75x, against 0.14x and 0.12x shared (scripts/benchmark_quality.py).
    A learned sigma does the same in theory but moves ~lr per step: far too slowly here.
    """
    y = ops.cast(y_true, y_pred.dtype)
    sq = ops.square(y - y_pred)
    var = ops.stop_gradient(ops.mean(sq)) + MIN_VARIANCE
    return 0.5 * ops.sum(sq / var + ops.log(var) + _LOG_2PI, axis=-1)


def bernoulli_nll(y_true, y_pred):
    """Binary cross-entropy per row, summed over pixels: the likelihood for [0, 1] images."""
    p = ops.clip(y_pred, 1e-7, 1 - 1e-7)
    y = ops.cast(y_true, p.dtype)
    return -ops.sum(y * ops.log(p) + (1 - y) * ops.log(1 - p), axis=-1)


def mean_of_prediction(y_true, y_pred):
    """For outputs that already are a per-row penalty (KL, sparsity): the target is ignored."""
    return ops.mean(y_pred, axis=-1)
