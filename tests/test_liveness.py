"""The rules that end a dead worker's runs, the heartbeat settings and the retry line, without servers
(tests/test_many_machines.py runs them for real)."""
from __future__ import annotations

import logging
import time

import mlflow
import optuna
import pytest

from aeservice.errors import UserError
from aeservice.tracking.retries import RetryLine
from aeservice.tuning.liveness import HEARTBEAT_TAG, STALE_TRIAL, STALE_WORKER, end_stale_runs, heartbeat_settings


def test_heartbeat_settings_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("AESERVICE_HEARTBEAT_INTERVAL", raising=False)
    monkeypatch.delenv("AESERVICE_HEARTBEAT_GRACE", raising=False)
    assert heartbeat_settings() == (60, 120)
    monkeypatch.setenv("AESERVICE_HEARTBEAT_INTERVAL", "2")
    assert heartbeat_settings() == (2, 4)
    monkeypatch.setenv("AESERVICE_HEARTBEAT_GRACE", "10")
    assert heartbeat_settings() == (2, 10)
    monkeypatch.setenv("AESERVICE_HEARTBEAT_GRACE", "2")
    with pytest.raises(UserError, match="must be longer than its interval"):
        heartbeat_settings()
    monkeypatch.setenv("AESERVICE_HEARTBEAT_INTERVAL", "soon")
    with pytest.raises(UserError, match="AESERVICE_HEARTBEAT_INTERVAL must be whole seconds"):
        heartbeat_settings()


def test_only_runs_of_dead_workers_are_ended(tracking_uri):
    study = optuna.create_study(study_name="s")
    done, running = study.ask(), study.ask()
    study.tell(done, state=optuna.trial.TrialState.FAIL)  # as the heartbeat fails a dead worker's trial
    experiment = mlflow.set_experiment("liveness").experiment_id
    client, now = mlflow.MlflowClient(), time.time()

    def run(tags, parent=None):
        tags = {"optuna.study": "s", **tags, **({"mlflow.parentRunId": parent} if parent else {})}
        return client.create_run(experiment, tags=tags).info.run_id

    dead = run({HEARTBEAT_TAG: str(int(now - 30))})
    alive = run({HEARTBEAT_TAG: str(int(now - 1))})
    dead_trial = run({"optuna.trial": str(done.number)}, dead)
    live_trial = run({"optuna.trial": str(running.number)}, alive)
    other_study = client.create_run(experiment, tags={"optuna.study": "t", HEARTBEAT_TAG: "0"}).info.run_id

    assert sorted(end_stale_runs(study, experiment, grace=10, now=now)) == sorted([dead, dead_trial])
    status = {i: client.get_run(i) for i in (dead, alive, dead_trial, live_trial, other_study)}
    assert [status[i].info.status for i in (dead, dead_trial)] == ["FAILED", "FAILED"]
    assert status[dead].data.tags["aeservice.failure_reason"] == STALE_WORKER
    assert status[dead_trial].data.tags["aeservice.failure_reason"] == STALE_TRIAL
    assert [status[i].info.status for i in (alive, live_trial, other_study)] == ["RUNNING"] * 3
    assert end_stale_runs(study, experiment, grace=10, now=now) == []


def test_urllib3_retry_warnings_become_one_line():
    record = logging.LogRecord(
        "urllib3.connectionpool", logging.WARNING, __file__, 1,
        "Retrying (%r) after connection broken by '%r': %s",
        ("Retry(total=5, connect=5, read=7, redirect=7, status=7)",
         "NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=5000): Failed to establish a new connection: "
         "[Errno 111] Connection refused\")", "/api/2.0/mlflow/runs/log-batch?x=1"), None)
    assert RetryLine("http://127.0.0.1:5000").filter(record)
    assert record.getMessage() == ("tracking server http://127.0.0.1:5000 not answering (connection refused on "
                                   "/api/2.0/mlflow/runs/log-batch); retry 2 of 7 (MLFLOW_HTTP_REQUEST_MAX_RETRIES)")
