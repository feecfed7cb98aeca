"""Every kind behind one interface: shapes, units, persistence, seeded sampling, quality."""
from __future__ import annotations


import keras
import numpy as np
import pytest
from conftest import small_config

from aeservice.config import DataConfig, ModelConfig, TrainConfig
from aeservice.data import synthetic
from aeservice.errors import UserError
from aeservice.models import MODELS, load_model
from aeservice.models import fused as fused_module
from aeservice.models.fused import compile_options, fuse_epochs
from aeservice.sizes import resolve_sizes, unexplained_rms
from aeservice.training import fit_and_evaluate, prepare, prepared_sizes, used_params


@pytest.fixture(scope="module", params=tuple(MODELS))
def trained(request):
    prepared = prepare(small_config(request.param, dataset="curve3d"))
    return prepared, fit_and_evaluate(prepared)


def test_interface_shapes_and_units(trained):
    prepared, result = trained
    model, test = result.model, prepared.split.test
    z = model.encode(test)
    assert z.shape == (len(test), 2)
    assert model.decode(z).shape == test.shape
    rec = model.reconstruct(test)
    # the score: squared errors in scaled units, each feature's divided by its mean on the training rows
    scaled_errors = ((test - rec) / model.scaler_.scale_) ** 2
    np.testing.assert_allclose(model.score(test), np.mean(scaled_errors / model.error_scale_, axis=1), rtol=1e-6)
    # outputs are in the data's units, not standardized ones
    assert abs(rec.mean(axis=0) - test.mean(axis=0)).max() < 0.5 * test.std(axis=0).max()
    assert set(result.metrics) >= {"val_mse", "test_mse", "explained_variance"}
    assert ("test_elbo" in result.metrics) == (model.kind == "vae")


def test_each_class_declares_the_terms_and_metrics_it_logs(trained):
    """What tune's objectives, the loss plot and the comparison read from the class is what a fit logs."""
    model, result = trained[1].model, trained[1]
    assert set(result.history) == {p + t for p in ("", "val_") for t in ("loss", *model.loss_terms)}
    own = {k[len("test_"):] for k in result.metrics if k.startswith("test_")} - {"mse"}
    assert own == set(model.extra_metrics)
    assert (len(result.history["loss"]) > 1) == model.trains_in_epochs  # three epochs, or one fit


def test_a_kind_logs_its_own_used_settings_and_says_how_it_fits(trained):
    model = trained[1].model
    used = used_params(model)
    assert ("kl_warmup_used" in used) == (model.kind == "vae") and set(model.used_settings()) <= set(used)
    assert bool(type(model).fit_note) == (model.kind == "vae")  # its plain AE start, in train's announce line


def test_same_seed_same_samples(trained):
    model = trained[1].model
    np.testing.assert_array_equal(model.sample(7, seed=5), model.sample(7, seed=5))
    assert not np.array_equal(model.sample(7, seed=5), model.sample(7, seed=6))
    assert model.sample(7, seed=5).shape == (7, 3)


def test_save_load_round_trip(trained, tmp_path):
    prepared, result = trained
    model, test = result.model, prepared.split.test
    loaded = load_model(model.save(tmp_path / "m"))
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded.encode(test), model.encode(test), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.reconstruct(test), model.reconstruct(test), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(loaded.sample(4, seed=1), model.sample(4, seed=1))


def test_wrong_widths_are_user_errors(trained):
    model = trained[1].model
    with pytest.raises(UserError, match="data rows must have 3 column"):
        model.encode(np.zeros((2, 5)))
    with pytest.raises(UserError, match="latent rows must have 2 column"):
        model.decode(np.zeros((2, 3)))


def test_pca_latent_dim_above_feature_count_is_refused():
    with pytest.raises(UserError, match="at most the feature count"):
        prepare(small_config("pca", dataset="curve3d", latent_dim=4))


def test_latent_dim_below_one_is_refused():
    with pytest.raises(UserError, match="latent_dim must be at least 1"):
        prepare(small_config("ae", latent_dim=0))


