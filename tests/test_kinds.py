"""Each kind's facts live on its model class: a fifth kind, registered in MODELS alone, is picked
up by config validation, the CLI, sizes, the tune search space and objectives, the main job's
steps and the comparison, and trains and logs its own loss term and metric."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
from conftest import small_config

from aeservice.cli.options import help_words
from aeservice.errors import UserError
from aeservice.models import MODELS, Searched, model_class
from aeservice.models.dense import DenseAutoencoder
from aeservice.models.keras_base import KerasAutoencoder
from aeservice.training import fit_and_evaluate, prepare, prepared_sizes, used_params


class CodeL1Autoencoder(DenseAutoencoder):
    """A throw-away kind defined only here: the plain AE plus an L1 term on the code, logged as
    its own loss term `code_l1`, and a metric of its own; its code may be at most features - 1."""

    kind = "codel1"
    description = "code-L1 ae"
    search = KerasAutoencoder.search + (Searched("l1", 1e-5, 1e-3, log=True),)
    loss_terms = ("recon", "code_l1")
    extra_metrics = ("code_norm",)
    comparison_params = KerasAutoencoder.comparison_params + ("l1",)

    @classmethod
    def max_latent_dim(cls, n_features: int, n_rows: int) -> int | None:
        return n_features - 1

    def _terms(self, z):
        import keras
        from keras import ops

        weight = self.config.l1
        term = keras.layers.Lambda(lambda code: weight * ops.sum(ops.abs(code), axis=-1, keepdims=True),
                                   name="code_l1")(z)
        return {"code_l1": term}, {"code_l1": lambda y_true, y_pred: ops.mean(y_pred, axis=-1)}

    def evaluation_metrics(self, x: np.ndarray, seed: int = 0) -> dict[str, float]:
        return {"code_norm": float(np.mean(np.abs(self.encode(x))))}


@pytest.fixture()
def fifth_kind(monkeypatch):
    monkeypatch.setitem(MODELS, CodeL1Autoencoder.kind, CodeL1Autoencoder)
    return CodeL1Autoencoder.kind


def test_a_fifth_kind_needs_only_its_class_and_the_registry_entry(fifth_kind):
    from aeservice.figures.comparison import _colour
    from aeservice.leaderboard import kind_params
    from aeservice.pipeline import kinds, tuned
    from aeservice.tuning.objective import objective_spec
    from aeservice.tuning.space import parse_ranges, search_space

    # config validation and the latent bound, before any data is touched by a fit
    assert model_class(fifth_kind) is CodeL1Autoencoder
    with pytest.raises(UserError, match="choose one of pca, ae, sparse, vae, codel1$"):
        model_class("gan")
    prepare(small_config(fifth_kind, dataset="curve3d", latent_dim=2))
    with pytest.raises(UserError, match="codel1 latent_dim must be at most 2 for data set curve3d, got 3"):
        prepare(small_config(fifth_kind, dataset="curve3d", latent_dim=3))

    # sizes: it inherits the AE's denoising of images, and --help says so
    assert prepared_sizes(prepare(small_config(fifth_kind))).input_noise > 0  # digits are images
    assert "ae or sparse or codel1" in help_words()["input_noise"]

    # the tune search space, ranges and objectives
    space = search_space(fifth_kind, n_features=10, n_rows=500)
    assert list(space) == ["latent_dim", "hidden_width", "hidden_depth", "learning_rate", "weight_decay", "l1"]
    assert space["latent_dim"].high == 9 and (space["l1"].low, space["l1"].high) == (1e-5, 1e-3)
    with pytest.raises(UserError, match="codel1 can have at most 9 components"):
        search_space(fifth_kind, 10, ranges=parse_ranges(["latent_dim=2,10"]))
    assert objective_spec("val_code_l1", fifth_kind).name == "val_code_l1"
    with pytest.raises(UserError, match="objective val_code_l1 is not logged by model ae"):
        objective_spec("val_code_l1", "ae")
    with pytest.raises(UserError, match="objective val_elbo is not logged by model codel1"):
        objective_spec("val_elbo", fifth_kind)

    # the main job tunes it after the four, and the comparison shows its settings in its colour
    assert kinds() == ("pca", "ae", "sparse", "vae", fifth_kind)
    assert tuned(fifth_kind, 10) and not tuned("pca", 10)
    assert kind_params(fifth_kind) == ("hidden", "epochs", "learning_rate", "weight_decay", "l1")
    assert _colour(fifth_kind, 0) == "tab:purple" and _colour("pca", 3) == "tab:gray"


def test_the_cli_offers_a_registered_kind_with_its_description(fifth_kind):
    """Click builds its choices when a command module is imported, so train's and the group's
    modules are imported again here."""
    import aeservice.cli as cli
    import aeservice.cli.train as train_command

    try:
        importlib.reload(train_command)
        cli = importlib.reload(cli)
        [option] = [p for p in cli.aeservice_command.commands["train"].params if p.name == "model"]
        assert list(option.type.choices) == ["pca", "ae", "sparse", "vae", fifth_kind]
        assert option.help == "Model kind: pca baseline, dense ae, sparse ae, vae, or code-L1 ae."
    finally:
        MODELS.pop(fifth_kind)
        importlib.reload(train_command)  # as they were, for the other tests
        importlib.reload(cli)


def test_a_fifth_kind_trains_and_logs_its_own_term_and_metric(fifth_kind):
    from aeservice.figures.run import loss_curves

    result = fit_and_evaluate(prepare(small_config(fifth_kind, dataset="curve3d", epochs=2, l1=1e-2)))
    assert set(result.history) == {"loss", "recon", "code_l1", "val_loss", "val_recon", "val_code_l1"}
    assert {"val_code_norm", "test_code_norm"} <= set(result.metrics)
    assert used_params(result.model)["epochs_used"] == 2
    assert [ax.get_title() for ax in loss_curves(result.history).axes] == ["loss", "recon", "code_l1"]
