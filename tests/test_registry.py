"""Registering runs: versions, their tags, the challenger/champion promotion rule and the contract.

One seeded AE (a code of 2 on digits) trained 1, 4 and 40 epochs gives three versions of one
interface on the same training rows whose val_mse always ranks them; other runs change one thing:
the code size, the data set, or the seed that splits the data.
"""
from __future__ import annotations

import contextlib
import subprocess

import mlflow
import pytest
from click.testing import CliRunner
from conftest import BIN, REPO, keeping_nets, small_config, subprocess_env

from aeservice import registry
from aeservice.cli import aeservice_command
from aeservice.errors import UserError
from aeservice.registry import CHALLENGER, CHAMPION, register_run
from aeservice.tracking import MODEL_ARTIFACT, train_run
from aeservice.training import prepare


@pytest.fixture(scope="module")
def runs(module_tracking_uri):
    """worse / middle / better: the AE after 1, 4 and 40 epochs. After 4 epochs too, wide: a code of 3;
    curve3d: 3 features; reseeded: digits split by seed 1 (other training rows); pca / pca_again: two equal PCA runs;
    no_model: a finished run without a model; no_metric: a run without val_mse."""
    out = {}
    ae = dict(hidden=(64,), restarts=1)
    configs = {
        "worse": small_config("ae", epochs=1, **ae), "middle": small_config("ae", epochs=4, **ae),
        "better": small_config("ae", epochs=40, **ae), "wide": small_config("ae", epochs=4, latent_dim=3, **ae),
        "curve3d": small_config("ae", dataset="curve3d", epochs=4, **ae),
        "reseeded": small_config("ae", epochs=4, seed=1, **ae),
        "pca": small_config("pca"), "pca_again": small_config("pca"),
    }
    for key, config in configs.items():
        kept = keeping_nets() if key in ("worse", "middle") else contextlib.nullcontext()
        with kept:  # 1 and 4 epochs lose to PCA: their nets kept anyway, so the three scores differ
            run_id, result = train_run(prepare(config))
        out[key] = (run_id, result.metrics["val_mse"])
    assert out["better"][1] < out["middle"][1] < out["worse"][1]
    # the runs of another interface or other data score better than `worse`: only the contract stops them
    assert max(out["wide"][1], out["curve3d"][1], out["reseeded"][1]) < out["worse"][1]
    assert out["pca"][1] == out["pca_again"][1]
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
    run_id, val_mse = runs["pca"]
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
    reg = register_run(worse, "rule")  # the same run again: its version, not a new one
    assert reg.existing and reg.version == 2 and not reg.promoted and _aliases("rule") == {CHAMPION: 1, CHALLENGER: 2}
    reg = register_run(better, "rule")  # the champion's own run again
    assert reg.existing and reg.version == 1 and not reg.promoted and _aliases("rule") == {CHAMPION: 1, CHALLENGER: 2}
    assert len(mlflow.MlflowClient().search_model_versions("name = 'rule'")) == 2


def test_a_tie_is_not_a_win(runs):
    register_run(runs["pca"][0], "tie")
    reg = register_run(runs["pca_again"][0], "tie")  # another run, the same val_mse on the same rows
    assert not reg.promoted and _aliases("tie") == {CHAMPION: 1, CHALLENGER: 2}
    assert "did not beat it" in str(reg)


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


def test_a_version_records_its_interface_and_data(runs):
    run_id = runs["better"][0]
    register_run(run_id, "contract-tags")
    tags = mlflow.MlflowClient().get_model_version("contract-tags", "1").tags
    digest = mlflow.get_run(run_id).inputs.dataset_inputs[0].dataset.digest  # MLflow's, of the training rows
    assert {k: tags[k] for k in (*registry.INTERFACE, *registry.DATA)} == {
        "model": "ae", "n_features": "64", "latent_dim": "2", "data_kind": "image", "image_shape": "8x8",
        "dataset": "digits", "data_fingerprint": digest}
    assert len(digest) == 8


def test_another_interface_cannot_take_champion_unless_forced(runs):
    register_run(runs["worse"][0], "contract")
    reg = register_run(runs["wide"][0], "contract")  # a lower val_mse, but a code of 3
    assert not reg.promoted and _aliases("contract") == {CHAMPION: 1, CHALLENGER: 2}
    assert reg.lines()[-1] == "champion -> version 1, unchanged: version 2 expects a code of 3, champion 2"
    reg = register_run(runs["curve3d"][0], "contract")
    assert not reg.promoted and reg.lines()[-1] == (
        "champion -> version 1, unchanged: version 3 expects 3 features, champion 64; continuous data, champion "
        "image; image shape none, champion 8x8")
    reg = register_run(runs["curve3d"][0], "contract", force=True)  # its version again, forced to champion
    assert reg.existing and reg.promoted and reg.forced and _aliases("contract") == {CHAMPION: 3, CHALLENGER: 3}
    assert reg.lines()[-1].startswith("champion -> version 3 (forced over version 1 (val_mse ")
    assert reg.lines()[-1].endswith("): version 3 expects 3 features, champion 64; continuous data, champion image; "
                                    "image shape none, champion 8x8)")
    reg = register_run(runs["better"][0], "contract")  # the forced champion's interface is the contract now
    assert not reg.promoted and "version 4 expects 64 features, champion 3" in reg.lines()[-1]


def test_other_data_is_not_compared_unless_forced(runs):
    register_run(runs["worse"][0], "data")
    reg = register_run(runs["reseeded"][0], "data")  # the same interface and a lower val_mse, on other rows
    assert not reg.promoted and _aliases("data") == {CHAMPION: 1, CHALLENGER: 2}
    line = reg.lines()[-1]
    assert line.startswith("champion -> version 1, unchanged: version 2 was trained on other data (digits ")
    assert line.endswith("), so val_mse is not compared")
    reg = register_run(runs["reseeded"][0], "data", force=True)
    assert reg.promoted and reg.forced and "(forced over version 1 (val_mse" in reg.lines()[-1]
    assert "trained on other data" in reg.lines()[-1] and _aliases("data") == {CHAMPION: 2, CHALLENGER: 2}


def test_registering_a_run_again_returns_its_version(runs):
    run_id = runs["better"][0]
    first = register_run(run_id, "again")
    again = register_run(run_id, "again")
    assert (again.version, again.existing, again.promoted) == (first.version, True, False)
    assert len(mlflow.MlflowClient().search_model_versions("name = 'again'")) == 1
    assert again.lines()[0].startswith(f"run {run_id} is already again version 1 (ae on digits, val_mse ")
    assert again.lines()[0].endswith("; nothing registered")
    assert again.lines()[1:] == ["challenger -> version 1", "champion -> version 1, unchanged"]


def test_concurrent_registrations_end_with_the_best_champion(runs, module_tracking_uri, tmp_path):
    """Real `aeservice register` processes at once on one SQLite store, one of them a repeat."""
    keys = ["worse", "better", "middle", "better"]
    procs = [subprocess.Popen([str(BIN / "aeservice"), "register", "--run-id", runs[key][0], "--name", "race"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=subprocess_env(module_tracking_uri)) for key in keys]
    outs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-2000:]
    versions = mlflow.MlflowClient().search_model_versions("name = 'race'")
    assert sorted(v.run_id for v in versions) == sorted(runs[key][0] for key in set(keys))  # no run twice
    champion = mlflow.MlflowClient().get_model_version_by_alias("race", CHAMPION)
    assert champion.run_id == runs["better"][0]
    assert _aliases("race")[CHALLENGER] == len(versions)


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
