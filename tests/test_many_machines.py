"""Many machines for real: PostgreSQL, an `mlflow server` with proxied artifacts, `tune` workers.

One throw-away PostgreSQL cluster and one tracking server (its runs in that cluster, artifacts
proxied into a temp folder) serve the whole module (tests/servers.py). Every command runs as a
real process in a folder of its own, with nothing but MLFLOW_TRACKING_URI and the storage URL in
common, as on separate machines. The faults are real: SIGKILL to a worker's process group, the
tracking server stopped and started again on its port, PostgreSQL shut down and started again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, served, subprocess_env
from servers import PostgresCluster, TrackingServer, postgres_bin

PG_BIN = postgres_bin()
pytestmark = pytest.mark.skipif(PG_BIN is None, reason="no PostgreSQL server binaries (initdb, pg_ctl, postgres)")

HEARTBEAT = {"AESERVICE_HEARTBEAT_INTERVAL": "2", "AESERVICE_HEARTBEAT_GRACE": "10"}  # seconds: a dead trial is found quickly
TINY = ("--dataset", "curve3d", "--n-samples", "200", "--epochs", "3", "--hidden", "16", "--batch-size", "64")
WAIT = 600  # seconds any one process may take before the test gives up on it


@pytest.fixture(scope="module")
def cluster():
    pg = PostgresCluster(PG_BIN)
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


@pytest.fixture(scope="module")
def server(cluster, tmp_path_factory):
    """The tracking server, and this process's MLflow pointed at it for the checks."""
    import mlflow

    tracking = TrackingServer(cluster.createdb("mlflow"), subprocess_env("unused"))
    old = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        tracking.start()
        os.environ["MLFLOW_TRACKING_URI"] = tracking.url
        mlflow.set_tracking_uri(tracking.url)
        yield tracking
    finally:
        mlflow.set_tracking_uri(None)
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
        tracking.remove()


def machine_env(server: TrackingServer) -> dict[str, str]:
    return {**subprocess_env(server.url), **HEARTBEAT}


