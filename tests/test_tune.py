"""`tune` on real SQLite stores: nested trial runs, pruning, failures, resume, parallel workers, seeds."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import mlflow
import optuna
import pytest
from click.testing import CliRunner
from conftest import BIN, REPO, subprocess_env

from aeservice.config import DataConfig, ModelConfig, TrainConfig
from aeservice.errors import UserError
from aeservice.tuning import OPTION_PARAMS, PRUNERS, TuneSettings, default_storage, search_space, tune
from aeservice.tuning.space import parse_ranges, suggest
from aeservice.tuning.study import make_sampler, storage_url

# Tiny data and nets: every trial is a couple of seconds, most of it logging the model.
FIXED = ("latent_dim", "hidden")


def tiny(kind: str = "ae", epochs: int = 3, experiment: str = "tune-tests", **model_kw) -> TrainConfig:
    model = dict(model=kind, epochs=epochs, hidden=(16,), latent_dim=1, batch_size=64, patience=0)
    model.update(model_kw)
    return TrainConfig(DataConfig(dataset="scurve", n_samples=200), ModelConfig(**model), experiment=experiment)


@pytest.fixture()
def store(tracking_uri, tmp_path, monkeypatch):
    """Fresh MLflow and Optuna SQLite stores; artifacts land in the temp folder, not the repo."""
    monkeypatch.chdir(tmp_path)
    return {"tracking": tracking_uri, "optuna": f"sqlite:///{tmp_path / 'optuna.db'}"}


def _children(parent_run_id: str) -> list:
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def _by_trial(runs) -> dict[int, object]:
    return {int(r.data.tags["optuna.trial"]): r for r in runs}


def test_trials_are_nested_runs_best_is_tagged_and_resume_adds_trials(store):
    settings = TuneSettings(n_trials=2, storage=store["optuna"], study_name="resume", pruner="none", fixed=FIXED)
    first = tune(tiny(), settings, progress=False)

    parent = mlflow.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = _by_trial(_children(first.parent_run_id))
    assert sorted(children) == [0, 1]
    study = optuna.load_study(study_name="resume", storage=store["optuna"])
    for trial in study.trials:  # each child logged what train logs, and its val_mse is the trial's value
        run = children[trial.number]
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"
        assert run.data.metrics["val_mse"] == pytest.approx(trial.value)
        assert {"test_mse", "explained_variance"} <= set(run.data.metrics)
        assert run.data.params["learning_rate"] == str(trial.params["learning_rate"])
        assert run.data.params["hidden"] == "16"  # fixed, so not searched
        assert run.data.tags["model"] == "ae" and run.data.tags["dataset"] == "scurve"
    client = mlflow.MlflowClient()
    some_child = children[0].info.run_id  # every child logs the same way
    assert "plots" in {a.path for a in client.list_artifacts(some_child)}  # as `train` logs
    assert mlflow.pyfunc.load_model(f"runs:/{some_child}/model") is not None
    assert set(study.trials[0].params) == {"learning_rate", "weight_decay"}
    best = min(study.trials, key=lambda t: t.value)
    assert first.best_trial_number == best.number and first.best_value == pytest.approx(best.value)
    assert first.best_run_id == children[best.number].info.run_id
    assert [n for n, r in children.items() if r.data.tags.get("best_trial") == "true"] == [best.number]
    # the parent's summary
    assert parent.data.params["study_name"] == "resume" and parent.data.params["best_trial"] == str(best.number)
    assert parent.data.params["best.learning_rate"] == str(best.params["learning_rate"])
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert (parent.data.metrics["n_complete"], parent.data.metrics["n_pruned"], parent.data.metrics["n_failed"]) \
        == (2, 0, 0)
    plots = {a.path for a in client.list_artifacts(first.parent_run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/param_importances.png"} <= plots

    second = tune(tiny(), TuneSettings(**{**settings.__dict__, "n_trials": 1}), progress=False)
    study = optuna.load_study(study_name="resume", storage=store["optuna"])
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert second.n_complete == 3 and second.parent_run_id != first.parent_run_id
    assert sorted(_by_trial(_children(second.parent_run_id))) == [2]
    tagged = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string="tags.best_trial = 'true'")
    assert [r.info.run_id for r in tagged] == [second.best_run_id]  # one best across both calls
    assert second.best_value == pytest.approx(min(t.value for t in study.trials))


@pytest.mark.parametrize("pruner", ["median", "asha"])
def test_a_poor_trial_is_pruned_and_its_run_killed(store, pruner):
    storage = store["optuna"]
    fixed = ("latent_dim", "hidden", "weight_decay")
    settings = TuneSettings(n_trials=2, storage=storage, study_name="prune", fixed=fixed, pruner=pruner,
                            ranges={"learning_rate": (1e-7, 1e-1)}, prune_startup_trials=1, prune_warmup_epochs=1)
    # Make the study first and queue a fast learner, then one that barely moves: the median pruner
    # (one complete trial suffices here) stops the second after its first epoch, and so does ASHA
    # (the second trial is not in the best third of those that reached that epoch).
    study = optuna.create_study(study_name="prune", storage=storage)
    study.enqueue_trial({"learning_rate": 3e-2})
    study.enqueue_trial({"learning_rate": 1e-7})
    result = tune(tiny(epochs=4), settings, progress=False)

    study = optuna.load_study(study_name="prune", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert (result.n_complete, result.n_pruned, result.n_failed) == (1, 1, 0)
    pruned = _by_trial(_children(result.parent_run_id))[1]
    assert pruned.info.status == "KILLED" and pruned.data.tags["optuna.state"] == "PRUNED"
    steps = mlflow.MlflowClient().get_metric_history(pruned.info.run_id, "val_loss")
    assert len(steps) < 4  # Keras stopped when the callback raised
    assert "val_mse" not in pruned.data.metrics


def test_a_diverging_trial_fails_and_the_study_goes_on(store):
    storage = store["optuna"]
    settings = TuneSettings(n_trials=2, storage=storage, study_name="nan", pruner="none",
                            fixed=("latent_dim", "hidden", "weight_decay"), ranges={"learning_rate": (1e-4, 1e12)})
    study = optuna.create_study(study_name="nan", storage=storage)
    study.enqueue_trial({"learning_rate": 1e11})  # loss turns NaN in the first epoch
    study.enqueue_trial({"learning_rate": 1e-3})
    result = tune(tiny(epochs=2), settings, progress=False)

    study = optuna.load_study(study_name="nan", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert "diverged" in study.trials[0].user_attrs["fail_reason"]
    runs = _by_trial(_children(result.parent_run_id))
    assert runs[0].info.status == "FAILED" and runs[0].data.tags["optuna.state"] == "FAIL"
    assert runs[1].info.status == "FINISHED"
    assert result.best_trial_number == 1 and result.n_failed == 1
    assert mlflow.get_run(result.parent_run_id).info.status == "FINISHED"


def test_cli_fixes_given_options_and_reports_a_study_that_only_diverged(store):
    args = ["tune", "--model", "sparse", "--dataset", "scurve", "--n-samples", "200", "--epochs", "2",
            "--latent-dim", "1", "--hidden", "16", "--sparsity-weight", "0", "--range", "learning_rate=1e10,1e12",
            "--n-trials", "2", "--storage", store["optuna"], "--study-name", "cli", "--experiment", "cli"]
    from aeservice.cli import aeservice_command

    result = CliRunner().invoke(aeservice_command, args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "Error: no trial completed; see the failed trials' reasons above"
    assert result.output.count(" FAIL ") == 2 and "diverged" in result.output
    study = optuna.load_study(study_name="cli", storage=store["optuna"])
    assert len(study.trials) == 2  # the first NaN did not stop the study
    # --latent-dim, --hidden and --sparsity-weight were given: out of the search; the rest searched
    assert set(study.trials[0].params) == {"learning_rate", "weight_decay", "l1", "sparsity_target"}
    parents = [r for r in mlflow.search_runs(experiment_names=["cli"], output_format="list")
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.params["sparsity_weight"] == "0.0"
    assert parents[0].data.params["search.learning_rate"] == "1e+10..1e+12 log"


def test_cli_rejects_bad_ranges_with_one_line(store):
    from aeservice.cli import aeservice_command

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




def test_two_workers_share_one_study_with_distinct_trials(store, tmp_path):
    """One worker under `mlflow run` (MLflow made its parent run), one plain `aeservice tune`."""
    common = dict(model="ae", dataset="scurve", latent_dim="1", hidden="16", epochs="2", n_trials="2",
                  storage=store["optuna"], study_name="shared", pruner="none")
    mlflow_run = [str(BIN / "mlflow"), "run", str(REPO), "-e", "tune", "--env-manager", "local",
                  "--experiment-name", "workers", *[a for k, v in common.items() for a in ("-P", f"{k}={v}")]]
    cli = [sys.executable, "-m", "aeservice", "tune", "--experiment", "workers",
           *[a for k, v in common.items() for a in (f"--{k.replace('_', '-')}", v)]]
    mlflow.search_experiments()  # the tracking tables exist first: two fresh starts would race to create them
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=subprocess_env(store["tracking"])) for cmd in (mlflow_run, cli)]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name="shared", storage=store["optuna"])
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == [0, 1, 2, 3] and all(t.state.name == "COMPLETE" for t in study.trials)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 4  # the workers did not propose the same points
    parents = [r for r in mlflow.search_runs(experiment_names=["workers"], output_format="list")
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2
    seen = []
    for parent in parents:
        kids = _children(parent.info.run_id)
        assert len(kids) == 2 and all(k.info.experiment_id == parent.info.experiment_id for k in kids)
        seen += [int(k.data.tags["optuna.trial"]) for k in kids]
    assert sorted(seen) == [0, 1, 2, 3]
    assert any(p.data.tags.get("mlflow.source.type") == "PROJECT" for p in parents)


_DYING_WORKER = """
import sys
from aeservice.config import DataConfig, ModelConfig, TrainConfig
from aeservice.tuning import TuneSettings, tune
cfg = TrainConfig(DataConfig(dataset="scurve", n_samples=200),
                  ModelConfig(model="ae", epochs=100000, hidden=(16,), latent_dim=1, patience=0), experiment="dead")
