"""The `aeservice` command: real processes for the happy paths, one-line errors for bad input."""
from __future__ import annotations

import subprocess

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BIN, REPO, subprocess_env

from aeservice.cli import aeservice_command
from aeservice.config import ACTIVATIONS, DataConfig, ModelConfig, TrainConfig
from aeservice.errors import UserError
from aeservice.sizes import describe, resolve_sizes

FAST = ["--epochs", "2", "--hidden", "16", "--patience", "0", "--experiment", "cli"]


def _statuses():
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [r.info.status for r in runs]


def test_help_and_datasets():
    runner = CliRunner()
    result = runner.invoke(aeservice_command, ["train", "--help"])
    assert result.exit_code == 0 and "--latent-dim" in result.output and "--patience" in result.output
    result = runner.invoke(aeservice_command, ["datasets"])
    assert result.exit_code == 0
    for name in ("curve3d", "normal1d", "scurve", "two_gaussians", "digits", "mnist"):
        assert name in result.output


def test_the_shared_options_are_made_from_the_config_fields():
    """Each setting is declared once, in aeservice.config; MLproject's parameters all reach an option."""
    import dataclasses
    import re

    import yaml

    from aeservice.cli import _SEARCHABLE
    from aeservice.tuning import OPTION_PARAMS

    fields = {f.name: f for part in (DataConfig, ModelConfig, TrainConfig) for f in dataclasses.fields(part)
              if "help" in f.metadata}
    assert "val_fraction" not in fields and len(fields) == 23
    for command in ("train", "tune"):
        params = {p.name: p for p in aeservice_command.commands[command].params}
        for name, f in fields.items():
            assert params[name].opts == ["--" + name.replace("_", "-")], name
            assert f.metadata["help"].split("{")[0] in params[name].help, name
    train = {p.name: p for p in aeservice_command.commands["train"].params}
    assert train["learning_rate"].default == ModelConfig().learning_rate and train["seed"].default == 0
    assert train["hidden"].help.endswith("[default: auto = " + describe()["hidden"] + "]")
    assert "[default: auto]" in train["noise"].help and train["noise"].default is None
    assert list(train["activation"].type.choices) == ["auto", *ACTIVATIONS]
    assert _SEARCHABLE == tuple(OPTION_PARAMS)
    entry_points = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    for name, entry in entry_points.items():
        flags = {p.opts[0] for p in aeservice_command.commands[name].params}
        assert set(re.findall(r"--[a-z0-9-]+", entry["command"])) <= flags, name


def _bad_inputs(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    nan = tmp_path / "nan.csv"
    nan.write_text("a,b\n1,2\n,4\n" + "5,6\n" * 20)
    text = tmp_path / "text.csv"
    text.write_text("a,b\n1,x\n" + "5,6\n" * 20)
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("a,b\n1,2\n3,4\n")
    return [
        (["--dataset", "nope"], "unknown data set 'nope'"),
        (["--model", "gan"], "Invalid value for '--model'"),
        (["--dataset", str(tmp_path / "missing.csv")], "data file not found"),
        (["--dataset", str(empty)], "data file is empty"),
        (["--dataset", str(nan)], "empty, NaN or infinite"),
        (["--dataset", str(text)], "non-numeric column"),
        (["--latent-dim", "0"], "latent_dim must be at least 1"),
        (["--model", "pca", "--dataset", "curve3d", "--latent-dim", "5"], "at most the feature count"),
        (["--dataset", str(tiny)], "too few rows"),
        (["--hidden", "64,abc"], "hidden must be comma-separated integers"),
    ]


def test_bad_input_gives_one_line_and_leaves_no_run(tracking_uri, tmp_path):
    runner = CliRunner()
    for args, message in _bad_inputs(tmp_path):
        result = runner.invoke(aeservice_command, ["train", *FAST, *args])
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), args
    assert "RUNNING" not in _statuses()


