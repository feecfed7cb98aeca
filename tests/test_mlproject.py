"""MLproject against the click commands: every option of `train`, `tune` and `main` is a parameter
of the entry point of that name, of a type MLproject can pass it, with the same default, and
every parameter reaches the command line. No process is started: `mlflow run` itself is run by
test_cli_train.py, test_tuning_study.py, test_pipeline.py, test_compare.py and test_registry.py."""
from __future__ import annotations

import re
import shlex

import click
import pytest
import yaml
from conftest import REPO

from aeservice.cli import aeservice_command
from aeservice.cli.options import WholeNumber, optional_text

ENTRY_POINTS = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
CHECKED = ("train", "tune", "main")  # the entry points that take every option of their command
# Bare flags are left out: MLproject puts a value after each option it passes, and a flag takes
# none, so a flag cannot be a parameter. `--quiet` (train, tune) only hides progress lines.
FLAGS_LEFT_OUT = {"quiet"}


def _options(command: str) -> dict[str, click.Option]:
    params = aeservice_command.commands[command].params
    assert {p.name for p in params if getattr(p, "is_flag", False)} <= FLAGS_LEFT_OUT, command
    return {p.name: p for p in params if p.name not in FLAGS_LEFT_OUT}


def _command_line(entry: dict) -> str:
    return " ".join(entry["command"].split())


def _mlproject_type(option: click.Option) -> str:
    """The MLproject type that suits an option: numbers are float (MLproject has no integer type;
    WholeNumber takes its "30.0"); everything else is text: "auto", choices, true/false, the
    --range texts joined with ';'."""
    return "float" if isinstance(option.type, (WholeNumber, click.types.FloatParamType)) else "string"


def _meaning(option: click.Option, value):
    """What the command makes of an option's value: "" and "none" of optional text and of --range
    are "not given" (MLproject cannot leave a parameter out)."""
    if option.multiple:
        return tuple(v for v in value or () if optional_text(v) is not None)
    return optional_text(value) if isinstance(value, str) and option.default is None else value


@pytest.mark.parametrize("name", CHECKED)
def test_every_option_is_a_parameter_and_every_parameter_reaches_the_command(name):
    entry, options = ENTRY_POINTS[name], _options(name)
    assert set(entry["parameters"]) == set(options), name
    line = _command_line(entry)
    assert line.startswith(f"python -m aeservice {name} "), line
    assert set(re.findall(r"{(\w+)}", line)) == set(entry["parameters"]), name
    for option in options.values():
        assert f"{option.opts[0]} {{{option.name}}}" in line, (name, option.name)


@pytest.mark.parametrize("name", CHECKED)
def test_each_parameter_has_the_type_its_option_takes_and_the_same_default(name):
    entry, options = ENTRY_POINTS[name], _options(name)
    ctx = aeservice_command.commands[name].make_context(name, [])
    for key, spec in entry["parameters"].items():
        option = options[key]
        assert spec["type"] == _mlproject_type(option), (name, key)
        given = option.type_cast_value(ctx, [str(spec["default"])] if option.multiple else str(spec["default"]))
        assert _meaning(option, given) == _meaning(option, ctx.params[key]), (name, key, spec["default"])


@pytest.mark.parametrize("name", CHECKED)
def test_the_command_with_every_default_means_what_the_bare_command_means(name):
    """The command line as `mlflow run` makes it without -P (values shell-quoted), parsed by click."""
    entry = ENTRY_POINTS[name]
    line = _command_line(entry).format(**{k: shlex.quote(str(v["default"])) for k, v in entry["parameters"].items()})
    args = shlex.split(line)[4:]  # after "python -m aeservice NAME"
    command = aeservice_command.commands[name]
    passed, bare = command.make_context(name, args).params, command.make_context(name, []).params
    options = _options(name)
    for key, option in options.items():
        assert _meaning(option, passed[key]) == _meaning(option, bare[key]), (name, key, passed[key], bare[key])


@pytest.mark.parametrize("name", CHECKED)
def test_whole_number_options_say_integer_and_take_mlproject_text(name):
    command = aeservice_command.commands[name]
    whole = [o for o in _options(name).values() if isinstance(o.type, WholeNumber)]
    assert {"seed"} <= {o.name for o in whole}
    for option in whole:
        assert option.make_metavar(command.make_context(name, [])) == "INTEGER"
        assert command.make_context(name, [option.opts[0], "100.0"]).params[option.name] == 100
        with pytest.raises(click.BadParameter, match="not a whole number"):
            command.make_context(name, [option.opts[0], "2.5"])


def test_every_flag_in_a_command_is_an_option_of_its_command():
    """Each setting is declared once, in aeservice.config; MLproject's parameters all reach an option."""
    for name, entry in ENTRY_POINTS.items():
        flags = {p.opts[0] for p in aeservice_command.commands[name].params}
        assert set(re.findall(r"--[a-z0-9-]+", entry["command"])) <= flags, name
