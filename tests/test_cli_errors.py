"""Bad input ends a command with one line and exit code 1, never a traceback, and leaves no run."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import run_statuses, train_process

from aeservice.cli import aeservice_command
from aeservice.config import ModelConfig, TrainConfig
from aeservice.errors import UserError
from aeservice.models import check_sizes

FAST = ["--epochs", "2", "--hidden", "16", "--patience", "0", "--experiment", "cli"]



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
    assert "RUNNING" not in run_statuses()


def test_bad_input_in_a_real_process_has_no_traceback_and_no_run(tracking_uri, tmp_path):
    proc = train_process(tracking_uri, tmp_path, "--dataset", "nope")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: unknown data set 'nope'")
    assert "Traceback" not in proc.stderr
    assert run_statuses() == []


def test_a_tracking_failure_in_a_real_process_is_one_line(tracking_uri, tmp_path):
    proc = train_process(tracking_uri, tmp_path, *FAST, env={"MLFLOW_TRACKING_URI": "nosuchscheme://x"})
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: MLflow tracking failed:") and "nosuchscheme" in last
    assert "Traceback" not in proc.stderr


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
    assert run_statuses() == []  # no run was started, so none is left RUNNING
    assert not (tmp_path / "optuna.db").exists()  # nor a study
    usage = runner.invoke(aeservice_command, ["train", "--batch-size", "many"])
    assert usage.exit_code == 2 and "Invalid value for '--batch-size'" in usage.output  # a usage error stays click's


def test_check_sizes_lets_through_what_fits():
    check_sizes(ModelConfig(model="ae", latent_dim=64), 64, 1257, "digits")  # at the bound
    check_sizes(ModelConfig(model="sparse", latent_dim=256), 64, 1257, "digits")  # an overcomplete sparse code
    check_sizes(ModelConfig(model="ae", latent_dim=1), 2, 5, "tiny")  # auto batch (at least 16) on 5 rows: clipped
    check_sizes(ModelConfig(model="pca", batch_size=10_000), 3, 100, "x")  # PCA takes no batches
    for hidden in ((16.5,), (True,), (0,)):  # from Python, where no option parsing has looked at them
        with pytest.raises(UserError, match="hidden layer sizes must be positive whole numbers"):
            TrainConfig(model=ModelConfig(hidden=hidden)).validate()


def test_a_latent_size_too_large_in_a_real_process_stops_at_once(tracking_uri, tmp_path):
    proc = train_process(tracking_uri, tmp_path, "--model", "ae", "--latent-dim", "100000")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: ae latent_dim must be at most the feature count (64) for data set digits, got 100000")
    assert "Traceback" not in proc.stderr and run_statuses() == []