# Sizes the data cannot take: one line and exit 1 before any run (digits: 64 features, 1257 training rows).
_BAD_SIZES = [
    (["--model", "ae", "--latent-dim", "100000"],
     "ae latent_dim must be at most the feature count (64) for data set digits, got 100000"),
    (["--model", "vae", "--latent-dim", "65"], "vae latent_dim must be at most the feature count (64)"),
    (["--model", "sparse", "--latent-dim", "257"], "sparse latent_dim must be at most 256 (4x the feature count)"),
    (["--model", "pca", "--latent-dim", "65"], "pca latent_dim must be at most the feature count (64)"),
    (["--model", "ae", "--latent-dim", "2", "--batch-size", "1258"],
     "batch_size must be at most the training row count (1257) for data set digits, got 1258"),
    (["--model", "ae", "--hidden", "64,0"], "hidden layer sizes must be positive"),
    (["--model", "ae", "--hidden", "-8"], "hidden layer sizes must be positive"),
    (["--model", "ae", "--hidden", "16.5"], "hidden must be comma-separated integers"),
]


def test_sizes_the_data_cannot_take_are_refused_before_any_run(tracking_uri, tmp_path):
    runner = CliRunner()
    for command in ("train", "tune"):
        for args, message in _BAD_SIZES:
            result = runner.invoke(aeservice_command, [command, "--epochs", "2", "--experiment", "cli", *args])
            assert result.exit_code == 1, (command, args, result.output)
            assert result.output.strip().splitlines()[-1].startswith(f"Error: {message}"), (command, result.output)
            assert "Traceback" not in result.output
    assert _statuses() == []  # no run was started, so none is left RUNNING
    assert not (tmp_path / "optuna.db").exists()  # nor a study
    usage = runner.invoke(aeservice_command, ["train", "--batch-size", "many"])
    assert usage.exit_code == 2 and "Invalid value for '--batch-size'" in usage.output  # a usage error stays click's


def test_check_sizes_lets_through_what_fits():
    from aeservice.sizes import check_sizes

    check_sizes(ModelConfig(model="ae", latent_dim=64), 64, 1257, "digits")  # at the bound
    check_sizes(ModelConfig(model="sparse", latent_dim=256), 64, 1257, "digits")  # an overcomplete sparse code
    check_sizes(ModelConfig(model="ae", latent_dim=1), 2, 5, "tiny")  # auto batch (at least 16) on 5 rows: clipped
    check_sizes(ModelConfig(model="pca", batch_size=10_000), 3, 100, "x")  # PCA takes no batches
    for hidden in ((16.5,), (True,), (0,)):  # from Python, where no option parsing has looked at them
        with pytest.raises(UserError, match="hidden layer sizes must be positive whole numbers"):
            TrainConfig(model=ModelConfig(hidden=hidden)).validate()


def test_a_latent_size_too_large_in_a_real_process_stops_at_once(tracking_uri, tmp_path):
    proc = _train_process(tracking_uri, tmp_path, "--model", "ae", "--latent-dim", "100000")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: ae latent_dim must be at most the feature count (64) for data set digits, got 100000")
    assert "Traceback" not in proc.stderr and _statuses() == []


def test_divergence_marks_the_run_failed(tracking_uri):
    result = CliRunner().invoke(aeservice_command, ["train", "--model", "ae", "--dataset", "normal1d", "--epochs", "5",
                                       "--patience", "0", "--learning-rate", "1e12", "--experiment", "cli"])
    assert result.exit_code == 1, result.output
    assert "training diverged" in result.output
    assert _statuses() == ["FAILED"]




def _train_process(tracking_uri, cwd, *args, env=None):
    return subprocess.run([str(BIN / "aeservice"), "train", *args], capture_output=True, text=True, timeout=300,
                          env={**subprocess_env(tracking_uri), **(env or {})}, cwd=cwd)


