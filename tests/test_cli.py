"""The `aeservice` command: real processes for the happy paths, one-line errors for bad input."""
from __future__ import annotations

import subprocess

import mlflow
from click.testing import CliRunner
from conftest import BIN, REPO, subprocess_env

from aeservice.cli import main

FAST = ["--epochs", "2", "--hidden", "16", "--patience", "0", "--experiment", "cli"]


def _statuses():
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [r.info.status for r in runs]


def test_help_and_datasets():
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--help"])
    assert result.exit_code == 0 and "--latent-dim" in result.output and "--patience" in result.output
    result = runner.invoke(main, ["datasets"])
    assert result.exit_code == 0
    for name in ("curve3d", "normal1d", "scurve", "two_gaussians", "digits", "mnist"):
        assert name in result.output


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
        result = runner.invoke(main, ["train", *FAST, *args])
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), args
    assert "RUNNING" not in _statuses()


def test_divergence_marks_the_run_failed(tracking_uri):
    result = CliRunner().invoke(main, ["train", "--model", "ae", "--dataset", "normal1d", "--epochs", "5",
                                       "--patience", "0", "--learning-rate", "1e12", "--experiment", "cli"])
    assert result.exit_code == 1, result.output
    assert "training diverged" in result.output
    assert _statuses() == ["FAILED"]




def test_train_command_in_a_real_process(tracking_uri, tmp_path):
    proc = subprocess.run([str(BIN / "aeservice"), "train", "--model", "sparse", "--dataset", "scurve", *FAST],
                          capture_output=True, text=True, timeout=300, env=subprocess_env(tracking_uri), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch 2/2" in proc.stderr and "test_mse" in proc.stdout
    [run] = mlflow.search_runs(experiment_names=["cli"], output_format="list")
    assert run.data.tags["model"] == "sparse" and run.info.status == "FINISHED"


def test_bad_input_in_a_real_process_has_no_traceback(tracking_uri, tmp_path):
    proc = subprocess.run([str(BIN / "aeservice"), "train", "--dataset", "nope"], capture_output=True, text=True,
                          timeout=120, env=subprocess_env(tracking_uri), cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: unknown data set 'nope'")
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
