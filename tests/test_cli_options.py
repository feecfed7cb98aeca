"""The options made from the config fields (aeservice.cli.options), and the config made from them."""
from __future__ import annotations

import click
import pytest

from aeservice.cli import aeservice_command
from aeservice.cli.options import OrAuto, WholeNumber, config_from_options, optional_text
from aeservice.config import ACTIVATIONS, DataConfig, ModelConfig, TrainConfig


def test_the_shared_options_are_made_from_the_config_fields():
    """Each setting is declared once, in aeservice.config (test_mlproject.py: and reaches MLproject)."""
    import dataclasses

    from aeservice.cli.options import help_words
    from aeservice.cli.tune import SEARCHABLE
    from aeservice.tuning import OPTION_PARAMS

    fields = {f.name: f for part in (DataConfig, ModelConfig, TrainConfig) for f in dataclasses.fields(part)
              if "help" in f.metadata}
    assert "val_fraction" not in fields and len(fields) == 28
    for command in ("train", "tune"):
        params = {p.name: p for p in aeservice_command.commands[command].params}
        for name, f in fields.items():
            assert params[name].opts == ["--" + name.replace("_", "-")], name
            assert f.metadata["help"].split("{")[0] in params[name].help, name
    train = {p.name: p for p in aeservice_command.commands["train"].params}
    assert train["learning_rate"].default == ModelConfig().learning_rate and train["seed"].default == 0
    assert train["hidden"].help.endswith("[default: auto = " + help_words()["hidden"] + "]")
    assert "[default: auto]" in train["noise"].help and train["noise"].default is None
    assert list(train["activation"].type.choices) == ["auto", *ACTIVATIONS]
    assert SEARCHABLE == tuple(OPTION_PARAMS)


def test_number_types_take_mlproject_text_and_auto():
    assert [WholeNumber().convert(v, None, None) for v in (30, "30", "30.0", 30.0)] == [30] * 4
    assert [OrAuto(integer=True).convert(v, None, None) for v in ("auto", "", "none", "8.0")] == [None, None, None, 8]
    assert OrAuto(integer=False).convert("1e-3", None, None) == 1e-3
    for kind, bad in ((WholeNumber(), "2.5"), (WholeNumber(), "x"), (OrAuto(integer=True), "2.5")):
        with pytest.raises(click.BadParameter, match="not a whole number"):
            kind.convert(bad, None, None)
    assert (optional_text(None), optional_text(""), optional_text("None"), optional_text("y")) == (None, None, None, "y")


def test_a_config_from_the_options_as_click_parses_them():
    train = aeservice_command.commands["train"]
    options = train.make_context("train", ["--hidden", "64,32", "--seed", "3.0", "--label-column", "none",
                                           "--latent-dim", "auto", "--model", "ae"]).params
    config = config_from_options({k: v for k, v in options.items() if k != "quiet"})
    assert config.model == ModelConfig(model="ae", hidden=(64, 32), seed=3)
    assert config.data == DataConfig() and config.experiment == TrainConfig().experiment
