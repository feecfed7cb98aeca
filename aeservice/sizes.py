"""What a fit uses for each network setting the user leaves at auto.

Width, epoch cap, batch size, restarts and the step pace of the KL warm-up follow the training rows,
one rule for every data set; the hidden activation and input noise follow the data kind. The
figures behind each constant are in docs/benchmarks.md, measured with scripts/sweep_quality.py
and scripts/benchmark_quality.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aeservice.config import ModelConfig
from aeservice.data.preprocess import principal_axes
from aeservice.errors import UserError

__all__ = ["Sizes", "resolve_arch", "resolve_sizes", "fit_sizes", "unexplained_rms", "describe"]

MIN_BATCH, MAX_BATCH = 16, 512  # a few rows per step at least; beyond 512 a step costs more than it gains
BATCH_PER_SQRT_ROW = 2.0  # 64 for the benchmark's 850-1700 rows, 32 for 200, 256 for 8500
STEP_BUDGET = 10_000  # gradient steps the epoch cap allows: 500 epochs of 20 batches (digits)
MIN_EPOCHS, MAX_EPOCHS = 50, 500  # early stopping ends most fits long before the cap
# The hidden layers do not follow the rows: measured both ways, neither paid. Narrower nets did
# worse on 200-300 rows (curve3d VAE 3.3x PCA with 32,16 against 0.76x; early stopping already
# guards small data); 512,256 took 3x the time on 8500 and 17000 curve3d rows for AE 0.047x
# against 0.054x and 0.049x against 0.048x (README, Quality). 256 is wide enough for 8x8 digits.
HIDDEN = (256, 128)
# Images (many correlated [0, 1] features): GELU hidden layers, and training inputs corrupted by
# Gaussian noise (a denoising AE) at 0.7x the per-feature RMS that a PCA code of the same size
# leaves unexplained: detail the code cannot carry anyway. Medians of seeds 0-2 on digits, AE test
# MSE / PCA's at latent 2 / 10 / 32: relu 0.71x / 0.60x / 1.72x; gelu 0.64x / 0.52x / 1.30x; gelu
# + noise 0.1 at every size 0.58x / 0.50x / 1.72x; gelu + scaled noise (0.16 / 0.10 / 0.035)
# 0.57x / 0.50x / 1.31x. Continuous data keeps relu without noise: smooth activations start
# near-linear and left the 1-D curves there (scurve AE 0.05x PCA against 0.02x, VAE 1.5x against
# 0.19x). The VAE's own sampling is its noise.
IMAGE_ACTIVATION, CONTINUOUS_ACTIVATION = "gelu", "relu"
# Convolutional nets (--arch conv): each layer a 3x3 convolution of stride 2, so two of them take
# 28x28 images to 7x7 maps; the decoder mirrors them with transposed convolutions. Filter counts
# as in keras-io's VAE example; `--hidden` gives others.
CONV_FILTERS = (32, 64)
# auto arch is dense: on MNIST (7000 training images, latent 16, 2 CPU cores, JAX) the conv AE
# reached 0.394x PCA's test MSE against dense's 0.453x, in 1200 s against 138 s: 13% lower
# error for 8.7x the time (docs/images.md). `--arch conv` is a word away where that is worth it
# (a GPU); a rule that convolves by default must pay for itself first.
AUTO_ARCH = "dense"
# The KL warm-up is counted in epochs, but what it needs is gradient steps: with 60 rows an
# epoch is 3 steps, and 20 epochs of warm-up would be over in 60 steps where 1000 rows get 220.
# An epoch of fewer than PACE_STEPS steps therefore counts as a fraction of one. Patience does
# not stretch: its default (100 epochs, ModelConfig) already gives 60 rows the 300 steps that
# were measured to let small fits climb out of their start, and stretched further it let nets
# fit 42 rows until one that lost to PCA on new rows passed the check on 9 validation rows
# (curve3d, 60 rows, seed 0: 1.22x PCA; docs/benchmarks.md).
PACE_STEPS = 10  # steps per epoch of 1000 rows' training part (700 rows, batch 64: 11)
# Seeded restarts: about RESTART_ROWS / training rows fits (at most MAX_RESTARTS), the one with
# the best validation loss kept; a fit of 42 or 140 rows fails on a third of the seeds or more,
# and restarts cost little there. At any size, more fits follow (up to MAX_RESTARTS in all)
# while none has beaten the linear model: one fit of 700 rows of the 3-D sheet with a sparse
# ReLU code of 2 units lost to PCA on 3 seeds of 5. An explicit --restarts N makes N fits.
RESTART_ROWS, MAX_RESTARTS = 1000, 4
NOISE_PER_UNEXPLAINED = 0.7


@dataclass(frozen=True)
class Sizes:
    """What one fit uses, with auto resolved (saved with the model, logged as *_used params)."""

    hidden: tuple[int, ...]
    epochs: int
    batch_size: int
    activation: str = CONTINUOUS_ACTIVATION  # models saved before it was a setting used relu
    input_noise: float = 0.0
    patience: int = 0  # epochs; 0: no early stopping
    kl_warmup: int = 0
    restarts: int = 1  # fits always made
    max_restarts: int = 1  # fits made while none beats the linear model (see KerasAutoencoder._fit)
    arch: str = "dense"  # "dense", or "conv": `hidden` are then filter counts (models saved before: dense)


def _power_of_two(value: float, low: int, high: int) -> int:
    """value rounded to a power of two in log scale, within [low, high]."""
    return int(min(high, max(low, 2 ** round(math.log2(max(value, 1.0))))))


def unexplained_rms(x: np.ndarray, latent: int, seed: int = 0) -> float:
    """Per-feature RMS that the best linear code of `latent` numbers leaves out (PCA's residual),
    estimated on at most ESTIMATE_ROWS rows."""
    variances = principal_axes(x, seed)[1]
    return float(np.sqrt(float(variances[latent:].sum()) / x.shape[1]))


def resolve_arch(config: ModelConfig, data_kind: str, image_shape: tuple[int, ...] | None) -> str:
    """dense or conv: as given, else AUTO_ARCH. A given conv needs images of known shape: the
    one-line error says so (before any run starts, as `training.prepare` asks here first)."""
    known = data_kind == "image" and image_shape is not None
    if config.arch == "conv" and not known:
        raise UserError("--arch conv needs images of known height and width (an image file, a 2-D or 3-D array per "
                        "row, or a square pixel count); use --arch dense")
    return AUTO_ARCH if config.arch == "auto" else config.arch


def resolve_sizes(config: ModelConfig, n_rows: int, data_kind: str = "continuous",
                  unexplained: float = 0.0, denoises: bool = False,
                  image_shape: tuple[int, ...] | None = None) -> Sizes:
    """The config's sizes, with each one left at None (auto) chosen from the training rows.

    Batch: about 2 * sqrt(rows), so steps per epoch also grow like sqrt(rows): small data gets
    small batches (more, noisier steps: better on 200-300 rows), large data fewer steps per
    pass (30% less time on 8500 rows). Epochs: a cap of STEP_BUDGET steps, so a pass over a big
    data set is not repeated 500 times. Width: 256,128 whatever the rows (see HIDDEN).
    Activation and input noise: by data kind (see IMAGE_ACTIVATION), the noise only for a kind
    that `denoises` (`Autoencoder.denoises_images`); it scales with `unexplained` (see
    `fit_sizes`). Explicit values always win.
    """
    batch = config.batch_size or _power_of_two(BATCH_PER_SQRT_ROW * math.sqrt(n_rows), MIN_BATCH, MAX_BATCH)
    steps = max(1, math.ceil(n_rows / min(batch, max(n_rows, 1))))
    epochs = config.epochs or int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(STEP_BUDGET / steps))))
    arch = resolve_arch(config, data_kind, image_shape)
    hidden = tuple(config.hidden) if config.hidden is not None else (CONV_FILTERS if arch == "conv" else HIDDEN)
    image = data_kind == "image"
    activation = config.activation or (IMAGE_ACTIVATION if image else CONTINUOUS_ACTIVATION)
    noise = config.input_noise
    if noise is None:
        noise = round(NOISE_PER_UNEXPLAINED * unexplained, 4) if denoises and image else 0.0
    pace = max(1.0, PACE_STEPS / steps)  # epochs that make one epoch's worth of steps (the KL warm-up)
    restarts = config.restarts or int(min(MAX_RESTARTS, max(1, round(RESTART_ROWS / max(n_rows, 1)))))
    return Sizes(hidden, epochs, batch, activation, float(noise), config.patience,
                 math.ceil(config.kl_warmup * pace), restarts, config.restarts or MAX_RESTARTS, arch)


def fit_sizes(config: ModelConfig, x: np.ndarray, data_kind: str, latent: int, denoises: bool = False,
              image_shape: tuple[int, ...] | None = None) -> Sizes:
    """`resolve_sizes` for these scaled training rows: auto input noise needs the rows themselves."""
    needed = config.input_noise is None and denoises and data_kind == "image"
    return resolve_sizes(config, len(x), data_kind, unexplained_rms(x, latent) if needed else 0.0, denoises,
                         image_shape)


def describe(denoising_kinds: tuple[str, ...]) -> dict[str, str]:
    """The rule in words, for `--help`: one phrase per size (`denoising_kinds` get input noise)."""
    return {"arch": f"{AUTO_ARCH} (conv: 13% lower MNIST error for 8.7x the CPU time)",
            "hidden": ",".join(map(str, HIDDEN)) + " (measured: neither narrower for few rows nor wider for many paid)",
            "batch_size": f"~{BATCH_PER_SQRT_ROW:g} x sqrt(training rows) as a power of two in {MIN_BATCH}-{MAX_BATCH}",
            "epochs": f"{STEP_BUDGET} steps' worth, {MIN_EPOCHS}-{MAX_EPOCHS}",
            "activation": f"{IMAGE_ACTIVATION} for image data, {CONTINUOUS_ACTIVATION} otherwise",
            "restarts": f"about {RESTART_ROWS} / training rows, 1-{MAX_RESTARTS}, and more (up to "
                        f"{MAX_RESTARTS}) while no fit beats the linear model",
            "pace": f"epochs of fewer than {PACE_STEPS} steps (small data) count as a fraction of one",
            "input_noise": f"for image data with {' or '.join(denoising_kinds)}, {NOISE_PER_UNEXPLAINED:g}x the "
                           "per-feature RMS a PCA code of the same size leaves unexplained; 0 otherwise"}
