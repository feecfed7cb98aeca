"""The behaviours behind the quality benchmark (scripts/benchmark_quality.py), pinned small and fast.

Default settings unless a test says otherwise: these are the seed problems that must not return.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest

from aeservice.config import DataConfig, ModelConfig, TrainConfig
from aeservice.data import synthetic
from aeservice.models.layers import gaussian_nll
from aeservice.models.mixture import fit_mixture, sample_mixture
from aeservice.training import fit_and_evaluate, fit_rows, prepare, used_params


def _defaults(kind: str, dataset: str, latent_dim: int, **model_kw) -> TrainConfig:
    return TrainConfig(DataConfig(dataset=dataset), ModelConfig(model=kind, latent_dim=latent_dim, **model_kw),
                       experiment="pytest")


def test_calibrated_decoder_shares_one_variance_across_features():
    """Per-feature variances let the VAE perfect one feature and give up another (curve3d VAE
    1.4x PCA's test MSE); one shared variance makes the term depend on the total error only."""
    x = np.zeros((4, 3), "float32")
    lopsided = np.array([[0.3, 0.0, 0.0]] * 4, "float32")
    even = np.full((4, 3), 0.3 / np.sqrt(3), "float32")
    np.testing.assert_allclose(np.asarray(gaussian_nll(x, lopsided)), np.asarray(gaussian_nll(x, even)), rtol=1e-5)


def _vae_and_pca_test_mse(make, noise: float, latent: int) -> tuple[float, float]:
    """The benchmark's setting: 1000 training rows with defaults, fresh test rows, PCA alike."""
    from sklearn.decomposition import PCA

    train, _ = make(1000, noise, np.random.default_rng(0))
    test, _ = make(2000, noise, np.random.default_rng([0, 1]))
    model = fit_rows(TrainConfig(DataConfig(), ModelConfig(model="vae", latent_dim=latent)), train)
    pca = PCA(latent).fit(train)
    return (float(np.mean((test - model.reconstruct(test)) ** 2)),
            float(np.mean((test - pca.inverse_transform(pca.transform(test))) ** 2)))


def test_vae_on_curve3d_reconstructs_better_than_pca():
    """Seed 000: its VAE came out ~5x worse than PCA. In raw units (PCA fitted unscaled, unlike the
    benchmark) it measured 0.55x here; a margin for the spread over initial weights."""
    vae, pca = _vae_and_pca_test_mse(synthetic.curve3d, 0.1, 2)
    assert vae < 0.8 * pca, (vae, pca)


@pytest.mark.xfail(keras.backend.backend() == "tensorflow", strict=False,
                   reason="on TensorFlow seed 0's 1-D code has folded (1.7x PCA): README, Quality; "
                          "on the default backend this is a plain test")
def test_vae_on_the_s_curve_reconstructs_better_than_pca():
    """Seed 003: a 1-D curve, latent 1."""
    vae, pca = _vae_and_pca_test_mse(synthetic.scurve, 0.01, 1)
    assert vae < 0.5 * pca, (vae, pca)


def test_vae_samples_of_a_raw_normal_match_its_mean_and_spread():
    """Seed 001: N(100, 10) in raw units; samples must have its mean and spread."""
    prepared = prepare(_defaults("vae", "normal1d", 1))
    model = fit_and_evaluate(prepared).model
    data, drawn = prepared.split.train[:, 0], model.sample(5000, seed=0)[:, 0]
    assert abs(drawn.mean() - data.mean()) < 1.0, (drawn.mean(), data.mean())
    assert abs(drawn.std() / data.std() - 1) < 0.10, (drawn.std(), data.std())


def test_mixture_on_codes_finds_two_clusters_and_samples_them():
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.normal(-3, 0.5, (300, 2)), rng.normal(3, 0.5, (300, 2))])
    state = fit_mixture(codes, seed=0)
    assert len(state["mix_weights"]) >= 2
    drawn = sample_mixture(state, 4000, np.random.default_rng(1))
    assert np.mean(np.abs(drawn[:, 0]) < 1.5) < 0.05  # almost nothing between the clusters
    np.testing.assert_allclose(drawn.mean(axis=0), codes.mean(axis=0), atol=0.3)
    np.testing.assert_allclose(drawn.std(axis=0), codes.std(axis=0), rtol=0.1)


def test_sparse_code_has_exact_zeros_the_plain_code_lacks(nets_kept):
    """Seed 002: the sparse AE's ReLU code with L1 switches units off (the benchmark: 0.30 of
    digits codes below 0.01 at latent 32, at 1.13x the plain AE's test MSE)."""
    shares = {}
    for kind in ("ae", "sparse"):
        prepared = prepare(_defaults(kind, "digits", 16, hidden=(64,), epochs=30, patience=0))
        model = fit_and_evaluate(prepared).model
        shares[kind] = float(np.mean(np.abs(model.encode(prepared.split.test)) < 0.01))
    assert shares["sparse"] > 0.15 and shares["ae"] < 0.05, shares


def test_fit_rows_holds_out_the_validation_share():
    x = np.random.default_rng(0).normal(size=(200, 3))
    cfg = TrainConfig(DataConfig(val_fraction=0.25), ModelConfig(model="pca", latent_dim=2))
    model = fit_rows(cfg, x)
    assert model.n_features_ == 3 and model.history_["val_loss"][0] > 0
    with pytest.raises(Exception, match="too few rows"):
        fit_rows(cfg, x[:2])


