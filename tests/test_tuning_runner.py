"""`tune` (aeservice.tuning.runner) on real SQLite stores: trials are nested runs, the best is
tagged, a study resumes, Ctrl-C keeps what finished; the settings from the command's options and
the result's lines without a store."""
from __future__ import annotations

import os
import signal
import threading
import time

import mlflow
import optuna
import pytest
from conftest import by_trial, child_runs, tiny_tune_config

from aeservice.errors import UserError
from aeservice.tracking import train_run
from aeservice.training import prepare
from aeservice.tuning import TuneSettings, tune
from aeservice.tuning.runner import TuneResult

# Options the tests fix, so only the rest is searched.
FIXED = ("latent_dim", "hidden")


def test_trials_are_nested_runs_best_is_tagged_and_resume_adds_trials(stores):
    settings = TuneSettings(n_trials=2, storage=stores["optuna"], study_name="resume", pruner="none", fixed=FIXED)
    first = tune(tiny_tune_config(), settings, progress=False)

    parent = mlflow.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = by_trial(child_runs(first.parent_run_id))
    assert sorted(children) == [0, 1]
    study = optuna.load_study(study_name="resume", storage=stores["optuna"])
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

    second = tune(tiny_tune_config(), TuneSettings(**{**settings.__dict__, "n_trials": 1}), progress=False)
    study = optuna.load_study(study_name="resume", storage=stores["optuna"])
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert second.n_complete == 3 and second.parent_run_id != first.parent_run_id
    assert sorted(by_trial(child_runs(second.parent_run_id))) == [2]
    names = {r.info.run_name for r in [*children.values(), *child_runs(second.parent_run_id)]}
    assert names == {"ae-scurve-t00", "ae-scurve-t01", "ae-scurve-t02"}
    tagged = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string="tags.best_trial = 'true'")
    assert [r.info.run_id for r in tagged] == [second.best_run_id]  # one best across both calls
    assert second.best_value == pytest.approx(min(t.value for t in study.trials))


def test_trial_0_trains_the_given_settings_as_train_does(stores):
    """Not the settings clipped into the search space (weight decay 0 is below its log range):
    the same fit `train` makes, so a study never ends worse than `train`."""
    config = tiny_tune_config()
    result = tune(config, TuneSettings(n_trials=1, storage=stores["optuna"], study_name="given", pruner="none",
                                       fixed=FIXED), progress=False)
    trial = optuna.load_study(study_name="given", storage=stores["optuna"]).trials[0]
    assert trial.params["weight_decay"] == pytest.approx(1e-7)  # what the sampler sees
    child = by_trial(child_runs(result.parent_run_id))[0]
    assert child.data.params["weight_decay"] == "0.0"  # what was trained
    _, trained = train_run(prepare(config))
    assert child.data.metrics["val_mse"] == pytest.approx(trained.metrics["val_mse"], rel=1e-5)


def test_ctrl_c_keeps_finished_trials_and_kills_the_parent(stores):
    storage = stores["optuna"]

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
        tune(tiny_tune_config(epochs=3, experiment="stop"), settings, progress=False)
    watcher.join(timeout=5)

    study = optuna.load_study(study_name="stop", storage=storage)
    assert study.trials[0].state.name == "COMPLETE" and len(study.trials) < 50
    [parent] = [r for r in mlflow.search_runs(experiment_names=["stop"], output_format="list")
                if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    assert parent.data.metrics["n_complete"] >= 1 and "best_value" in parent.data.metrics  # summary logged
    assert all(r.info.status != "RUNNING" for r in child_runs(parent.info.run_id))


def _options(**changes) -> dict:
    options = dict(n_trials=20, timeout=0, storage="auto", study_name="auto", pruner="median", objective="val_mse",
                   direction="auto", ranges=(), prune_startup=5, prune_warmup=None)
    return {**options, **changes}


def test_settings_from_the_command_options():
    settings = TuneSettings.from_options(**_options(), fixed=("hidden",))
    assert settings == TuneSettings(n_trials=20, timeout=None, storage=None, study_name=None, direction=None,
                                    fixed=("hidden",), prune_startup_trials=5)
    given = TuneSettings.from_options(**_options(n_trials=0, timeout=60, storage="s.db", study_name="s",
                                                 direction="maximize", ranges=("beta=0.1,1;l1=1e-5,1e-3", "none"),
                                                 prune_startup=2, prune_warmup=3))
    assert (given.n_trials, given.timeout, given.storage, given.study_name, given.direction) == (None, 60, "s.db", "s",
                                                                                                  "maximize")
    assert given.ranges == {"beta": (0.1, 1.0), "l1": (1e-5, 1e-3)}
    assert (given.prune_startup_trials, given.prune_warmup_epochs) == (2, 3)
    for bad in ({"n_trials": -1}, {"timeout": -1}, {"prune_startup": -1}, {"prune_warmup": -1}):
        with pytest.raises(UserError, match="must not be negative"):
            TuneSettings.from_options(**_options(**bad))
    with pytest.raises(UserError, match="give --n-trials or --timeout"):
        TuneSettings.from_options(**_options(n_trials=0))


def test_result_lines_name_the_study_the_runs_and_the_best_trial():
    result = TuneResult("p1", "s", "sqlite:///optuna.db", 3, 0.012345678, {"learning_rate": 0.00123456, "hidden_depth": 2},
                        "r3", n_complete=4, n_pruned=1, n_failed=0)
    assert result.lines() == ["study s in sqlite:///optuna.db: 4 complete, 1 pruned, 0 failed", "parent run p1",
                              "best trial 3: val_mse 0.012346  learning_rate=0.001235 hidden_depth=2",
                              "best model: runs:/r3/model"]
    none = TuneResult("p1", "s", "x", None, None, {}, None, n_complete=0, n_pruned=0, n_failed=2)
    assert none.lines() == ["study s in x: 0 complete, 0 pruned, 2 failed", "parent run p1"]
