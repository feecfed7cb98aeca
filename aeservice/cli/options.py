"""Click options made from the config fields, and a TrainConfig made from their values.

`train` and `tune` share one option per field of `aeservice.config` that has help (see there
for the metadata), so each setting is declared once. Numbers that may be left to the data take
"auto" (`OrAuto`); whole numbers also take MLproject's "30.0" text (`WholeNumber`).
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable

import click

from aeservice import sizes
from aeservice.config import DataConfig, ModelConfig, TrainConfig, parse_hidden, whole_number
from aeservice.errors import UserError
from aeservice.models import MODELS  # the classes only: Keras is imported when a model trains

__all__ = ["OrAuto", "WholeNumber", "config_from_options", "help_words", "optional_text", "train_options"]

_PARTS = (ModelConfig, DataConfig, TrainConfig)


class WholeNumber(click.ParamType):
    """An integer, given as 30 or as MLproject passes numbers: "30.0"."""

    name = "INTEGER"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return whole_number(value, "value")
        except UserError:
            self.fail(f"{value!r} is not a whole number", param, ctx)


class OrAuto(click.ParamType):
    """A number, or 'auto' (None): the value is then chosen from the data or searched."""

    def __init__(self, integer: bool):
        self.integer = integer
        self.name = "INTEGER|auto" if integer else "FLOAT|auto"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int if self.integer else float):
            return value
        if str(value).strip().lower() in ("auto", "", "none"):
            return None
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number or 'auto'", param, ctx)
        if self.integer and not number.is_integer():
            self.fail(f"{value!r} is not a whole number or 'auto'", param, ctx)
        return int(number) if self.integer else number


def _kinds() -> str:
    """'pca baseline, dense ae, sparse ae, or vae' from each class's description."""
    words = [cls.description or kind for kind, cls in MODELS.items()]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + ", or " + words[-1]


def help_words() -> dict[str, str]:
    """The {names} of the config's help texts: how auto chooses each size, and the kinds."""
    from aeservice.models.dense import OVERCOMPLETE

    denoising = tuple(kind for kind, cls in MODELS.items() if cls.denoises_images)
    bound = f"at most the feature count (sparse: {OVERCOMPLETE}x it; pca: also the training rows)"
    return {**sizes.describe(denoising), "latent_dim": bound, "kinds": _kinds()}


def _base(hint: Any) -> type:
    """int, float, str or tuple: a field's type without its None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return typing.get_origin(args[0]) or args[0]


def _option_fields() -> list[tuple[type, dataclasses.Field, Any]]:
    """(config class, field, type) of each field that is an option, in --help order: the kind and
    the data set first, then the other model settings, the other data settings, the experiment."""
    model, data, run = ([(part, f, typing.get_type_hints(part)[f.name]) for f in dataclasses.fields(part)
                         if "help" in f.metadata] for part in _PARTS)
    return [model[0], data[0], *model[1:], *data[1:], *run]


def _option(f: dataclasses.Field, hint: Any, words: dict[str, str]) -> Callable:
    """The click option of one config field, from its type, default and metadata."""
    meta, base, auto = f.metadata, _base(hint), f.metadata.get("auto")  # auto: None means "chosen from the data"
    text = meta["help"].format(**words)
    if auto is not None:
        text += " [default: auto" + (" = " + auto.format(**words) if auto else "") + "]"
    choices = tuple(MODELS) if f.name == "model" else meta.get("choices")  # the kinds are known above config.py
    if choices:
        kind = click.Choice(["auto", *choices] if auto is not None else list(choices))
    elif base in (int, float):
        kind = OrAuto(integer=base is int) if auto is not None else WholeNumber() if base is int else float
    else:
        kind = None  # text: "256,128" for a tuple
    default = f.default if auto is None or isinstance(kind, OrAuto) else "auto"
    shown = True if auto is None and f.default is not None else None  # auto: the help says how it is chosen
    return click.option("--" + f.name.replace("_", "-"), f.name, type=kind, default=default, show_default=shown,
                        help=text)


def train_options(func: Callable) -> Callable:
    """The data and model options shared by `train` and `tune`: one per config field that is an option."""
    words = help_words()
    for _, f, hint in reversed(_option_fields()):
        func = _option(f, hint, words)(func)
    return func


def optional_text(value: str | None) -> str | None:
    """A text option that may be left out (--label-column): "" and "none" are None, since an
    MLproject parameter cannot be missing."""
    return None if value is None or value.strip().lower() in ("", "none") else value


def _config_value(f: dataclasses.Field, hint: Any, value: Any) -> Any:
    """An option's value as its field's: "auto" is None where auto chooses it, "" and "none" where
    the field is optional text, "256,128" a tuple, 30.0 a whole number."""
    if _base(hint) is tuple:
        return parse_hidden(value)
    if isinstance(value, str) and type(None) in typing.get_args(hint):
        if value == "auto" and "auto" in f.metadata:
            return None
        if _base(hint) is str:
            return optional_text(value)
        if value == "":
            return None
    if _base(hint) is int and value is not None:
        return whole_number(value, f.name)
    return value


def config_from_options(options: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from the shared options; unknown keys are left for the caller."""
    values: dict[type, dict[str, Any]] = {part: {} for part in _PARTS}
    for part, f, hint in _option_fields():
        values[part][f.name] = _config_value(f, hint, options[f.name])
    return TrainConfig(DataConfig(**values[DataConfig]), ModelConfig(**values[ModelConfig]),
                       **values[TrainConfig]).validate()
