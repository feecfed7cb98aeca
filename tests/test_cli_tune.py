"""The `tune` command: given options are fixed, bad ranges are one line, --register-as registers."""
from __future__ import annotations

import os

import mlflow
import optuna
from click.testing import CliRunner
from conftest import training_runs

from aeservice.cli import aeservice_command
from aeservice.cli.tune import PRUNERS as CLI_PRUNERS
from aeservice.tuning import PRUNERS


def test_the_command_names_the_pruners_of_the_tuning_package():
    """Named in the CLI so that --help does not import Optuna (test_cli_options.py: the searchable options)."""
    assert set(PRUNERS) == set(CLI_PRUNERS)


def test_cli_fixes_given_options_and_reports_a_study_that_only_diverged(stores):
    args = ["tune", "--model", "sparse", "--dataset", "scurve", "--n-samples", "200", "--epochs", "2",
            "--latent-dim", "1", "--hidden", "16", "--sparsity-weight", "0", "--range", "learning_rate=1e10,1e12",
            "--n-trials", "2", "--storage", stores["optuna"], "--study-name", "cli", "--experiment", "cli"]
    result = CliRunner().invoke(aeservice_command, args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "Error: no trial completed; see the failed trials' reasons above"
    assert result.output.count(" FAIL ") == 2 and "diverged" in result.output
    study = optuna.load_study(study_name="cli", storage=stores["optuna"])
    assert len(study.trials) == 2  # the first NaN did not stop the study
    # --latent-dim, --hidden and --sparsity-weight were given: out of the search; the rest searched
    assert set(study.trials[0].params) == {"learning_rate", "weight_decay", "l1", "sparsity_target"}
    parents = [r for r in mlflow.search_runs(experiment_names=["cli"], output_format="list")
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.params["sparsity_weight"] == "0.0"
    assert parents[0].data.params["search.learning_rate"] == "1e+10..1e+12 log"


def test_cli_rejects_bad_ranges_with_one_line(stores):
    cases = {
        ("--model", "pca", "--range", "beta=1,2"): "model pca does not search beta",
        ("--latent-dim", "2", "--range", "latent_dim=1,3"): "latent_dim is fixed by --latent-dim",
        ("--range", "beta=2,1"): "need finite LO <= HI",
        ("--range", "nope=1,2"): "unknown name 'nope'",
        ("--model", "ae", "--objective", "val_elbo"): "objective val_elbo is not logged by model ae",
    }
    for extra, message in cases.items():
        result = CliRunner().invoke(aeservice_command, ["tune", "--dataset", "scurve", "--n-samples", "200", *extra])
        assert result.exit_code == 1 and message in result.output, (extra, result.output)
        assert "Traceback" not in result.output
    assert not os.path.exists("optuna.db")  # rejected before any study was made


def test_tune_register_as_registers_the_best_trial(tracking_uri, tmp_path):
    result = CliRunner().invoke(aeservice_command, [
        "tune", "--model", "ae", "--dataset", "curve3d", "--n-samples", "200", "--epochs", "2", "--n-trials", "2",
        "--hidden", "16", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--experiment", "reg",
        "--register-as", "curve-ae", "--quiet"])
    assert result.exit_code == 0, result.output
    best = [r for r in training_runs("reg") if r.data.tags.get("best_trial") == "true"]
    assert len(best) == 1
    version = mlflow.MlflowClient().get_model_version_by_alias("curve-ae", "champion")
    assert version.run_id == best[0].info.run_id
    assert "champion" in result.output
