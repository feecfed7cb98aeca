"""Optuna plumbing (aeservice.tuning.study) on real SQLite stores: workers share one study with
distinct trials, a dead worker's trial is failed and retried, seeded samplers, where studies live."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
from conftest import BIN, REPO, child_runs, subprocess_env, tiny_tune_config

from aeservice.tuning import TuneSettings, default_storage, search_space, tune
from aeservice.tuning.space import suggest
from aeservice.tuning.study import make_sampler, storage_url

FIXED = ("latent_dim", "hidden")  # options the tests fix, so only the rest is searched


def test_two_workers_share_one_study_with_distinct_trials(stores, tmp_path):
    """One worker under `mlflow run` (MLflow made its parent run), one plain `aeservice tune`."""
    common = dict(model="ae", dataset="scurve", latent_dim="1", hidden="16", epochs="2", n_trials="2",
                  storage=stores["optuna"], study_name="shared", pruner="none")
    mlflow_run = [str(BIN / "mlflow"), "run", str(REPO), "-e", "tune", "--env-manager", "local",
                  "--experiment-name", "workers", *[a for k, v in common.items() for a in ("-P", f"{k}={v}")]]
    cli = [sys.executable, "-m", "aeservice", "tune", "--experiment", "workers",
           *[a for k, v in common.items() for a in (f"--{k.replace('_', '-')}", v)]]
    mlflow.search_experiments()  # the tracking tables exist first: two fresh starts would race to create them
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=subprocess_env(stores["tracking"])) for cmd in (mlflow_run, cli)]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name="shared", storage=stores["optuna"])
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == [0, 1, 2, 3] and all(t.state.name == "COMPLETE" for t in study.trials)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 4  # the workers did not propose the same points
    parents = [r for r in mlflow.search_runs(experiment_names=["workers"], output_format="list")
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2
    seen = []
    for parent in parents:
        kids = child_runs(parent.info.run_id)
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


def test_a_dead_workers_trial_is_failed_and_retried(stores, tmp_path):
    storage = stores["optuna"]
    proc = subprocess.Popen([sys.executable, "-c", _DYING_WORKER, storage], cwd=tmp_path,
                            env=subprocess_env(stores["tracking"]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    result = tune(tiny_tune_config(epochs=2, experiment="dead"), settings, progress=False)
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


def test_studies_live_beside_the_mlflow_store_and_a_path_means_sqlite():
    assert default_storage("sqlite:////data/x/mlflow.db") == "sqlite:////data/x/optuna.db"
    assert default_storage("http://mlflow:5000") == "sqlite:///optuna.db"
    assert storage_url("runs/studies.db") == "sqlite:///runs/studies.db"
    assert storage_url("postgresql://u@db/optuna") == "postgresql://u@db/optuna"


def test_a_study_another_worker_is_still_labelling_opens_and_a_clash_is_refused(tmp_path):
    """Workers that start together race: one may load the study while another has written only
    some of its attributes. The missing ones are written; one that differs is a one-line error."""
    from aeservice.errors import UserError
    from aeservice.tuning.study import open_study

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'race.db'}")
    first = optuna.create_study(study_name="race", storage=storage, direction="minimize")
    first.set_user_attr("model", "ae")  # the creating worker has not written dataset and objective yet
    asked = {"model": "ae", "dataset": "curve3d", "objective": "val_mse"}
    study = open_study("race", storage, "minimize", None, None, asked)
    assert study.user_attrs == asked
    with pytest.raises(UserError, match="dataset 'curve3d' \\(asked 'digits'\\)"):
        open_study("race", storage, "minimize", None, None, {**asked, "dataset": "digits"})
