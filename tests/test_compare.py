"""`compare` on a small real experiment: which runs count, the leaderboard, the report run, the CLI.

The experiment (one SQLite store for the module): every kind on digits, a second `ae` on digits
as a nested trial under a tune-like parent, `pca` and `ae` on two_gaussians, and runs that must
never count (a non-training run, a failed run, the parent itself).
"""
from __future__ import annotations

import csv
import io
import os
import subprocess

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BIN, REPO, small_config, subprocess_env

from aeservice.cli import aeservice_command
from aeservice.comparison import COMPARISON_TAG, compare, leaderboard, load_run_model, training_runs
from aeservice.config import DataConfig, ModelConfig, TrainConfig
from aeservice.errors import UserError
from aeservice.models import MODELS
from aeservice.tracking import mlflow_run, train_run
from aeservice.figures.comparison import latent_spaces, reconstruction_grid, reconstruction_overlay
from aeservice.leaderboard import COLUMNS, format_table
from aeservice.training import evaluate, prepare

EXP = "cmp"
PLOTS = ("test_mse", "reconstructions", "latent_spaces")


def _config(kind: str, dataset: str = "digits", **model_kw) -> TrainConfig:
    config = small_config(kind, dataset, **{"hidden": (16,), "epochs": 2, **model_kw})
    config.experiment = EXP
    if dataset == "two_gaussians":
        config.data.n_samples = 300
    return config


