"""One sequence of typed messages; in-process and forked tracking log the very same run."""
from __future__ import annotations

import json
import re
import multiprocessing
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import BIN, small_config, subprocess_env

from aeservice.errors import UserError
from aeservice.tracking.messages import Epoch, Failed, Figures, Finished, ModelSaved, Result, RunStarted, Setup
from aeservice.tracking.steps import train_tracked
from aeservice.tracking.worker import _read, _write
from aeservice.training import prepare


class Recorder:
    """A `Tracker` that keeps what it is sent."""

    save_phase = "saving the model"

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.messages: list = []

    def send(self, message) -> None:
        self.messages.append(message)
        if isinstance(message, Finished):
            self.run_id = "recorded"


def _kinds(messages) -> list[str]:
    return [type(m).__name__ for m in messages]


def test_the_steps_send_one_run_as_typed_messages_in_order():
    recorder = Recorder()
    prepared = prepare(small_config("ae", epochs=2, hidden=(8,)))
    run_id, result = train_tracked(prepared, recorder, tags={"extra": "1"})
    assert run_id == "recorded"
    assert _kinds(recorder.messages) == ["RunStarted", "Setup", "Epoch", "Epoch", "Result", "ModelSaved", "Figures",
                                         "Finished"]
    started, setup, first, _, scores, saved, figures, _ = recorder.messages
    assert isinstance(started, RunStarted) and started.experiment == "pytest" and started.run_name == "ae-digits"
    assert started.tags["extra"] == "1" and started.tags["model"] == "ae" and not started.nested
    assert isinstance(setup, Setup) and setup.params["n_train"] == len(prepared.split.train)
    assert setup.params["data_kind_used"] == "image" and setup.dataset_name == "digits"
    head = len(setup.train_rows)  # the first rows only, enough for the digest, and the shape of all
    assert 0 < head < len(prepared.split.train) and setup.train_shape == prepared.split.train.shape
    np.testing.assert_array_equal(setup.train_rows, prepared.split.train[:head])
    assert isinstance(first, Epoch) and first.epoch == 0 and "val_loss" in first.logs
    assert first.logs["rows_per_second"] > 0 and first.logs["eta_seconds"] >= 0  # the pace, logged as metrics
    assert isinstance(scores, Result) and scores.metrics == result.metrics and scores.used["epochs_used"] == 2
    assert isinstance(saved, ModelSaved) and saved.example.shape == (3, prepared.dataset.n_features)
    assert isinstance(figures, Figures) and figures.path.endswith("plots")


def test_no_artifacts_means_no_model_and_no_figures():
    recorder = Recorder()
    train_tracked(prepare(small_config("pca")), recorder, log_artifacts=False, nested=True)
    assert _kinds(recorder.messages) == ["RunStarted", "Setup", "Epoch", "Result", "Finished"]
    assert recorder.messages[0].nested


def test_a_failure_ends_the_messages_with_failed():
    recorder = Recorder()
    config = small_config("ae", dataset="curve3d", epochs=5, learning_rate=1e12)
    with pytest.raises(UserError, match="training diverged"):
        train_tracked(prepare(config), recorder)
    assert _kinds(recorder.messages)[:2] == ["RunStarted", "Setup"]
    assert recorder.messages[-1] == Failed("FAILED") and "Result" not in _kinds(recorder.messages)

    def interrupt(epoch, logs):
        raise KeyboardInterrupt

    recorder = Recorder()
    with pytest.raises(KeyboardInterrupt):
        train_tracked(prepare(small_config("ae", epochs=2)), recorder, callbacks=[interrupt])
    assert recorder.messages[-1] == Failed("KILLED")


def test_messages_cross_the_pipe_with_their_arrays_out_of_band():
    """The training rows go to the worker from their own memory, however many pipe-fulls they are."""
    ours, theirs = multiprocessing.Pipe()
    rows = np.arange(400_000.0).reshape(-1, 8)  # 3.2 MB: the sender writes while the reader reads
    sent = [Setup({"n_train": len(rows)}, "rows", "here", rows), Epoch(0, {"loss": 1.5}), Finished()]
    sender = threading.Thread(target=lambda: [_write(ours, m) for m in sent])
    sender.start()
    got = [_read(theirs) for _ in sent]
    sender.join()
    assert got[1:] == sent[1:] and got[0].params == {"n_train": 50_000} and got[0].dataset_source == "here"
    np.testing.assert_array_equal(got[0].train_rows, rows)


