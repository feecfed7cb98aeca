"""What a fit uses for each setting left at auto (aeservice.sizes): sizes from the training rows,
activation and input noise from the data kind and the kind's class."""
from __future__ import annotations

import math

import numpy as np
import pytest

from aeservice.config import DataConfig, ModelConfig
from aeservice.data import load_dataset
from aeservice.models import MODELS
from aeservice.sizes import Sizes, fit_sizes, resolve_sizes, unexplained_rms


def test_sizes_left_at_auto_scale_with_the_training_rows():
    """Epoch cap and batch follow the rows; the benchmark's digits keep the sizes they
    were measured with. The width does not: narrower (few rows) and wider (many) measured no
    better (README, Quality)."""
    few, digits, many = (resolve_sizes(ModelConfig(), n) for n in (200, 1221, 100_000))
    assert digits == Sizes((256, 128), 500, 64, "relu", 0.0, patience=ModelConfig().patience, kl_warmup=20, restarts=1,
                            max_restarts=4)
    assert few.batch_size < digits.batch_size < many.batch_size
    assert few.hidden == digits.hidden == many.hidden
    assert many.epochs < digits.epochs  # a fixed budget of steps, not 500 passes over 100k rows


def test_explicit_sizes_win_over_the_rows():
    given = ModelConfig(model="ae", hidden=(8,), epochs=3, batch_size=7, activation="elu", input_noise=0.0)
    assert resolve_sizes(given, 100_000, "image") == Sizes((8,), 3, 7, "elu", 0.0, ModelConfig().patience, 20, 1, 4)
    assert resolve_sizes(ModelConfig(hidden=()), 100_000).hidden == ()  # "none": no hidden layer
    given = resolve_sizes(ModelConfig(restarts=2, patience=5, kl_warmup=0), 42)
    assert (given.restarts, given.max_restarts) == (2, 2)  # exactly the fits asked for


def test_small_data_gets_restarts_and_a_warm_up_in_steps_not_epochs():
    """42 training rows make 3 steps an epoch: the warm-up stretches to the steps 10-step epochs
    would give it, and several seeded fits are made; from 1000 rows up, one fit. Patience counts
    epochs at any size: 100 of them are the 300 steps small fits need."""
    tiny, small, big = (resolve_sizes(ModelConfig(), n) for n in (42, 140, 1400))
    assert (tiny.batch_size, tiny.patience, tiny.kl_warmup, tiny.restarts) == (16, 100, 67, 4)
    assert small.patience == big.patience == ModelConfig().patience
    assert tiny.patience * math.ceil(42 / tiny.batch_size) >= 300
    assert (big.patience, big.kl_warmup, big.restarts) == (ModelConfig().patience, 20, 1)
    assert resolve_sizes(ModelConfig(patience=0), 42).patience == 0  # off stays off


@pytest.mark.parametrize("kind, noise", [("ae", 0.14), ("sparse", 0.14), ("vae", 0.0), ("pca", 0.0)])
def test_images_get_gelu_and_denoising_continuous_data_relu_without_noise(kind, noise):
    """On digits, gelu + input noise took the AE from 0.71x/0.60x PCA's test MSE to
    0.57x/0.50x at latent 2/10; on the 1-D curves gelu stayed near-linear (README, Quality)."""
    config, denoises = ModelConfig(model=kind), MODELS[kind].denoises_images  # the kind's class says
    image = resolve_sizes(config, 1221, "image", unexplained=0.2, denoises=denoises)
    continuous = resolve_sizes(config, 1221, "continuous", unexplained=0.2, denoises=denoises)
    assert (image.activation, image.input_noise) == ("gelu", noise)
    assert (continuous.activation, continuous.input_noise) == ("relu", 0.0)


def test_unexplained_rms_is_what_pca_leaves_and_the_noise_shrinks_as_the_code_grows():
    from sklearn.decomposition import PCA

    x = load_dataset(DataConfig(dataset="digits"), 0).x / 16.0
    for latent in (2, 10, 32):
        pca = PCA(latent).fit(x)
        residual = np.mean((x - pca.inverse_transform(pca.transform(x))) ** 2)  # divides by rows, not rows - 1
        assert unexplained_rms(x, latent) ** 2 == pytest.approx(residual * len(x) / (len(x) - 1), rel=1e-6)
    ae = MODELS["ae"].denoises_images
    noise = [fit_sizes(ModelConfig(model="ae"), x, "image", latent, ae).input_noise for latent in (2, 10, 32)]
    assert noise[0] > noise[1] > noise[2] > 0
    assert fit_sizes(ModelConfig(model="ae", input_noise=0.3), x, "image", 2, ae).input_noise == 0.3  # given wins
    assert fit_sizes(ModelConfig(model="ae"), x, "continuous", 2, ae).input_noise == 0.0