@pytest.fixture(scope="module")
def store(module_tracking_uri, tmp_path_factory):
    """The experiment; returns {run_id: config} of the training runs (the only ones that count)."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    for name in (EXP, "cmp-empty"):  # artifacts in tmp, not in ./mlruns of the working folder
        mlflow.create_experiment(name, artifact_location=(artifacts / name).as_uri())
    trained = {}
    for kind in MODELS:
        config = _config(kind)
        trained[train_run(prepare(config))[0]] = config
    # a tune-like parent: tagged like a model and carrying a val_mse no trial reached
    with mlflow_run(EXP, tags={"model": "ae", "dataset": "digits"}, run_name="tune-ae"):
        config = _config("ae", epochs=3, learning_rate=3e-3)
        trained[train_run(prepare(config), nested=True, tags={"optuna.trial": "0"})[0]] = config
        mlflow.log_metric("val_mse", 1e-9)
    for kind in ("pca", "ae"):
        config = _config(kind, "two_gaussians")
        trained[train_run(prepare(config))[0]] = config
    with mlflow_run(EXP, run_name="notes"):  # no `model` tag: not a training run
        mlflow.log_metric("val_mse", 1e-9)
    with pytest.raises(RuntimeError), mlflow_run(EXP, tags={"model": "vae", "dataset": "digits"}):
        mlflow.log_metric("val_mse", 1e-9)
        raise RuntimeError("a run that failed")
    with mlflow_run("cmp-empty", run_name="notes"):
        mlflow.log_metric("val_mse", 1.0)
    yield trained
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # exported by mlflow.set_experiment


def _expected_best(trained: dict) -> dict[tuple[str, str], str]:
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for run_id in reversed(list(trained)):  # newest first: a tie goes to the newest, as in the leaderboard
        run = mlflow.get_run(run_id)
        key = (run.data.tags["dataset"], run.data.tags["model"])
        value = run.data.metrics["val_mse"]
        if key not in best or value < best[key][0]:
            best[key] = (value, run_id)
    return {key: run_id for key, (_, run_id) in best.items()}


def _check_rows(rows: list[dict], run_ids: set[str]) -> None:
    assert {r["run_id"] for r in rows} == run_ids and len(rows) == len(run_ids)
    for row in rows:
        assert tuple(row) == COLUMNS
        run = mlflow.get_run(row["run_id"])
        assert row["kind"] == run.data.tags["model"] and row["dataset"] == run.data.tags["dataset"]
        for name in ("val_mse", "test_mse", "explained_variance"):
            assert row[name] == pytest.approx(run.data.metrics[name])
        assert row["latent_dim"] == int(run.data.params["latent_dim_used"]) == 2
        if row["kind"] == "vae":
            assert row["test_elbo"] == pytest.approx(run.data.metrics["test_elbo"])
        else:
            assert row["test_elbo"] is None
    datasets = [r["dataset"] for r in rows]
    assert datasets == sorted(datasets)  # grouped by data set
    for name in set(datasets):
        mses = [r["test_mse"] for r in rows if r["dataset"] == name]
        assert mses == sorted(mses)


def test_training_runs_count_only_finished_model_runs(store):
    ids = {r.info.run_id for r in training_runs(EXP)}
    assert ids == set(store)  # nested trial in; parent, non-training and failed runs out
    only = training_runs(EXP, dataset="two_gaussians")
    assert {r.data.tags["dataset"] for r in only} == {"two_gaussians"} and len(only) == 2


def test_leaderboard_best_per_kind_sorted_by_test_mse(store):
    rows = leaderboard(training_runs(EXP))
    best = _expected_best(store)
    _check_rows(rows, set(best.values()))
    assert {(r["dataset"], r["kind"]) for r in rows} == {("digits", k) for k in MODELS} | {
        ("two_gaussians", "pca"), ("two_gaussians", "ae")}
    by_kind = {(r["dataset"], r["kind"]): r for r in rows}
    assert by_kind["digits", "sparse"]["l1"] == "0.0001" and by_kind["digits", "ae"]["l1"] is None
    assert by_kind["digits", "vae"]["beta"] == "1.0" and by_kind["digits", "pca"]["hidden"] is None
    ae = by_kind["digits", "ae"]  # what it trained with: 16, or none where the linear model was kept
    assert ae["hidden"] == mlflow.get_run(ae["run_id"]).data.params["hidden_used"] in ("16", "none")


def test_leaderboard_all_runs(store):
    rows = leaderboard(training_runs(EXP), all_runs=True)
    _check_rows(rows, set(store))
    assert sum(r["kind"] == "ae" and r["dataset"] == "digits" for r in rows) == 2


def test_unknown_or_empty_experiment_and_dataset_are_one_line_errors(store):
    with pytest.raises(UserError, match="experiment 'nope' not found"):
        training_runs("nope")
    with pytest.raises(UserError, match="'cmp-empty' has no finished training runs"):
        training_runs("cmp-empty")
    with pytest.raises(UserError, match="no training runs on data set 'mnist'; it has: digits, two_gaussians"):
        training_runs(EXP, dataset="mnist")


@pytest.fixture(scope="module")
def report(store):
    return compare(EXP)


def _download_text(run_id: str, path: str) -> str:
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")


def test_comparison_run_holds_table_csv_and_figures(store, report):
    run = mlflow.get_run(report.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[COMPARISON_TAG] == "true"
    assert run.info.experiment_id == mlflow.get_experiment_by_name(EXP).experiment_id
    assert "model" not in run.data.tags
    client = mlflow.MlflowClient()
    top = {a.path for a in client.list_artifacts(report.run_id)}
    assert {"comparison.md", "comparison.csv", "plots"} <= top
    for dataset in ("digits", "two_gaussians"):
        files = {a.path for a in client.list_artifacts(report.run_id, f"plots/{dataset}")}
        assert files == {f"plots/{dataset}/{p}.png" for p in PLOTS}
        assert all(a.file_size > 5000 for a in client.list_artifacts(report.run_id, f"plots/{dataset}"))
    assert report.notes == []

    parsed = list(csv.DictReader(io.StringIO(_download_text(report.run_id, "comparison.csv"))))
    assert [r["run_id"] for r in parsed] == [r["run_id"] for r in report.rows]
    assert tuple(parsed[0]) == COLUMNS
    for got, row in zip(parsed, report.rows):
        for name in ("val_mse", "test_mse", "explained_variance"):
            assert float(got[name]) == pytest.approx(mlflow.get_run(row["run_id"]).data.metrics[name])
        assert (got["test_elbo"] == "") == (row["kind"] != "vae")
    _check_rows(report.rows, set(_expected_best(store).values()))

    md = _download_text(report.run_id, "comparison.md")
    assert "| " + " | ".join(COLUMNS) + " |" in md
    positions = [md.index(r["run_id"]) for r in report.rows]
    assert positions == sorted(positions)
    assert "![plots/digits/latent_spaces.png](plots/digits/latent_spaces.png)" in md
    assert run.data.tags["mlflow.note.content"] == md  # the run page shows the report


def test_a_long_report_is_cut_to_fit_the_run_description():
    from aeservice.comparison import _description

    report_md = "".join(f"| row {i} | {'x' * 140} |\n" for i in range(200))
    cut = _description(report_md)
    assert len(cut) <= 8000 and cut.startswith("| row 0 |") and "whole table is in comparison.md" in cut


def test_comparing_again_counts_the_same_runs(store, report):
    assert {r.info.run_id for r in training_runs(EXP)} == set(store)
    assert report.run_id not in {r.info.run_id for r in training_runs(EXP)}


def test_loaded_models_reproduce_their_logged_test_mse(store):
    """from_flat + prepare rebuild the run's split, and the loaded model scores as logged."""
    for run_id in list(store)[:2] + list(store)[-1:]:
        run = mlflow.get_run(run_id)
        prepared = prepare(TrainConfig.from_flat(run.data.params))
        metrics = evaluate(load_run_model(run_id), prepared.split)
        assert metrics["test_mse"] == pytest.approx(run.data.metrics["test_mse"], rel=1e-5)