def test_train_command_in_a_real_process_logs_through_the_tracking_worker(tracking_uri, tmp_path):
    # hidden and batch size left at auto: chosen from the rows, said on stderr and logged as *_used
    proc = _train_process(tracking_uri, tmp_path, "--model", "sparse", "--dataset", "scurve", "--epochs", "2",
                          "--patience", "0", "--experiment", "cli")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch 2/8" in proc.stderr and "test_mse" in proc.stdout  # 2 epochs a fit, at most 4 fits
    assert "tracking worker time" in proc.stderr  # the forked worker logged this run
    [run] = mlflow.search_runs(experiment_names=["cli"], output_format="list")
    params = run.data.params
    assert run.data.tags["model"] == "sparse" and run.info.status == "FINISHED"
    assert params["epochs"] == "2" and params["latent_dim_used"] == "2"
    sizes = resolve_sizes(ModelConfig(), int(params["n_train"]))
    assert params["hidden"] == params["batch_size"] == "auto"
    # two epochs rarely beat PCA: then the linear model is kept, and has no hidden layer
    # (then more fits were tried first: up to 4 while none beat it)
    assert (params["kept"], params["restarts_used"]) in (("linear", "4"), ("restart 1", "1"))
    assert (params["hidden_used"], params["batch_size_used"], params["epochs_used"]) == (
        "none" if params["kept"] == "linear" else ",".join(map(str, sizes.hidden)), str(sizes.batch_size), "2")
    assert (params["activation_used"], params["input_noise_used"]) == ("relu", "0.0")  # continuous data
    assert f"hidden {','.join(map(str, sizes.hidden))}, batch {sizes.batch_size}, at most 2 epochs" in proc.stderr
    assert {"val_mse", "test_mse", "explained_variance"} <= set(run.data.metrics)
    client = mlflow.MlflowClient()
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert steps == list(range(2 * int(params["restarts_used"])))  # fits one after another: one running count
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/latent_space.png" in plots and len(plots) == 5
    assert run.inputs.dataset_inputs[0].dataset.name == "scurve"
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert model.predict(np.zeros((3, 2)), params={"method": "encode"}).shape == (3, 2)


def test_divergence_in_a_real_process_marks_the_run_failed(tracking_uri, tmp_path):
    proc = _train_process(tracking_uri, tmp_path, "--model", "ae", "--dataset", "normal1d", "--epochs", "5",
                          "--patience", "0", "--learning-rate", "1e12", "--experiment", "cli")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: training diverged")
    assert _statuses() == ["FAILED"]


def test_bad_input_in_a_real_process_has_no_traceback_and_no_run(tracking_uri, tmp_path):
    proc = _train_process(tracking_uri, tmp_path, "--dataset", "nope")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: unknown data set 'nope'")
    assert "Traceback" not in proc.stderr
    assert _statuses() == []


def test_a_tracking_failure_in_a_real_process_is_one_line(tracking_uri, tmp_path):
    proc = _train_process(tracking_uri, tmp_path, *FAST, env={"MLFLOW_TRACKING_URI": "nosuchscheme://x"})
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: MLflow tracking failed:") and "nosuchscheme" in last
    assert "Traceback" not in proc.stderr


def test_mlflow_run_train_entry_point(tracking_uri):
    proc = subprocess.run(
        [str(BIN / "mlflow"), "run", str(REPO), "-e", "train", "-P", "model=vae", "-P", "dataset=digits",
         "-P", "latent_dim=2", "-P", "epochs=2", "-P", "hidden=16", "-P", "learning_rate=1e-3",
         "--env-manager", "local", "--experiment-name", "mlproject"],
        capture_output=True, text=True, timeout=600, env=subprocess_env(tracking_uri))
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = mlflow.search_runs(experiment_names=["mlproject"], output_format="list")
    assert run.info.status == "FINISHED"
    assert run.data.params["latent_dim"] == "2" and "test_elbo" in run.data.metrics
    assert run.data.tags["model"] == "vae"
    assert mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model") is not None
