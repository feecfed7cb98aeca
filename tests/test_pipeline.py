"""The main job: steps reused on a second run, force runs anew, registration, the MLproject entry."""
from __future__ import annotations

import subprocess
from dataclasses import replace

import mlflow
from click.testing import CliRunner
from conftest import BIN, REPO, subprocess_env, training_runs

from aeservice.cli import aeservice_command
from aeservice.config import DataConfig, ModelConfig, TrainConfig
from aeservice.pipeline import PipelineResult, PipelineSettings, StepResult, code_version, kinds, run_pipeline
from aeservice.tracking import train_run
from aeservice.training import prepare


def _config(experiment: str) -> TrainConfig:
    return TrainConfig(DataConfig(dataset="curve3d", n_samples=200),
                       ModelConfig(epochs=3, hidden=(16,), patience=0), experiment=experiment)


def test_second_run_reuses_every_step_and_force_runs_anew(tracking_uri, tmp_path):
    settings = PipelineSettings(n_trials=1, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    other_code_size = replace(_config("pipe"), model=ModelConfig(model="pca", latent_dim=1))
    other_id, _ = train_run(prepare(other_code_size))  # in the experiment, but not one of the job's models
    first = run_pipeline(_config("pipe"), settings, echo=lambda line: None)
    assert [s.kind for s in first.steps] == list(kinds()) and not any(s.reused for s in first.steps)
    client = mlflow.MlflowClient()
    for step in first.steps:
        assert step.registered_as == f"curve3d-{step.kind}"
        champion = client.get_model_version_by_alias(step.registered_as, "champion")
        assert champion.run_id == step.model_run_id
    assert first.comparison_run_id and "pca" in first.leaderboard
    assert other_id not in first.leaderboard  # the leaderboard shows the job's own models only
    assert all(step.model_run_id in first.leaderboard for step in first.steps)
    runs_after_first = len(training_runs("pipe"))

    second = run_pipeline(_config("pipe"), settings, echo=lambda line: None)
    assert all(s.reused for s in second.steps)
    assert [s.model_run_id for s in second.steps] == [s.model_run_id for s in first.steps]
    assert len(training_runs("pipe")) == runs_after_first  # nothing trained again
    for step in second.steps:  # and nothing registered twice
        assert len(client.search_model_versions(f"name = '{step.registered_as}'")) == 1

    changed = run_pipeline(_config("pipe"), PipelineSettings(n_trials=1, storage=settings.storage, force=True),
                           echo=lambda line: None)
    assert not any(s.reused for s in changed.steps)
    assert not any(step.model_run_id in changed.leaderboard for step in first.steps)
    assert len(training_runs("pipe")) > runs_after_first
    for step in changed.steps:
        versions = client.search_model_versions(f"name = '{step.registered_as}'")
        assert len(versions) == 2
        assert client.get_model_version_by_alias(step.registered_as, "challenger").run_id == step.model_run_id


def test_code_version_changes_with_the_source(tmp_path, monkeypatch):
    import aeservice

    before = code_version()
    fake = tmp_path / "aeservice"
    fake.mkdir()
    (fake / "__init__.py").write_text("x = 1\n")
    monkeypatch.setattr(aeservice, "__file__", str(fake / "__init__.py"))
    assert code_version() != before


def test_main_passes_its_options_on_and_prints_the_result(monkeypatch):
    import aeservice.pipeline as pipeline

    seen = {}

    def run(config, settings, echo):
        seen.update(config=config, settings=settings)
        return PipelineResult("main1", [StepResult("pca", "r1", "r1", True, "x-pca")], "cmp1", "TABLE")

    monkeypatch.setattr(pipeline, "run_pipeline", run)
    args = ["main", "--dataset", "x.csv", "--label-column", "y", "--n-trials", "3.0", "--seed", "2", "--epochs", "5"]
    result = CliRunner().invoke(aeservice_command, args)
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.data.dataset, config.data.label_column, config.model.seed, config.model.epochs) == ("x.csv", "y", 2, 5)
    assert seen["settings"] == PipelineSettings(n_trials=3, force=False, storage=None)
    assert result.output.splitlines() == [
        "TABLE", "", "main run main1; comparison run cmp1", "1 of 1 steps reused",
        "serve a model (then POST to http://127.0.0.1:5000/invocations):",
        "  mlflow models serve -m models:/x-pca@champion --env-manager local -p 5000"]
    CliRunner().invoke(aeservice_command, [*args[:3], "--label-column", "none"])
    assert seen["config"].data.label_column is None  # what MLproject passes for no labels
    assert seen["config"].model.epochs is None  # auto: trials follow train's epoch rule


def test_mlflow_run_main_entry_point_logs_into_the_aeservice_experiment(tracking_uri, tmp_path):
    env = subprocess_env(tracking_uri)
    proc = subprocess.run(
        [str(BIN / "mlflow"), "run", str(REPO), "-P", "dataset=two_gaussians", "-P", "n_trials=1", "-P", "epochs=2",
         "-P", "experiment=mainjob", "--env-manager", "local"],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 of 4 steps reused" not in proc.stdout and "models:/two_gaussians-vae@champion" in proc.stdout
    [parent] = [r for r in mlflow.search_runs(experiment_names=["mainjob"], output_format="list")
                if r.data.tags.get("aeservice.step") == "main"]
    launcher = mlflow.search_runs(experiment_names=["Default"], output_format="list")
    assert [r.data.tags.get("aeservice.main_run_id") for r in launcher] == [parent.info.run_id]
    client = mlflow.MlflowClient()
    for kind in kinds():
        assert client.get_model_version_by_alias(f"two_gaussians-{kind}", "champion")