def test_side_by_side_figures_have_a_row_or_panel_per_kind(store):
    by_kind = {cfg.model.model: rid for rid, cfg in store.items() if cfg.data.dataset == "digits"}
    prepared = prepare(next(iter(store.values())))
    models = {kind: load_run_model(rid) for kind, rid in by_kind.items()}
    grid = reconstruction_grid(models, prepared.dataset, prepared.split, count=6)
    (ax,) = grid.axes  # one tiled image: a row of 6 per kind under the originals, 1-pixel gaps
    assert ax.images[0].get_array().shape == ((1 + len(models)) * 9 - 1, 6 * 9 - 1)
    assert [t.get_text() for t in ax.texts] == ["original", *models]
    panels = latent_spaces(models, prepared.dataset, prepared.split)
    assert [ax.get_title() for ax in panels.axes if ax.get_title()] == [f"{k} (2-D code)" for k in models]
    low = prepare(_config("pca", "two_gaussians"))
    low_models = {cfg.model.model: load_run_model(rid) for rid, cfg in store.items()
                  if cfg.data.dataset == "two_gaussians"}
    overlay = reconstruction_overlay(low_models, low.split, "two_gaussians")
    assert [t.get_text() for t in overlay.axes[0].get_legend().get_texts()] == ["data", *low_models]


def test_from_flat_round_trip(store):
    config = TrainConfig(
        DataConfig(dataset="two_gaussians", n_samples=321, noise=0.25, label_column="y", data_kind="continuous",
                   val_fraction=0.2, test_fraction=0.1),
        ModelConfig(model="sparse", latent_dim=3, hidden=(64, 32, 8), epochs=7, batch_size=16, learning_rate=3e-4,
                    beta=0.5, l1=1e-3, sparsity_weight=0.1, sparsity_target=0.1, weight_decay=1e-5, patience=4,
                    seed=9),
        experiment="somewhere")
    as_text = {k: str(v) for k, v in config.flatten().items()}
    extra = {"n_features": "2", "n_train": "224", "data_kind_used": "continuous", "latent_dim_used": "3"}
    assert TrainConfig.from_flat({**as_text, **extra}) == config
    assert TrainConfig.from_flat(config.flatten()) == config
    assert TrainConfig.from_flat(TrainConfig().flatten()) == TrainConfig()  # the "auto" (None) values
    assert TrainConfig.from_flat({"epochs": "150.0", "hidden": "none"}).model == ModelConfig(epochs=150, hidden=())
    assert TrainConfig.from_flat({"hidden": "auto", "batch_size": "auto"}).model == ModelConfig(hidden=None)
    for run_id, used in store.items():  # what MLflow gives back
        assert TrainConfig.from_flat(mlflow.get_run(run_id).data.params) == used
    with pytest.raises(UserError, match="parameter epochs must be a whole number, got '2.5'"):
        TrainConfig.from_flat({"epochs": "2.5"})
    with pytest.raises(UserError, match="parameter beta must be a number, got 'big'"):
        TrainConfig.from_flat({"beta": "big"})