def test_ae_samples_match_a_raw_normal_distribution():
    """Seed 001: N(100, 10) in raw units; sample must give new data with that distribution."""
    cfg = TrainConfig(DataConfig(dataset="normal1d"), ModelConfig(model="ae", epochs=40, hidden=(32,), patience=0))
    result = fit_and_evaluate(prepare(cfg))
    drawn = result.model.sample(2000, seed=0)[:, 0]
    assert abs(drawn.mean() - 100) < 1.5
    assert abs(drawn.std() - 10) < 1.5
    assert result.metrics["test_mse"] < 10.0  # vs 100 for predicting the mean


def test_vae_image_samples_stay_in_pixel_range():
    result = fit_and_evaluate(prepare(small_config("vae")))
    drawn = result.model.sample(20, seed=0)
    assert drawn.shape == (20, 64) and drawn.min() >= 0 and drawn.max() <= 1


def test_digits_quality_every_kind_beats_the_mean_and_ae_beats_pca():
    """The issue's bar: every kind below predicting the mean; AE below PCA at latent size 2."""
    scores = {}
    for kind in MODELS:
        cfg = TrainConfig(DataConfig(dataset="digits"),
                          ModelConfig(model=kind, latent_dim=2, epochs=40, patience=0))
        prepared = prepare(cfg)
        result = fit_and_evaluate(prepared)
        split = prepared.split
        mean_mse = float(np.mean((split.test - split.train.mean(axis=0)) ** 2))
        scores[kind] = result.metrics["test_mse"]
        assert scores[kind] < mean_mse, (kind, scores[kind], mean_mse)
    assert scores["ae"] < scores["pca"], scores


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="epochs are fused on JAX only")
@pytest.mark.parametrize("kind, extra", [("ae", {}), ("vae", {}), ("sparse", {"input_noise": 0.2, "activation": "gelu"})])
def test_fused_epochs_train_exactly_as_keras_fit_does(kind, extra, monkeypatch):
    """One compiled call per epoch must not change a number: same history, same early stop.

    The VAE samples in training and validation, and input noise draws in training, so their seed
    state must move as under `fit`; patience 2 with a short warm-up makes early stopping and the
    learning-rate halving act.
    """
    cfg = small_config(kind, dataset="curve3d", epochs=12, patience=2, kl_warmup=2, batch_size=48, **extra)

    def history():
        result = fit_and_evaluate(prepare(cfg))
        return result.model.history_, result.model.reconstruct(np.ones((2, 3)))

    fused, fused_out = history()
    monkeypatch.setattr(fused_module, "fuse_epochs", lambda model, validation=None: False)  # read at each fit
    monkeypatch.setattr(fused_module, "compile_options", lambda n_rows, batch_size, convolutional=False: {})
    plain, plain_out = history()
    assert fused.keys() == plain.keys() and "val_loss" in fused
    for key in plain:
        np.testing.assert_allclose(fused[key], plain[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(fused_out, plain_out, rtol=1e-5)


def test_fused_epochs_are_installed_on_jax_only():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse", **compile_options(100, 32))
    assert fuse_epochs(model) == (keras.backend.backend() == "jax")
    if keras.backend.backend() == "jax":  # 4 batches of 32, 32, 32, 4 rows: one execution per epoch
        assert model.steps_per_execution == 4
        x = np.random.default_rng(0).standard_normal((100, 3)).astype("float32")
        logs = model.fit(x, x[:, :2], epochs=2, batch_size=32, verbose=0).history
        assert len(logs["loss"]) == 2 and logs["loss"][1] < logs["loss"][0]


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="epochs are fused on JAX only")
def test_a_large_epoch_is_stacked_in_pieces_with_the_same_result(monkeypatch):
    """Big data sets are stacked a few batches at a time (bounded memory); numbers stay the same."""
    from aeservice.models import fused

    cfg = small_config("ae", dataset="curve3d", epochs=3, batch_size=32)
    whole = fit_and_evaluate(prepare(cfg)).model.history_
    monkeypatch.setattr(fused, "_MAX_STACK_BYTES", 3 * 32 * 3 * 4 * 2)  # 3 batches of x and target
    pieces = fit_and_evaluate(prepare(cfg)).model.history_
    for key in whole:
        np.testing.assert_allclose(pieces[key], whole[key], rtol=1e-5, err_msg=key)


def test_input_noise_trains_the_net_but_never_reaches_the_saved_encoder(tmp_path):
    prepared = prepare(small_config("ae", hidden=None, batch_size=None, epochs=10))  # digits: an image set
    model = fit_and_evaluate(prepared).model
    train = model.scaler_.transform(prepared.split.train)
    assert model.kept_ == "restart 1"  # the net, not the linear model: it beats it within 10 epochs
    assert model.sizes_.activation == "gelu"
    assert model.sizes_.input_noise == pytest.approx(0.7 * unexplained_rms(train, 2), abs=1e-4)
    assert model.sizes_.input_noise > 0
    assert [layer.activation.__name__ for layer in model.encoder_.layers[1:3]] == ["gelu_tanh", "gelu_tanh"]
    assert not any("noise" in layer.name for net in (model.encoder_, model.decoder_) for layer in net.layers)
    x = prepared.split.test[:5]
    np.testing.assert_array_equal(model.encode(x), model.encode(x))  # deterministic at inference
    assert model.freeze() == {"encoder_": True, "decoder_": True}  # gelu has a numpy plan
    loaded = load_model(model.save(tmp_path / "m"))
    assert loaded.sizes_ == model.sizes_
    np.testing.assert_allclose(loaded.encode(x), model.encode(x), rtol=1e-5)


def test_unknown_activation_and_negative_noise_are_user_errors():
    with pytest.raises(UserError, match="activation must be one of"):
        small_config("ae", activation="swish2").validate()
    with pytest.raises(UserError, match="input_noise must be non-negative"):
        small_config("ae", input_noise=-0.1).validate()


def test_a_model_keeps_the_sizes_it_resolved_through_save_and_load(tmp_path, nets_kept):
    prepared = prepare(small_config("ae", hidden=None, batch_size=None))
    model = fit_and_evaluate(prepared).model
    assert model.sizes_ == prepared_sizes(prepared)  # what `train` announces before the fit
    assert model.sizes_.hidden == (256, 128) and model.sizes_.epochs == 3  # epochs given: it wins
    assert [layer.units for layer in model.encoder_.layers[1:]] == [256, 128, 2]
    assert load_model(model.save(tmp_path / "m")).sizes_ == model.sizes_


def test_a_relu_code_starts_with_every_unit_active_on_the_training_rows():
    """A ReLU code unit that is off for every row gets no gradient and stays dead: with Keras's
    zero bias, units started on for a minority of the 3-D sheet's rows, and one of two died. The
    sparse AE's code bias therefore starts so that each unit is on for every training row."""
    from aeservice.models.dense import SparseAutoencoder

    x = synthetic.curve3d(2000, 0.1, np.random.default_rng(0))[0]
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype("float32")
    model = SparseAutoencoder(ModelConfig(model="sparse", latent_dim=2, seed=0))
    model.n_features_, model.latent_dim_, model.init_seed_ = 3, 2, 0
    model.sizes_ = resolve_sizes(model.config, len(x))
    model._build()
    on_by_default = (np.asarray(model.encoder_(x)) > 0).mean(axis=0)
    start = model._start_weights(x)
    model.encoder_.get_layer("code").set_weights(start["code"])
    codes = np.asarray(model.encoder_(x))
    assert on_by_default.min() < 0.5, on_by_default  # what the start is for: zero bias leaves units mostly off
    assert (codes > 0).all(), (codes > 0).mean(axis=0)
    assert SparseAutoencoder(ModelConfig(model="sparse", sparsity_weight=0.1))._start_weights(x) == {}  # sigmoid code
