"""Registering runs: versions, their tags, and the challenger/champion promotion rule.

PCA runs make the promotion rule deterministic: on digits, 10 components always beat 2.
"""
from __future__ import annotations

import subprocess

import mlflow
import pytest
from click.testing import CliRunner
from conftest import BIN, REPO, small_config, subprocess_env

from aeservice import registry
from aeservice.cli import aeservice_command
from aeservice.errors import UserError
from aeservice.registry import CHALLENGER, CHAMPION, register_run
from aeservice.tracking import MODEL_ARTIFACT, train_run
from aeservice.training import prepare


@pytest.fixture(scope="module")
def runs(module_tracking_uri):
    """worse / better: PCA with 2 and 10 components; no_model: a finished run without a model."""
    out = {}
    for key, latent in (("worse", 2), ("better", 10)):
        run_id, result = train_run(prepare(small_config("pca", latent_dim=latent)))
        out[key] = (run_id, result.metrics["val_mse"])
    assert out["better"][1] < out["worse"][1]
    out["no_model"] = (train_run(prepare(small_config("pca")), log_artifacts=False)[0], None)
    mlflow.set_experiment("pytest")
    with mlflow.start_run() as bare:
        mlflow.log_param("nothing", 1)
    out["no_metric"] = (bare.info.run_id, None)
    return out


def _aliases(name: str) -> dict[str, int]:
    client = mlflow.MlflowClient()
    return {alias: int(client.get_model_version_by_alias(name, alias).version) for alias in (CHAMPION, CHALLENGER)}


def test_first_version_is_champion_and_is_tagged(runs):
    run_id, val_mse = runs["worse"]
    reg = register_run(run_id, "first")
    assert (reg.version, reg.champion_version, reg.challenger_version) == (1, 1, 1)
    assert reg.promoted and reg.previous_champion is None
    assert _aliases("first") == {CHAMPION: 1, CHALLENGER: 1}
    version = mlflow.MlflowClient().get_model_version("first", "1")
    assert version.run_id == run_id
    assert version.tags["model"] == "pca" and version.tags["dataset"] == "digits"
    assert float(version.tags["val_mse"]) == pytest.approx(val_mse)
    assert version.tags["source_run_id"] == run_id
    lines = reg.lines()
    assert lines[0].startswith("registered first version 1") and run_id in lines[0]
    assert "challenger -> version 1" in lines and any(line.startswith("champion -> version 1") for line in lines)
    loaded = mlflow.pyfunc.load_model("models:/first@champion")
    assert loaded.metadata.run_id == run_id


def test_worse_version_is_challenger_and_champion_stays(runs):
    better, worse = runs["better"][0], runs["worse"][0]
    register_run(better, "rule")
    reg = register_run(worse, "rule")
    assert (reg.version, reg.challenger_version, reg.champion_version) == (2, 2, 1)
    assert not reg.promoted and reg.previous_champion == 1
    assert _aliases("rule") == {CHAMPION: 1, CHALLENGER: 2}
    assert "champion -> version 1" in str(reg) and "did not beat it" in str(reg)
    reg = register_run(worse, "rule")
    assert not reg.promoted and _aliases("rule") == {CHAMPION: 1, CHALLENGER: 3}
    reg = register_run(better, "rule")  # the champion's own run again: a tie is not a win
    assert not reg.promoted and _aliases("rule") == {CHAMPION: 1, CHALLENGER: 4}


def test_better_version_takes_champion(runs):
    register_run(runs["worse"][0], "climb")
    reg = register_run(runs["better"][0], "climb")
    assert reg.promoted and reg.previous_champion == 1 and not reg.forced
    assert _aliases("climb") == {CHAMPION: 2, CHALLENGER: 2}
    assert "beat version 1" in str(reg)


def test_force_promotes_a_worse_version(runs):
    register_run(runs["better"][0], "forced")
    reg = register_run(runs["worse"][0], "forced", force=True)
    assert reg.promoted and reg.forced and reg.previous_champion == 1
    assert _aliases("forced") == {CHAMPION: 2, CHALLENGER: 2}
    assert "forced" in str(reg)


def test_champion_score_is_read_from_its_version_tag(runs):
    """The rule compares against the champion version's val_mse tag, not a cached number."""
    register_run(runs["worse"][0], "tagged")
    mlflow.MlflowClient().set_model_version_tag("tagged", "1", "val_mse", "0")  # nothing beats 0
    reg = register_run(runs["better"][0], "tagged")
    assert not reg.promoted and reg.previous_champion_val_mse == 0.0
    assert _aliases("tagged") == {CHAMPION: 1, CHALLENGER: 2}


@pytest.mark.parametrize("key, run_id, name, message", [
    (None, "0123456789abcdef0123456789abcdef", "x", "unknown run id '0123456789abcdef0123456789abcdef'"),
    (None, "not-a-run", "x", "unknown run id 'not-a-run'"),
    (None, " ", "x", "--run-id is empty"),
    ("worse", None, " ", "--name is empty"),
    ("no_metric", None, "x", "has no val_mse metric"),
    ("no_model", None, "x", "has no logged model at runs:/"),
])
def test_bad_registrations_name_the_problem(runs, key, run_id, name, message):
    run_id = runs[key][0] if key else run_id
    with pytest.raises(UserError) as info:
        register_run(run_id, name)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_registration_leaves_no_version(runs):
    with pytest.raises(UserError):
        register_run(runs["no_model"][0], "nothing-here")
    assert not mlflow.MlflowClient().search_registered_models(filter_string="name = 'nothing-here'")


def test_model_artifact_name_matches_tracking():
    assert registry.MODEL_ARTIFACT == MODEL_ARTIFACT


def test_cli_register_prints_version_and_aliases(runs):
    runner = CliRunner()
    result = runner.invoke(aeservice_command, ["register", "--run-id", runs["better"][0], "--name", "cli"])
    assert result.exit_code == 0, result.output
    assert "registered cli version 1" in result.output and "champion -> version 1" in result.output
    result = runner.invoke(aeservice_command, ["register", "--run-id", runs["worse"][0], "--name", "cli", "--force"])
    assert result.exit_code == 0, result.output
    assert "challenger -> version 2" in result.output and "champion -> version 2 (forced" in result.output
    result = runner.invoke(aeservice_command,
                           ["register", "--run-id", runs["worse"][0], "--name", "cli", "--force", "false"])
    assert result.exit_code == 0 and "champion -> version 2" in result.output and "unchanged" in result.output
    result = runner.invoke(aeservice_command, ["register", "--run-id", "nope", "--name", "cli"])
    assert result.exit_code == 1 and "Error: unknown run id 'nope'" in result.output
    assert "Traceback" not in result.output




def test_mlflow_run_register_entry_point(runs, module_tracking_uri):
    proc = subprocess.run(
        [str(BIN / "mlflow"), "run", str(REPO), "-e", "register", "-P", f"run_id={runs['better'][0]}",
         "-P", "name=mlproject", "--env-manager", "local", "--experiment-name", "register"],
        capture_output=True, text=True, timeout=600, env=subprocess_env(module_tracking_uri))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "registered mlproject version 1" in proc.stdout
    assert _aliases("mlproject") == {CHAMPION: 1, CHALLENGER: 1}


def test_register_command_error_in_a_real_process(module_tracking_uri, tmp_path):
    proc = subprocess.run([str(BIN / "aeservice"), "register", "--run-id", "nope", "--name", "x"],
                          capture_output=True, text=True, timeout=300, env=subprocess_env(module_tracking_uri), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: unknown run id 'nope'")
    assert "Traceback" not in proc.stderr
