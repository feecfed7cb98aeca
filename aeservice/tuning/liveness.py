"""Workers that die without a word: their Optuna trial and their MLflow runs do not stay RUNNING.

A `tune` worker killed outright (SIGKILL, the OOM killer, a lost machine) can neither fail its
trial nor end its runs. Optuna's heartbeat covers the trial: every worker records one per running
trial every `interval` seconds, and the first worker on the study to start a trial after `grace`
seconds of silence marks the trial FAIL and queues its parameters again (`study.open_storage`).

The MLflow side is done here, by the workers still alive (or the next one to start):

- the parent run of every worker carries the tag `aeservice.heartbeat` (Unix seconds), refreshed
  every `interval` seconds by a daemon thread (`RunHeartbeat`);
- `end_stale_runs` runs when a worker starts, after each of its trials and when it ends. On the
  tracking server it looks for RUNNING runs of the same study (tag `optuna.study`): a trial run
  (tag `optuna.trial`) whose Optuna trial has already finished (the heartbeat failed it) and a
  parent run whose heartbeat is older than `grace` are ended FAILED, tagged
  `aeservice.failure_reason`.

So a dead worker's runs end at the first trial end (or start, or end of a worker) on the study
after its heartbeats have gone stale: about `grace` seconds plus one trial after it died. With
no other worker on the study they stay RUNNING until the next `tune` on it starts. Clocks of
the machines must agree to well within `grace` (NTP does).
"""
from __future__ import annotations

import os
import threading
import time

import mlflow

from aeservice.errors import UserError
from aeservice.tracking.messages import REASON_TAG

__all__ = ["HEARTBEAT_TAG", "heartbeat_settings", "RunHeartbeat", "end_stale_runs", "fail_unrecorded", "STALE_TRIAL",
           "STALE_WORKER", "UNRECORDED"]

HEARTBEAT_TAG = "aeservice.heartbeat"
INTERVAL_ENV, GRACE_ENV = "AESERVICE_HEARTBEAT_INTERVAL", "AESERVICE_HEARTBEAT_GRACE"
STALE_TRIAL = "its Optuna trial was failed by the heartbeat (the worker stopped sending it); ended by another worker"
UNRECORDED = "the study's database was lost before it stored this trial's result; the trial is retried on resume"
STALE_WORKER = "the tune worker stopped sending its heartbeat (killed or lost); ended by another worker"


def heartbeat_settings(interval: int = 60, grace: int | None = None) -> tuple[int, int]:
    """(interval, grace) in seconds: AESERVICE_HEARTBEAT_INTERVAL and AESERVICE_HEARTBEAT_GRACE
    when set, else the given values; grace defaults to twice the interval."""
    def read(name: str, default: int | None) -> int | None:
        text = os.environ.get(name, "").strip()
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise UserError(f"{name} must be whole seconds, got {text!r}") from None
        if value < 1:
            raise UserError(f"{name} must be at least 1 second, got {value}")
        return value

    interval = read(INTERVAL_ENV, interval)
    grace = read(GRACE_ENV, grace) or 2 * interval
    if grace <= interval:
        raise UserError(f"the heartbeat grace period ({grace} s) must be longer than its interval ({interval} s)")
    return interval, grace


class RunHeartbeat:
    """Context manager: tag the run with the time every `interval` seconds until the block ends."""

    def __init__(self, run_id: str, interval: float):
        self.run_id, self.interval = run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="aeservice-run-heartbeat", daemon=True)

    def __enter__(self) -> "RunHeartbeat":
        mlflow.MlflowClient().set_tag(self.run_id, HEARTBEAT_TAG, str(int(time.time())))
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)  # a beat stuck in retries to a lost server is a daemon: it dies with us

    def _beat(self) -> None:
        client = mlflow.MlflowClient()
        while not self._stop.wait(self.interval):
            try:
                client.set_tag(self.run_id, HEARTBEAT_TAG, str(int(time.time())))
            except Exception:  # noqa: BLE001  (the server is away: the next beat tries again)
                pass


def end_stale_runs(study, experiment_id: str, grace: float, now: float | None = None) -> list[str]:
    """End FAILED the RUNNING runs of `study` whose worker is gone (see the module's text).
    Returns the ids of the runs it ended."""
    client = mlflow.MlflowClient()
    runs = client.search_runs(
        [experiment_id], max_results=1000,
        filter_string=f"tags.`optuna.study` = '{study.study_name}' and attributes.status = 'RUNNING'")
    if not runs:
        return []
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    now = time.time() if now is None else now
    ended = []
    for run in runs:
        tags = run.data.tags
        reason = None
        if "optuna.trial" in tags:
            state = states.get(int(tags["optuna.trial"]))
            if state is not None and state.is_finished():
                reason = STALE_TRIAL
        elif HEARTBEAT_TAG in tags and now - float(tags[HEARTBEAT_TAG]) > grace:
            reason = STALE_WORKER
        if reason:
            try:
                _end_failed(client, run.info.run_id, reason)
            except mlflow.exceptions.MlflowException:
                # Survivors end the same stale run at once, and the tag's insert of one loses the
                # race (PostgreSQL: a duplicate key). Done by the other unless still RUNNING.
                time.sleep(0.5)
                if client.get_run(run.info.run_id).info.status != "RUNNING":
                    continue
                _end_failed(client, run.info.run_id, reason)
            ended.append(run.info.run_id)
    return ended


def _end_failed(client, run_id: str, reason: str) -> None:
    client.set_tag(run_id, REASON_TAG, reason)
    client.set_terminated(run_id, "FAILED")


def fail_unrecorded(parent_run_id: str, told: set[int]) -> list[str]:
    """The study's database went away: the trial runs of this worker whose result it did not store
    (numbers not in `told`) end FAILED, tagged, even if they trained to the end. The study has
    them RUNNING, and the next worker fails and retries them (the heartbeat); nothing claims a
    result the study does not have. Best effort: returns the ids it could end."""
    client, ended = mlflow.MlflowClient(), []
    try:
        runs = client.search_runs([mlflow.get_run(parent_run_id).info.experiment_id], max_results=1000,
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
        for run in runs:
            number = run.data.tags.get("optuna.trial")
            if number is None or int(number) in told or run.data.tags.get("optuna.state") in ("PRUNED", "FAIL"):
                continue
            client.set_tag(run.info.run_id, "optuna.state", "FAIL")
            client.set_tag(run.info.run_id, REASON_TAG, UNRECORDED)
            client.set_terminated(run.info.run_id, "FAILED")
            ended.append(run.info.run_id)
    except Exception:  # noqa: BLE001  (the tracking server may be away too: the run stays as it was)
        pass
    return ended