tune(cfg, TuneSettings(n_trials=1, storage=sys.argv[1], study_name="dead", pruner="none",
                       fixed=("latent_dim", "hidden"), heartbeat_interval=1), progress=False)
"""


def test_a_dead_workers_trial_is_failed_and_retried(store, tmp_path):
    storage = store["optuna"]
    proc = subprocess.Popen([sys.executable, "-c", _DYING_WORKER, storage], cwd=tmp_path,
                            env=subprocess_env(store["tracking"]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until its trial is running, then kill it hard
            time.sleep(1)
            try:
                trials = optuna.load_study(study_name="dead", storage=storage).trials
            except KeyError:
                continue
            if trials and trials[0].state.name == "RUNNING" and trials[0].params:  # training has begun
                break
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    time.sleep(3)  # past the grace period (2 x the 1 s heartbeat)
    settings = TuneSettings(n_trials=1, storage=storage, study_name="dead", pruner="none", fixed=FIXED,
                            heartbeat_interval=1)
    result = tune(tiny(epochs=2, experiment="dead"), settings, progress=False)
    study = optuna.load_study(study_name="dead", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]  # nothing stuck RUNNING
    assert study.trials[1].system_attrs["failed_trial"] == 0  # the dead trial's params, tried again
    assert study.trials[1].params == study.trials[0].params
    assert result.best_trial_number == 1


def test_same_seed_proposes_the_same_trials_and_workers_differ():
    space = search_space("vae", n_features=64)

    def proposals(seed: int, n: int = 14, start: int = 0) -> list[dict]:
        study = optuna.create_study(sampler=make_sampler(seed))
        for _ in range(start):  # other workers' trials already in the study
            study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL))
        out = []
        for _ in range(n):  # past TPE's 10 random start-up trials
            trial = study.ask()
            values = suggest(trial, space)
            study.tell(trial, values["learning_rate"] * values["latent_dim"])
            out.append(values)
        return out

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    first = proposals(0)
    assert first == proposals(0)
    assert first != proposals(1)
    assert len({tuple(sorted(p.items())) for p in first}) == len(first)
    assert proposals(0, n=3, start=3)[0] != first[0]  # a resumed study does not replay its start


def test_search_space_table_and_defaults():
    from aeservice.cli.tune import PRUNERS as CLI_PRUNERS
    from aeservice.models import MODELS

    assert set(MODELS) == {"pca", "ae", "sparse", "vae"} and set(PRUNERS) == set(CLI_PRUNERS)
    for kind, model in MODELS.items():  # every searched name can be fixed by an option
        assert all(any(s.name in names for names in OPTION_PARAMS.values()) for s in model.search), kind
    assert "beta" in search_space("vae", 64) and "beta" not in search_space("ae", 64)
    assert {"l1", "sparsity_weight", "sparsity_target"} <= set(search_space("sparse", 64))
    assert list(search_space("pca", 3)) == ["latent_dim"]
    assert search_space("ae", 3)["latent_dim"].high == 3 and search_space("ae", 64)["latent_dim"].high == 32
    assert "latent_dim" not in search_space("ae", 64, fixed=("latent_dim",))
    assert not {"hidden_width", "hidden_depth"} & set(search_space("ae", 64, fixed=("hidden",)))
    narrowed = search_space("vae", 64, ranges=parse_ranges(["beta=0.1,1;latent-dim=2,8"]))
    assert (narrowed["beta"].low, narrowed["beta"].high, narrowed["latent_dim"].high) == (0.1, 1.0, 8)
    with pytest.raises(UserError, match="at most 3 components"):
        search_space("pca", 3, ranges={"latent_dim": (1, 5)})
    assert default_storage("sqlite:////data/x/mlflow.db") == "sqlite:////data/x/optuna.db"
    assert default_storage("http://mlflow:5000") == "sqlite:///optuna.db"
    assert storage_url("runs/studies.db") == "sqlite:///runs/studies.db"
    assert storage_url("postgresql://u@db/optuna") == "postgresql://u@db/optuna"


def test_ctrl_c_keeps_finished_trials_and_kills_the_parent(store):
    storage = store["optuna"]

    def press_ctrl_c_after_one_trial() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                trials = optuna.load_study(study_name="stop", storage=storage).trials
            except Exception:  # the study (or its tables) is not there yet
                continue
            if any(t.state.name == "COMPLETE" for t in trials):
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to the main thread
                return

    watcher = threading.Thread(target=press_ctrl_c_after_one_trial, daemon=True)
    watcher.start()
    settings = TuneSettings(n_trials=50, storage=storage, study_name="stop", pruner="none", fixed=FIXED)
    with pytest.raises(KeyboardInterrupt):
        tune(tiny(epochs=3, experiment="stop"), settings, progress=False)
    watcher.join(timeout=5)

    study = optuna.load_study(study_name="stop", storage=storage)
    assert study.trials[0].state.name == "COMPLETE" and len(study.trials) < 50
    [parent] = [r for r in mlflow.search_runs(experiment_names=["stop"], output_format="list")
                if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    assert parent.data.metrics["n_complete"] >= 1 and "best_value" in parent.data.metrics  # summary logged
    assert all(r.info.status != "RUNNING" for r in _children(parent.info.run_id))
