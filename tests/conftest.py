"""Shared fixtures: a throw-away SQLite tracking store and small, fast configs."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest  # noqa: E402

import aeservice  # noqa: E402,F401  (sets the Keras backend: KERAS_BACKEND, else the fastest installed)

from aeservice.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def subprocess_env(tracking_uri: str) -> dict[str, str]:
    """Environment for a real child process (aeservice, mlflow run, mlflow models serve).

    This checkout's package first on the path, the venv's tools on PATH, and none of the run or
    experiment variables that `mlflow.set_experiment` exports into this process.
    """
    env = {k: v for k, v in os.environ.items() if k not in _LEAKED}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, PYTHONPATH=str(REPO),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


_LEAKED = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@pytest.fixture(scope="session", autouse=True)
def _work_in_a_temp_folder(tmp_path_factory):
    """SQLite stores put artifacts in ./mlruns of the working folder: keep that out of the repo."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)


def small_config(kind: str, dataset: str = "digits", **model_kw) -> TrainConfig:
    """Few epochs and a narrow net: enough to exercise every path in seconds. One fit: a few
    epochs rarely beat PCA, and auto restarts would then make up to 4 (the linear model is kept)."""
    settings = dict(model=kind, epochs=3, hidden=(32,), batch_size=64, patience=0, restarts=1)
    settings.update(model_kw)
    return TrainConfig(DataConfig(dataset=dataset), ModelConfig(**settings), experiment="pytest")


@contextmanager
def keeping_nets() -> Iterator[None]:
    """Every fit keeps its net, even one that does not beat the linear model (PCA): for tests of
    what happens to a net (registry comparisons, saved sizes, code sparsity) with few epochs."""
    with pytest.MonkeyPatch.context() as patch:
        from aeservice.models import keras_base

        patch.setattr(keras_base, "clearly_negative", lambda values: True)
        yield


@pytest.fixture()
def nets_kept():
    with keeping_nets():
        yield


def tiny_tune_config(kind: str = "ae", epochs: int = 3, experiment: str = "tune-tests", **model_kw) -> TrainConfig:
    """Tiny data and nets for studies: every trial is a couple of seconds, most of it logging the model."""
    model = dict(model=kind, epochs=epochs, hidden=(16,), latent_dim=1, batch_size=64, patience=0)
    model.update(model_kw)
    return TrainConfig(DataConfig(dataset="scurve", n_samples=200), ModelConfig(**model), experiment=experiment)


def run_statuses() -> list[str]:
    """The status of every run in the tracking store."""
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [r.info.status for r in runs]


def training_runs(experiment: str) -> list:
    """The runs of `experiment` that trained a model (tagged with its kind)."""
    import mlflow

    return [r for r in mlflow.search_runs(experiment_names=[experiment], output_format="list")
            if "model" in r.data.tags]


def child_runs(parent_run_id: str) -> list:
    import mlflow

    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def by_trial(runs) -> dict[int, object]:
    """Trial runs by their Optuna trial number."""
    return {int(r.data.tags["optuna.trial"]): r for r in runs}


def train_process(tracking_uri: str, cwd, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`aeservice train ARGS` as a real process of the console script."""
    return subprocess.run([str(BIN / "aeservice"), "train", *args], capture_output=True, text=True, timeout=300,
                          env={**subprocess_env(tracking_uri), **(env or {})}, cwd=cwd)


@pytest.fixture()
def tracking_uri(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store in a temp folder, for this process and its children."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        # set then delete, so teardown removes what mlflow.set_experiment exports meanwhile
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture()
def stores(tracking_uri, tmp_path, monkeypatch):
    """Fresh MLflow and Optuna SQLite stores; artifacts land in the temp folder, not the repo."""
    monkeypatch.chdir(tmp_path)
    return {"tracking": tracking_uri, "optuna": f"sqlite:///{tmp_path / 'optuna.db'}"}


@pytest.fixture(scope="module")
def module_tracking_uri(tmp_path_factory) -> str:
    """One store shared by a module's tests, for runs that are expensive to repeat."""
    import mlflow

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(model_uri: str, env: dict[str, str], log: Path, timeout: float = 300,
           env_manager: str = "local") -> Iterator[str]:
    """A real `mlflow models serve` on 127.0.0.1 until the block ends; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", env_manager,
             "-h", "127.0.0.1", "-p", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_up(url, proc, log, timeout)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the CLI and the uvicorn it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float, path: str = "/ping",
                   what: str = "mlflow models serve") -> None:
    """Until `url + path` answers 200; fails the test if the server exits first or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{what} did not answer {path} within {timeout} s:\n{log.read_text()[-3000:]}")
