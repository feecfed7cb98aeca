"""Real `aeservice train` and `tune` processes, real signals; then the store and the process table.

SIGTERM (what `timeout`, a CI cancel and `docker stop` send) stops a command as Ctrl-C does and
exits 143; a trainer killed by SIGKILL leaves its tracking worker to end the run FAILED and exit.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import BIN, subprocess_env

from aeservice.tracking.messages import REASON_TAG

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")

# Small data and a cap of epochs it never reaches: still training when the signal comes.
TRAIN = ["train", "--model", "ae", "--dataset", "scurve", "--n-samples", "200", "--latent-dim", "1", "--epochs", "100000",
         "--patience", "0", "--hidden", "16", "--experiment", "signals", "--quiet"]


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, Z, ...), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")  # a zombie has exited; only its parent has not read its status


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _start(tracking_uri: str, cwd: Path, *args: str) -> subprocess.Popen:
    mlflow.search_experiments()  # the store's tables exist first: a fresh start in two processes would race
    log = open(cwd / "out.log", "w")
    proc = subprocess.Popen([str(BIN / "aeservice"), *args], stdout=log, stderr=subprocess.STDOUT,
                            env=subprocess_env(tracking_uri), cwd=cwd)
    log.close()
    return proc


def _training_run(proc: subprocess.Popen, log: Path, timeout: float = 180):
    """The process's run, once it has logged a few epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        runs = mlflow.search_runs(experiment_names=["signals"], output_format="list")
        if runs and len(mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "loss")) >= 3:
            return runs[0]
        time.sleep(0.5)
    pytest.fail(f"no epochs logged in {timeout} s:\n{log.read_text()[-2000:]}")


def _until(check, timeout: float) -> float:
    """Seconds until check() held; fails after `timeout`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not within the time allowed"
        time.sleep(0.2)
    return time.monotonic() - start


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigterm_ends_train_like_ctrl_c(tracking_uri, tmp_path):
    proc = _start(tracking_uri, tmp_path, *TRAIN)
    try:
        run = _training_run(proc, tmp_path / "out.log")
        workers = _children(proc.pid)
        assert len(workers) == 1 and _alive(workers[0])  # the forked tracking worker
        os.kill(proc.pid, signal.SIGTERM)  # the trainer alone, as `timeout` and `docker stop` do
        assert proc.wait(timeout=60) == 143
    finally:
        _stop(proc)
    assert mlflow.get_run(run.info.run_id).info.status == "KILLED"
    assert REASON_TAG not in mlflow.get_run(run.info.run_id).data.tags  # stopped on request: nothing failed
    _until(lambda: not _alive(workers[0]), 15)
    assert (tmp_path / "out.log").read_text().strip().splitlines()[-1] == "terminated (SIGTERM)"


def test_a_trainer_killed_outright_leaves_no_running_run_and_no_worker(tracking_uri, tmp_path):
    proc = _start(tracking_uri, tmp_path, *TRAIN)
    try:
        run = _training_run(proc, tmp_path / "out.log")
        [worker] = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # what the OOM killer sends: nothing can be caught
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        _stop(proc)
    _until(lambda: mlflow.get_run(run.info.run_id).info.status != "RUNNING", 15)  # "within seconds"
    ended = mlflow.get_run(run.info.run_id)
    assert ended.info.status == "FAILED"
    assert "the training process ended before the run did" in ended.data.tags[REASON_TAG]
    _until(lambda: not _alive(worker), 15)
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")) >= 3  # the curve so far kept


def test_sigterm_ends_tune_like_ctrl_c_and_keeps_finished_trials(tracking_uri, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = _start(tracking_uri, tmp_path, "tune", "--model", "ae", "--dataset", "scurve", "--n-samples", "200",
                  "--epochs", "3", "--hidden", "16", "--latent-dim", "1", "--n-trials", "50", "--pruner", "none",
                  "--storage", storage, "--study-name", "term", "--experiment", "signals", "--quiet")
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # until a trial has finished
            assert proc.poll() is None, (tmp_path / "out.log").read_text()[-2000:]
            try:
                trials = optuna.load_study(study_name="term", storage=storage).trials
            except Exception:  # the study (or its tables) is not there yet
                trials = []
            if any(t.state.name == "COMPLETE" for t in trials):
                break
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
    finally:
        _stop(proc)
    study = optuna.load_study(study_name="term", storage=storage)
    assert study.trials[0].state.name == "COMPLETE" and len(study.trials) < 50
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    runs = mlflow.search_runs(experiment_names=["signals"], output_format="list")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED" and parent.data.metrics["n_complete"] >= 1  # the summary was logged
    assert all(r.info.status != "RUNNING" for r in runs)
    log = (tmp_path / "out.log").read_text()
    assert "SIGTERM: stopping after this epoch" in log and log.strip().splitlines()[-1] == "terminated (SIGTERM)"
