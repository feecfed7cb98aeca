"""Sparse codes and the VAE's likelihood: the k-sparse code is exactly k-sparse in Keras and in its
numpy plan, before and after saving; every sparse run logs its code's sparsity; the importance-
sampled NLL of a linear-Gaussian VAE meets the exact marginal likelihood."""
from __future__ import annotations

import dataclasses

import keras
import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import small_config
from scipy.stats import multivariate_normal

from aeservice.cli import aeservice_command
from aeservice.config import ModelConfig, TrainConfig
from aeservice.errors import UserError
from aeservice.models import MODELS, check_sizes
from aeservice.models.dense import auto_k, code_metrics
from aeservice.models import keras_base
from aeservice.models.keras_base import infer
from aeservice.models.layers import TopK
from aeservice.models.plan import dense_plan
from aeservice.tracking import train_run
from aeservice.training import fit_rows, prepare


def test_top_k_keeps_exactly_the_k_largest_of_each_row():
    rng = np.random.default_rng(0)
    z = np.maximum(rng.standard_normal((200, 12)), 0).astype("float32")  # ReLU codes: some rows have few positives
    z[0] = [1.0] * 12  # ties: still exactly k kept
    out = keras.ops.convert_to_numpy(TopK(3)(z))
    positives = (z > 0).sum(axis=1)
    assert np.array_equal((out != 0).sum(axis=1), np.minimum(positives, 3))
    kept = out != 0
    assert np.array_equal(out[kept], z[kept])  # kept values unchanged
    smallest_kept = np.where(kept, out, np.inf).min(axis=1)
    assert np.all(np.where(kept, -np.inf, z).max(axis=1) <= smallest_kept)  # none dropped is larger
    assert TopK.from_config(TopK(3).get_config()).k == 3


def test_the_numpy_plan_of_a_top_k_encoder_matches_keras():
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(5, activation="relu", name="enc_0")(x)
    code = keras.layers.Dense(8, activation="relu", name="code")(h)
    net = keras.Model(x, TopK(2, name="top_k")(code))
    rows = np.random.default_rng(1).standard_normal((50, 6))
    plan = dense_plan(net)
    assert plan is not None and plan.steps[-1][2] is None and plan.steps[-1][4] == "top_k:2"
    np.testing.assert_allclose(plan(rows), infer(net, rows), rtol=1e-5, atol=1e-6)


def test_a_k_sparse_model_serves_on_numpy_before_and_after_saving(tmp_path, monkeypatch):
    # Two epochs do not beat PCA: the net is kept anyway here, as this test is about serving it.
    monkeypatch.setattr(keras_base, "clearly_negative", lambda values: True)
    prepared = prepare(small_config("sparse", latent_dim=8, k=2, epochs=2, hidden=(16,), restarts=1))
    model = MODELS["sparse"](prepared.config.model, prepared.dataset.kind)
    model.fit(prepared.split.train, prepared.split.val)
    test = prepared.split.test
    codes = model.encode(test)
    assert model.kept_ != "linear" and model.k_ == 2 and model.used_settings() == {"k_used": 2}
    assert (np.count_nonzero(codes, axis=1) <= 2).all() and model.serves_on_numpy()
    scaled = model.scaler_.transform(test)
    np.testing.assert_allclose(model.nets_.run("encoder", scaled), infer(model.encoder_, scaled), rtol=1e-4,
                               atol=1e-5)
    assert (np.count_nonzero(model._sample_latent(50, np.random.default_rng(0)), axis=1) <= 2).all()
    assert model.sample(5).shape == (5, test.shape[1])
    loaded = MODELS["sparse"].load(model.save(tmp_path / "model"))
    assert loaded.serves_on_numpy() and not loaded.nets_.is_deserialized("encoder")
    np.testing.assert_allclose(loaded.encode(test), codes, rtol=1e-5, atol=1e-6)
    keras_codes = infer(loaded.encoder_, scaled)  # the saved .keras net keeps its top-k layer
    assert (np.count_nonzero(keras_codes, axis=1) <= 2).all()