def test_image_defaults_beat_a_plain_relu_ae_on_digits():
    """GELU layers and input noise scaled to what PCA leaves unexplained took the digits
    AE from 0.71x to 0.56x PCA's test MSE at latent 2 (the benchmark's split: first 1437 images
    train, last 360 test)."""
    from sklearn.datasets import load_digits

    x = load_digits().data
    train, test = x[:1437], x[1437:]
    mse = {}
    for name, extra in (("defaults", {}), ("relu", {"activation": "relu", "input_noise": 0.0})):
        model = fit_rows(TrainConfig(DataConfig(), ModelConfig(model="ae", latent_dim=2, **extra)), train, "image")
        assert (model.sizes_.activation, model.sizes_.input_noise > 0) == (
            ("gelu", True) if name == "defaults" else ("relu", False))
        mse[name] = float(np.mean((test - model.reconstruct(test)) ** 2))
    assert mse["defaults"] < 0.9 * mse["relu"], mse


def _cli_split_ratio(kind: str, case: str, rows: int, latent: int, seed: int):
    """The way `aeservice train --dataset CASE --n-samples ROWS --seed S` fits (the CLI's split,
    defaults), scored on fresh rows of the generator against `pca` on the same split."""
    make, noise = {"scurve": (synthetic.scurve, 0.01), "curve3d": (synthetic.curve3d, 0.1),
                   "two_gaussians": (synthetic.two_gaussians, 1.0)}[case]
    fresh, _ = make(2000, noise, np.random.default_rng([seed, 1]))
    errors = {}
    for name in ("pca", kind):
        config = TrainConfig(DataConfig(dataset=case, n_samples=rows), ModelConfig(model=name, latent_dim=latent,
                                                                                  seed=seed), experiment="pytest")
        prepared = prepare(config)
        model = fit_and_evaluate(prepared).model
        scale = prepared.split.train.std(axis=0)
        errors[name] = float(np.mean(((fresh - model.reconstruct(fresh)) / scale) ** 2))
    return errors[kind] / errors["pca"], model


@pytest.mark.parametrize("case, rows, latent", [("scurve", 200, 1), ("curve3d", 60, 2)])
def test_the_vae_on_small_data_does_not_lose_to_pca(case, rows, latent):
    """The S-curve at 200 rows and the 3-D sheet at 60 (the size its users had): restarts of a
    plain AE start, then the VAE from it, or PCA as a VAE where no net clearly wins."""
    for seed in (0, 1, 2):
        ratio, model = _cli_split_ratio("vae", case, rows, latent, seed)
        assert ratio <= 1.001, (seed, ratio, model.kept_)


def test_a_net_that_cannot_beat_pca_on_validation_gives_way_to_it():
    """Two Gaussian clusters of 60 rows at latent 1: the nets do not beat PCA on the validation
    rows by more than the noise, so the AE keeps PCA's solution, exactly, as nets without a
    hidden layer, and so does the sparse AE (its ReLU code shifted positive)."""
    for kind in ("ae", "sparse"):
        ratio, model = _cli_split_ratio(kind, "two_gaussians", 60, 1, 0)
        assert model.kept_ == "linear" and model.sizes_.hidden == (), model.kept_
        assert abs(ratio - 1.0) < 1e-4, ratio
        assert model.sizes_.restarts == 4  # 42 training rows: several seeded fits were tried first


@pytest.mark.parametrize("kind, seed", [("ae", 4), ("sparse", 1)])
def test_a_net_no_better_than_pca_on_its_own_training_rows_gives_way_to_it(kind, seed, tmp_path):
    """Two Gaussian clusters of 60 rows as a CSV file: these nets beat PCA on the 9 validation
    rows by chance, but not on the 42 they were fitted to (1.18x and 0.999x PCA's error there),
    and lost on new rows (1.13x, 1.03x). A net must win beyond noise on both, so PCA is kept."""
    import pandas as pd

    x, _ = synthetic.two_gaussians(60, 1.0, np.random.default_rng(seed))
    path = tmp_path / "two_gaussians.csv"
    pd.DataFrame(x, columns=["x0", "x1"]).to_csv(path, index=False)
    config = TrainConfig(DataConfig(dataset=str(path)), ModelConfig(model=kind, latent_dim=1, seed=seed),
                         experiment="pytest")
    model = fit_and_evaluate(prepare(config)).model
    assert model.kept_ == "linear", model.kept_
    assert model.sizes_.hidden == ()


def test_a_gain_counts_only_beyond_its_standard_error():
    from aeservice.models.keras_base import clearly_negative

    assert clearly_negative([-1.0, -1.1, -0.9])
    assert not clearly_negative([-1.0, 1.0, -0.2])  # mean -0.07, standard error 0.58
    assert not clearly_negative([0.01, 0.02]) and clearly_negative([-0.5])


def test_data_the_code_holds_exactly_fits_no_net():
    """One feature and a code of one: PCA reconstructs every row exactly, no net could beat it,
    so none is fitted (it took 4 restarts to the epoch cap), and the run says so."""
    for kind in ("ae", "vae"):
        result = fit_and_evaluate(prepare(_defaults(kind, "normal1d", 1)))
        model = result.model
        assert (model.kept_, model.restart_scores_, result.history) == ("linear", [], {})
        assert used_params(model)["restarts_used"] == 0 and used_params(model)["epochs_trained"] == 0
        assert result.metrics["test_mse"] < 1e-6