def test_cli_prints_the_table_and_where_it_logged(store):
    runner = CliRunner()
    result = runner.invoke(aeservice_command, ["compare", "--experiment", EXP, "--no-figures"])
    assert result.exit_code == 0, result.output
    rows = leaderboard(training_runs(EXP))
    assert format_table(rows) in result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("kind "))
    assert [line.split()[-1] for line in lines[header + 2: header + 2 + len(rows)]] == [r["run_id"] for r in rows]
    assert f"in experiment '{EXP}'" in result.output and "comparison.csv" in result.output

    result = runner.invoke(aeservice_command,
                           ["compare", "--experiment", EXP, "--all", "--dataset", "digits", "--no-figures"])
    assert result.exit_code == 0, result.output
    digits = {rid for rid, cfg in store.items() if cfg.data.dataset == "digits"}
    assert {rid for rid in digits if rid in result.output} == digits
    assert not any(rid in result.output for rid in set(store) - digits)


@pytest.mark.parametrize("args, message", [
    (["--experiment", "nope"], "Error: experiment 'nope' not found"),
    (["--experiment", "cmp-empty"], "Error: experiment 'cmp-empty' has no finished training runs"),
    (["--experiment", EXP, "--dataset", "mnist"], "Error: experiment 'cmp' has no training runs on data set 'mnist'"),
])
def test_cli_errors_are_one_line(store, args, message):
    before = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    result = CliRunner().invoke(aeservice_command, ["compare", *args])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()] and message in result.output
    assert "Traceback" not in result.output
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == before




def test_aeservice_compare_in_a_real_process(store, module_tracking_uri):
    proc = subprocess.run([str(BIN / "aeservice"), "compare", "--experiment", EXP, "--dataset", "two_gaussians"],
                          capture_output=True, text=True, timeout=300, env=subprocess_env(module_tracking_uri))
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = _expected_best(store)
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("pca ", "ae "))]
    assert [r[-1] for r in rows] == [r["run_id"] for r in leaderboard(training_runs(EXP, "two_gaussians"))]
    assert {r[-1] for r in rows} == {best["two_gaussians", "pca"], best["two_gaussians", "ae"]}
    run_id = proc.stdout.split("report: run ", 1)[1].split()[0]
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "plots/two_gaussians")}
    assert files == {f"plots/two_gaussians/{p}.png" for p in PLOTS}

    proc = subprocess.run([str(BIN / "aeservice"), "compare", "--experiment", "nope"],
                          capture_output=True, text=True, timeout=300, env=subprocess_env(module_tracking_uri))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == f"Error: experiment 'nope' not found in {module_tracking_uri}"


def test_mlflow_run_compare_entry_point(store, module_tracking_uri):
    proc = subprocess.run([str(BIN / "mlflow"), "run", str(REPO), "-e", "compare", "--env-manager", "local",
                           "--experiment-name", EXP, "-P", f"experiment={EXP}", "-P", "dataset=two_gaussians"],
                          capture_output=True, text=True, timeout=300, env=subprocess_env(module_tracking_uri))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = proc.stdout.split("report: run ", 1)[1].split()[0]
    run = mlflow.get_run(run_id)
    assert run.data.tags["mlflow.project.entryPoint"] == "compare"
    assert run.data.tags[COMPARISON_TAG] == "true" and run.info.status == "FINISHED"
    parsed = list(csv.DictReader(io.StringIO(_download_text(run_id, "comparison.csv"))))
    assert [r["run_id"] for r in parsed] == [r["run_id"] for r in leaderboard(training_runs(EXP, "two_gaussians"))]
    assert np.isfinite([float(r["test_mse"]) for r in parsed]).all()