def test_the_code_metrics_and_auto_k():
    codes = np.array([[0.0, 0.5, 0.005], [0.0, 2.0, 0.0]])
    assert code_metrics(codes) == pytest.approx({"code_l0": 1.5, "code_dead_units": 2.0, "code_share_inactive": 4 / 6})
    assert [auto_k(n) for n in (1, 2, 15, 16, 32, 33)] == [0, 0, 0, 4, 8, 8]


def test_a_sparse_run_logs_its_code_sparsity(tracking_uri):
    run_id, result = train_run(prepare(small_config("sparse", latent_dim=4, k=1, epochs=2, hidden=(16,),
                                                    restarts=1)), log_artifacts=False)
    run = mlflow.get_run(run_id)
    for part in ("val", "test"):
        for name in MODELS["sparse"].extra_metrics:
            assert f"{part}_{name}" in run.data.metrics, (part, name)
    expected = 0 if result.model.kept_ == "linear" else 1  # the linear fallback is a dense code
    assert run.data.params["k_used"] == str(expected)
    if expected:
        assert run.data.metrics["test_code_l0"] <= 1


def test_k_is_checked_in_one_line():
    for k, message in ((-1, "k must be a whole number of at least 0"), (2.5, "k must be a whole number"),
                       (5, "k must be at most latent_dim (4)")):
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            TrainConfig(model=ModelConfig(model="sparse", latent_dim=4, k=k)).validate()
    with pytest.raises(UserError, match=r"k must be at most latent_dim \(2\)"):
        check_sizes(ModelConfig(model="sparse", k=3), 64, 100)  # auto latent_dim: 2
    result = CliRunner().invoke(aeservice_command, ["train", "--model", "sparse", "--latent-dim", "4", "--k", "9"])
    assert result.exit_code != 0 and "k must be at most latent_dim (4), got 9" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(aeservice_command, ["train", "--model", "sparse", "--k", "1.5"])
    assert result.exit_code != 0 and "Traceback" not in result.output and "whole number" in result.output


def _linear_gaussian_vae():
    """A VAE with no hidden layer on continuous rows: decoder x = W z + b plus N(0, diag sigma^2) noise."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2)) @ rng.standard_normal((2, 4)) * 3 + 0.5 * rng.standard_normal((300, 4)) + 7
    config = TrainConfig(model=ModelConfig(model="vae", latent_dim=2, hidden=(), epochs=40, patience=0, restarts=1,
                                           batch_size=32))
    return fit_rows(config, x), x


def test_the_importance_sampled_nll_of_a_linear_gaussian_vae_meets_the_exact_likelihood():
    model, x = _linear_gaussian_vae()
    steps = model.nets_.plan("decoder").steps
    assert len(steps) == 1 and steps[0][4] == "linear"
    _, _, kernel, bias, _ = steps[0]
    cov = kernel.T.astype(float) @ kernel + np.diag(np.exp(model.decoder_log_var_))  # p(x) = N(b, W W^T + S)
    rows = x[:100]
    exact = -np.mean(multivariate_normal(bias, cov).logpdf(model.scaler_.transform(rows))) \
        + np.sum(np.log(model.scaler_.scale_))  # back to the user's units, as the ELBO is
    estimates = {k: float(np.mean(model.importance_nll(rows, k, seed=1))) for k in (1, 10, 100, 3000)}
    gaps = {k: v - exact for k, v in estimates.items()}
    assert abs(gaps[3000]) < 0.02, (exact, estimates)
    assert gaps[1] > gaps[10] > gaps[100] - 0.01 and gaps[100] > -0.02, gaps  # a bound that tightens with K
    elbo = model.evaluation_metrics(rows, seed=1, draws=64)["elbo"]
    assert estimates[3000] <= -elbo, (estimates, elbo)
    # nll_samples sets the logged estimate; 0 turns it off
    assert "nll" in model.evaluation_metrics(rows)
    model.config = dataclasses.replace(model.config, nll_samples=0)
    assert set(model.evaluation_metrics(rows)) == {"elbo"}


def test_tune_can_minimise_the_nll_of_a_vae_only():
    from aeservice.tuning.objective import objective_spec

    spec = objective_spec("test_nll", "vae")
    assert spec.direction == "minimize" and spec.signal({"val_recon": 3.0, "val_kl": 1.5}) == 4.5
    with pytest.raises(UserError, match="objective val_nll is not logged by model ae"):
        objective_spec("val_nll", "ae")