def start(server, folder: Path, *args: str) -> subprocess.Popen:
    """`aeservice ARGS` in its own folder and process group: one machine."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(BIN / "aeservice"), *args], cwd=folder, env=machine_env(server), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} did not end within {WAIT} s:\n{err[-3000:]}")
    return proc.returncode, out, err


def tune_args(study: str, storage: str, seed: int, n_trials: int, experiment: str, model: str = "ae") -> list[str]:
    return ["tune", "--model", model, *TINY, "--n-trials", str(n_trials), "--storage", storage,
            "--study-name", study, "--experiment", experiment, "--seed", str(seed), "--pruner", "none", "--quiet"]


def runs_of(experiment: str, **filters) -> list:
    import mlflow

    if mlflow.get_experiment_by_name(experiment) is None:
        return []
    return mlflow.search_runs(experiment_names=[experiment], output_format="list", **filters)


def wait_for(condition, what: str, procs=(), timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a worker ended ({proc.returncode}) before {what}:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout} s")


def load_study(name: str, storage: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


def has_model(run_id: str) -> bool:
    import mlflow

    return any(f.path.endswith("MLmodel") for f in mlflow.MlflowClient().list_artifacts(run_id, "model"))


def test_commands_work_against_the_tracking_server(server, cluster, tmp_path):
    """train, tune --register-as, register, compare and `mlflow models serve` of models:/NAME@champion,
    each with only MLFLOW_TRACKING_URI pointing at the server: artifacts go through it."""
    import json
    import urllib.request

    from click.testing import CliRunner

    from aeservice.cli import aeservice_command

    storage = cluster.createdb("optuna_cmds")
    code, out, err = finish(start(server, tmp_path / "m1", "train", "--model", "pca", *TINY, "--experiment", "cmds"))
    assert code == 0, err[-3000:]
    tuner = start(server, tmp_path / "m2", *tune_args("cmds-pca", storage, 0, 2, "cmds", model="pca"),
                  "--register-as", "scale-pca")
    tcode, tout, terr = finish(tuner)
    assert tcode == 0, terr[-3000:]
    assert "registered scale-pca version 1" in tout, tout
    found = runs_of("cmds")
    trained = [r for r in found if "optuna.trial" not in r.data.tags and "optuna.study" not in r.data.tags]
    assert len(trained) == 1, (out, [(r.info.run_name, r.info.status, sorted(r.data.tags)) for r in found])
    assert trained[0].info.status == "FINISHED" and has_model(trained[0].info.run_id)
    assert not [p for p in tmp_path.rglob("*") if p.name in ("mlruns", "mlartifacts", "mlflow.db")]  # all on the server
    assert list(server.artifacts.rglob("MLmodel"))  # proxied: the server wrote them

    runner = CliRunner()
    result = runner.invoke(aeservice_command, ["register", "--run-id", trained[0].info.run_id, "--name", "scale-train"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(aeservice_command, ["compare", "--experiment", "cmds", "--all", "--no-figures"])
    assert result.exit_code == 0, result.output
    assert trained[0].info.run_id[:8] in result.output, result.output

    with served("models:/scale-pca@champion", machine_env(server), tmp_path / "serve.log") as url:
        body = json.dumps({"inputs": [[0.1, 0.2, 0.3]], "params": {"method": "score"}}).encode()
        request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    assert len(answer["predictions"]) == 1


def test_a_killed_worker_is_retried_and_its_runs_end(server, cluster, tmp_path):
    """Three workers on one study; one is SIGKILLed mid-trial. Its trial is failed by the heartbeat
    and retried by another worker, the study gets every requested complete trial, and the killed
    worker's trial run and parent run end FAILED on the tracking server (ended by another worker)."""
    from aeservice.tuning.liveness import STALE_TRIAL, STALE_WORKER

    storage, study, experiment = cluster.createdb("optuna_kill"), "kill", "kill"
    workers = {seed: start(server, tmp_path / f"m{seed}", *tune_args(study, storage, seed, 2, experiment))
               for seed in (1, 2, 3)}  # the seed tells the workers' parent runs apart

    def a_running_trial():  # (parent run, trial run) of the first worker seen mid-trial
        runs = runs_of(experiment)
        parents = {r.info.run_id: r for r in runs if "optuna.trial" not in r.data.tags}
        for run in runs:
            parent = parents.get(run.data.tags.get("mlflow.parentRunId"))
            if run.info.status == "RUNNING" and "optuna.trial" in run.data.tags and parent is not None:
                if workers[int(parent.data.params["seed"])].poll() is None:
                    return parent, run
        return None

    parent, child = wait_for(a_running_trial, "trial run of a worker")
    seed = int(parent.data.params["seed"])
    os.killpg(workers[seed].pid, signal.SIGKILL)  # the whole worker, as a machine lost
    killed_at = time.monotonic()
    workers.pop(seed).communicate()
    results = {s: finish(proc) for s, proc in workers.items()}
    for code, out, err in results.values():
        assert code == 0, err[-3000:]
    killed_trial = int(child.data.tags["optuna.trial"])
    victims_runs = runs_of(experiment, filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    requested = 2 + 2 + sum(r.data.tags.get("optuna.state") == "COMPLETE" for r in victims_runs)

    def settled():
        trials = load_study(study, storage).get_trials(deepcopy=False)
        retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed_trial]
        ended = {r.info.run_id: r for r in runs_of(experiment)}
        return bool(retried) and all(ended[i].info.status != "RUNNING" for i in (parent.info.run_id, child.info.run_id))

    if not settled():  # the survivors ended before the heartbeat went stale: a later worker does it
        time.sleep(max(0.0, killed_at + int(HEARTBEAT["AESERVICE_HEARTBEAT_GRACE"]) + 1 - time.monotonic()))
        code, out, err = finish(start(server, tmp_path / "m4", *tune_args(study, storage, 4, 1, experiment)))
        assert code == 0, err[-3000:]
        requested += 1

    trials = load_study(study, storage).get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert by_number[killed_trial].state.name == "FAIL"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed_trial]
    assert [t.state.name for t in retried] == ["COMPLETE"]
    assert sum(t.state.name == "COMPLETE" for t in trials) == requested
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]

    runs = {r.info.run_id: r for r in runs_of(experiment)}
    assert runs[child.info.run_id].info.status == "FAILED"
    assert runs[child.info.run_id].data.tags["aeservice.failure_reason"] == STALE_TRIAL
    assert runs[parent.info.run_id].info.status == "FAILED"
    assert runs[parent.info.run_id].data.tags["aeservice.failure_reason"] == STALE_WORKER
    assert [r.info.run_id for r in runs.values() if r.info.status == "RUNNING"] == []
    retry_run = retried[0].user_attrs["mlflow_run_id"]
    assert runs[retry_run].info.status == "FINISHED" and has_model(retry_run)


