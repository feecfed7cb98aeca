"""The `train` and `datasets` commands: real processes for the happy paths, a diverged run FAILED."""
from __future__ import annotations

import subprocess

import mlflow
import numpy as np
from click.testing import CliRunner
from conftest import BIN, REPO, run_statuses, subprocess_env, train_process

from aeservice.cli import aeservice_command
from aeservice.config import ModelConfig
from aeservice.sizes import resolve_sizes


def test_help_and_datasets():
    runner = CliRunner()
    result = runner.invoke(aeservice_command, ["train", "--help"])
    assert result.exit_code == 0 and "--latent-dim" in result.output and "--patience" in result.output
    result = runner.invoke(aeservice_command, ["datasets"])
    assert result.exit_code == 0
    for name in ("curve3d", "normal1d", "scurve", "two_gaussians", "digits", "mnist"):
        assert name in result.output


def test_divergence_marks_the_run_failed(tracking_uri):
    result = CliRunner().invoke(aeservice_command, ["train", "--model", "ae", "--dataset", "curve3d", "--epochs", "5",
                                       "--patience", "0", "--learning-rate", "1e12", "--experiment", "cli"])
    assert result.exit_code == 1, result.output
    assert "training diverged" in result.output
    assert run_statuses() == ["FAILED"]


def test_train_command_in_a_real_process_logs_through_the_tracking_worker(tracking_uri, tmp_path):
    # hidden and batch size left at auto: chosen from the rows, said on stderr and logged as *_used
    proc = train_process(tracking_uri, tmp_path, "--model", "sparse", "--dataset", "curve3d", "--epochs", "2",
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
    assert run.inputs.dataset_inputs[0].dataset.name == "curve3d"
    assert params["epochs_trained"] == str(len(steps))
    # the run's page, with MLflow 3's UI switched to model training
    assert (f"ui: http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            "?workflowType=machine_learning") in proc.stdout.splitlines()
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert model.predict(np.zeros((3, 3)), params={"method": "encode"}).shape == (3, 2)


def test_divergence_in_a_real_process_marks_the_run_failed(tracking_uri, tmp_path):
    proc = train_process(tracking_uri, tmp_path, "--model", "ae", "--dataset", "curve3d", "--epochs", "5",
                          "--patience", "0", "--learning-rate", "1e12", "--experiment", "cli")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: training diverged")
    assert run_statuses() == ["FAILED"]


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
