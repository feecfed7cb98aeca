"""FrozenNets on its own: small Keras nets, no training. Plans are checked, kept only for the net
they were made from, saved with their check, and a loaded net is deserialized only when needed."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import small_config

from aeservice.models.dense import DenseAutoencoder
from aeservice.models.frozen import FrozenNets, infer


def _net(width_in: int, width_out: int, seed: int, *middle) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = keras.Input((width_in,))
    h = keras.layers.Dense(4, activation="relu")(x)
    for layer in middle:
        h = layer(h)
    return keras.Model(x, keras.layers.Dense(width_out)(h))


def _nets(*decoder_middle) -> FrozenNets:
    nets = FrozenNets()
    nets.set("encoder", _net(5, 2, 0))
    nets.set("decoder", _net(2, 5, 1, *decoder_middle))
    return nets


X = np.random.default_rng(0).standard_normal((7, 5))


def test_plans_answer_as_the_nets_do_and_a_replaced_net_loses_its_plan():
    nets = _nets()
    assert nets.planned() == {"encoder": False, "decoder": False}
    assert nets.freeze() == {"encoder": True, "decoder": True}
    np.testing.assert_allclose(nets.run("encoder", X), infer(nets.keras_net("encoder"), X), rtol=1e-5, atol=1e-6)
    new = _net(5, 2, 7)
    nets.set("encoder", new)  # a refit's new net: the old plan must not answer for it
    assert nets.planned() == {"encoder": False, "decoder": True}
    np.testing.assert_allclose(nets.run("encoder", X), infer(new, X), rtol=1e-6)
    with pytest.raises(KeyError):
        nets.set("middle", new)


def test_a_loaded_net_is_deserialized_only_where_its_plan_is_missing(tmp_path):
    nets = _nets(keras.layers.BatchNormalization())  # the decoder gets no plan
    assert nets.freeze() == {"encoder": True, "decoder": False}
    z = nets.run("encoder", X)
    want = nets.run("decoder", z)
    nets.save(tmp_path)
    loaded = FrozenNets.load(tmp_path)
    assert not loaded.is_deserialized("encoder") and not loaded.is_deserialized("decoder")
    assert loaded.freeze() == {"encoder": True, "decoder": False}
    assert not loaded.is_deserialized("encoder") and loaded.is_deserialized("decoder")
    np.testing.assert_allclose(loaded.run("decoder", loaded.run("encoder", X)), want, rtol=1e-5, atol=1e-6)


def test_saving_without_plans_leaves_no_stale_plans_behind(tmp_path):
    nets = _nets()
    nets.freeze()
    nets.save(tmp_path)
    assert (tmp_path / "plans.npz").is_file()
    nets.set("encoder", _net(5, 2, 7))  # into the same directory, nets without plans
    nets.unfreeze()
    nets.save(tmp_path)
    assert not (tmp_path / "plans.npz").exists()
    loaded = FrozenNets.load(tmp_path)
    assert loaded.planned() == {"encoder": False, "decoder": False}
    np.testing.assert_allclose(loaded.run("encoder", X), infer(nets.keras_net("encoder"), X), rtol=1e-6)


def test_a_model_not_fitted_has_no_nets():
    model = DenseAutoencoder(small_config("ae").model)
    assert not hasattr(model, "encoder_") and not hasattr(model, "decoder_")
    with pytest.raises(KeyError, match="neither fitted nor loaded"):
        model.nets_.keras_net("encoder")
    assert model.freeze() == {"encoder_": False, "decoder_": False}


def test_a_plan_switches_blas_to_one_thread_only_for_more_than_a_few_rows(monkeypatch):
    """The switch costs more than a served one-row request's products: few rows skip it."""
    from aeservice.models import plan

    nets = _nets()
    nets.freeze()
    switches = []

    class Counting:
        def __enter__(self):
            switches.append(1)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(plan, "_one_blas_thread", Counting)
    few = np.repeat(X, 2, axis=0)[: plan.SINGLE_THREAD_ROWS]
    np.testing.assert_allclose(nets.run("encoder", few), infer(nets.keras_net("encoder"), few), rtol=1e-5, atol=1e-6)
    assert switches == []
    nets.run("encoder", np.repeat(X, 3, axis=0))  # 21 rows
    assert switches == [1]