def test_workers_wait_for_a_restarted_tracking_server(server, cluster, tmp_path):
    """The tracking server stops mid-study and comes back on its port: the workers say they are
    retrying, lose no trial, and every complete trial has its run with metrics and a model."""
    storage, study, experiment = cluster.createdb("optuna_restart"), "restart", "restart"
    workers = [start(server, tmp_path / f"m{seed}", *tune_args(study, storage, seed, 2, experiment)) for seed in (1, 2)]
    wait_for(lambda: [r for r in runs_of(experiment) if "optuna.trial" in r.data.tags], "trial run", workers)
    server.stop()  # mid-trial: that trial's metrics and model go to the server once it is back
    time.sleep(3)
    server.start()
    results = [finish(proc) for proc in workers]
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert "Traceback" not in err
    assert any("not answering" in err and " retry " in err for _, _, err in results), [e[-2000:] for *_, e in results]

    trials = load_study(study, storage).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    runs = {r.info.run_id: r for r in runs_of(experiment)}
    for trial in trials:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert "val_mse" in run.data.metrics and has_model(run.info.run_id)
    assert [r for r in runs.values() if r.info.status == "RUNNING"] == []


def test_a_lost_study_database_stops_workers_and_the_same_command_resumes(server, tmp_path):
    """The study's PostgreSQL shuts down mid-study: the worker ends with one line naming the storage,
    no traceback, nothing RUNNING on the tracking server. Started again, the same command resumes."""
    own = PostgresCluster(PG_BIN)  # the study's database alone: the tracking server's stays up
    try:
        own.start()
        storage, study, experiment = own.createdb("optuna"), "lost", "lost"
        args = tune_args(study, storage, 1, 2, experiment)
        worker = start(server, tmp_path / "m1", *args)

        def second_trial_running():
            return [r for r in runs_of(experiment) if r.data.tags.get("optuna.trial") == "1" and r.info.status == "RUNNING"]

        wait_for(second_trial_running, "second trial run", [worker])
        own.stop()
        stopped_at = time.monotonic()
        code, out, err = finish(worker)
        assert code == 1, err[-3000:]
        assert "Traceback" not in err, err[-6000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"Error: storage {storage}: lost the study's database"), err[-3000:]
        assert [r for r in runs_of(experiment) if r.info.status == "RUNNING"] == []
        first = {int(r.data.tags["optuna.trial"]): r for r in runs_of(experiment) if "optuna.trial" in r.data.tags}

        own.start()
        before = {t.number: t for t in load_study(study, storage).get_trials(deepcopy=False)}
        assert before[0].state.name == "COMPLETE"
        for number, run in first.items():  # nothing half-written: a finished run is a complete trial, and back
            assert (run.info.status == "FINISHED") == (before[number].state.name == "COMPLETE"), (number, run.info)
        lost = [n for n, t in before.items() if t.state.name == "RUNNING"]  # none if it stopped between trials
        # the cut trial's heartbeat is stale by the time the resumed worker asks for its first trial
        time.sleep(max(0.0, stopped_at + int(HEARTBEAT["AESERVICE_HEARTBEAT_GRACE"]) + 1 - time.monotonic()))
        code, out, err = finish(start(server, tmp_path / "m1", *args))
        assert code == 0, err[-3000:]
        trials = {t.number: t for t in load_study(study, storage).get_trials(deepcopy=False)}
        complete_before = sum(t.state.name == "COMPLETE" for t in before.values())
        assert sum(t.state.name == "COMPLETE" for t in trials.values()) == complete_before + 2
        assert f"study {study} in {storage}: {complete_before + 2} complete" in out, out
        for number in lost:  # failed by the heartbeat, then retried
            assert trials[number].state.name == "FAIL"
            assert [t.state.name for t in trials.values() if t.system_attrs.get("failed_trial") == number] == ["COMPLETE"]
        assert not [t for t in trials.values() if t.state.name in ("RUNNING", "WAITING")]
        assert [r for r in runs_of(experiment) if r.info.status == "RUNNING"] == []
    finally:
        own.remove()