# `aeservice train` as a process, with a spy in the forked worker: which heavy modules it holds
# when it answers (`worker.phases` is called there, just before the answer).
_TRAIN = """
import json, sys
import aeservice.tracking.worker as worker
real = worker.phases
def spy():
    with open(sys.argv[1], "w") as out:
        json.dump(sorted(m for m in ("keras", "jax", "tensorflow", "torch") if m in sys.modules), out)
    return real()
worker.phases = spy
from aeservice.cli import aeservice_command
aeservice_command(sys.argv[2:])
"""

_DUMP = """
import json, sys, mlflow
client, out = mlflow.MlflowClient(), []
PACE = ("rows_per_second", "eta_seconds")  # timings: their names and steps compare, not their values
def artifacts(run_id, path=None):
    found = []
    for a in client.list_artifacts(run_id, path):
        found += artifacts(run_id, a.path) if a.is_dir else [a.path]
    return found
for r in mlflow.search_runs(experiment_names=[sys.argv[1]], output_format="list", order_by=["start_time ASC"]):
    rid = r.info.run_id
    out.append({
        "status": r.info.status, "name": r.info.run_name, "params": r.data.params,
        "tags": {k: v for k, v in r.data.tags.items() if k != "mlflow.log-model.history"},
        "steps": {k: [m.step for m in client.get_metric_history(rid, k)] for k in r.data.metrics},
        "final": {k: v for k, v in r.data.metrics.items() if not k.endswith(PACE)},
        "artifacts": sorted(artifacts(rid)),
        "model": sorted(a.path for a in mlflow.artifacts.list_artifacts(artifact_uri=f"runs:/{rid}/model")),
        "logged_models": [[m.name, m.params, sorted((x.key, x.value) for x in m.metrics or [] if not x.key.endswith(PACE))]
                          for m in mlflow.search_logged_models(experiment_ids=[r.info.experiment_id],
                                                               filter_string=f"source_run_id = '{rid}'",
                                                               output_format="list")],
        "inputs": [[i.dataset.name, i.dataset.digest, i.dataset.source_type, i.dataset.source, i.dataset.schema,
                    i.dataset.profile, [(t.key, t.value) for t in i.tags]] for i in r.inputs.dataset_inputs],
    })
print("RESULT" + json.dumps(out))
"""


def test_in_process_and_forked_tracking_log_the_same_run(tracking_uri, tmp_path):
    args = ["train", "--model", "vae", "--dataset", "digits", "--epochs", "3", "--hidden", "16", "--patience", "0",
            "--restarts", "1", "--experiment", "same"]
    spied, temp = tmp_path / "heavy.json", tmp_path / "tmp"
    temp.mkdir()
    stderr = {}
    for worker in ("1", "0"):
        env = {**subprocess_env(tracking_uri), "AESERVICE_TRACKING_WORKER": worker, "TMPDIR": str(temp)}
        proc = subprocess.run([sys.executable, "-c", _TRAIN, str(spied), *args], capture_output=True, text=True,
                              timeout=300, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        stderr[worker] = proc.stderr
    assert "tracking worker time" in stderr["1"] and "tracking worker time" not in stderr["0"]
    assert json.loads(spied.read_text()) == []  # the worker applied every message without Keras or JAX
    assert list(temp.iterdir()) == []  # the model's and the figures' folder is gone
    proc = subprocess.run([str(BIN / "python"), "-c", _DUMP, "same"], capture_output=True, text=True, timeout=120,
                          env=subprocess_env(tracking_uri))
    assert proc.returncode == 0, proc.stderr[-2000:]
    forked, in_process = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert forked["status"] == in_process["status"] == "FINISHED"
    assert forked == in_process  # params, tags, metric names, steps and values, artifacts, dataset input
    assert forked["inputs"][0][0] == "digits" and len(forked["artifacts"]) == 5 and "model/MLmodel" in forked["model"]
    assert forked["logged_models"][0][1]["epochs_used"] == "3"  # the model logged after the used sizes

    def said(err: str) -> list[str]:
        lines = [line for line in err.splitlines() if line.startswith(("training ", "epoch "))]
        return [re.sub(r"  \([0-9,]+ rows/s, at most \w+ left\)$", "", line) for line in lines]  # the pace: timings

    assert said(stderr["1"]) == said(stderr["0"]) and len(said(stderr["1"])) == 7  # announce, AE start, VAE
