"""Where MLflow lives: one run per training, its params, metrics, plots and pyfunc model.

`MlflowTracker` applies a training's messages (`aeservice.tracking.messages`) to MLflow.
`train_run` runs the one sequence of steps (`steps.train_tracked`) with it in this process: what
`tune` calls for each trial (as a nested run), and `train` where it does not fork a tracking
worker; the worker applies the same messages with an `MlflowTracker` of its own, so every path
logs exactly the same things.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.models import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec

import aeservice
from aeservice.models import Autoencoder, EpochCallback, load_model
from aeservice.serving import PYFUNC_FILE
from aeservice.serving.methods import DEFAULT_SAMPLES
from aeservice.timing import phase
from aeservice.tracking.messages import (REASON_TAG, Epoch, Failed, Figures, Finished, Message, ModelSaved, Result,
                                         RunStarted, Setup)
from aeservice.tracking.steps import model_example, run_name, run_tags, train_tracked
from aeservice.training import Prepared, TrainResult

__all__ = ["train_run", "MlflowTracker", "mlflow_run", "start_run", "EpochMetrics", "log_model", "log_new_params",
           "log_setup", "log_scores", "log_plots", "model_example", "warm_up_model_logging", "run_tags", "run_name",
           "SIGNATURE", "MODEL_ARTIFACT", "ui_link"]

MODEL_ARTIFACT = "model"  # runs:/<id>/model

# Params only, no input schema: one model takes data rows (encode, reconstruct, score), latent
# rows (decode) and a placeholder row (sample), as arrays or DataFrames of any width; a fixed
# input schema would reject all but one of those. The methods check shapes and name the problem.
SIGNATURE = ModelSignature(
    params=ParamSchema([
        ParamSpec("method", "string", "encode"),
        ParamSpec("n", "long", DEFAULT_SAMPLES),
        ParamSpec("seed", "long", 0),
        ParamSpec("threshold", "double", None),  # detect: None is the model's own threshold
    ]),
)


def start_run(experiment: str | None, nested: bool = False, tags: dict | None = None,
              run_name: str | None = None) -> mlflow.ActiveRun:
    """Start a run in `experiment`. Under `mlflow run`, MLflow has already made the run
    (MLFLOW_RUN_ID) in the experiment given to `mlflow run --experiment-name`; that one is used."""
    with phase("tracking"):
        if experiment and not nested and not os.environ.get("MLFLOW_RUN_ID"):
            mlflow.set_experiment(experiment)
        run = mlflow.start_run(nested=nested, tags=tags, run_name=run_name)
        if not nested:
            _mark_training_experiment(run.info.experiment_id)
        return run


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # what the MLflow UI opens an experiment on
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store


def ui_link(run_id: str) -> str:
    """The run's page in the MLflow UI: the tracking server's own, else `mlflow ui`'s.

    MLflow 3's UI shows its GenAI pages unless the address asks for model training
    (`workflowType=machine_learning`); the experiment tag alone does not switch it.
    """
    uri = mlflow.get_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def _mark_training_experiment(experiment_id: str) -> None:
    """An experiment without a kind opens in MLflow 3's UI on its GenAI overview ("Traces 0");
    marked as model development it opens on its training runs. A kind already set is kept."""
    client = mlflow.MlflowClient()
    if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")


@contextmanager
def mlflow_run(experiment: str | None, nested: bool = False, tags: dict | None = None,
               run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """A run that always ends: FINISHED, FAILED on an error, KILLED on Ctrl-C (see `start_run`)."""
    run = start_run(experiment, nested=nested, tags=tags, run_name=run_name)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    with phase("tracking"):
        mlflow.end_run("FINISHED")


class EpochMetrics:
    """Per-epoch metrics, written in batches: one SQLite commit per second of training at most.

    One commit per epoch costs more than a fused epoch on digits takes to train, and MLflow's
    asynchronous queue only moves those commits to the end of the run (into `end_run`).
    Buffered, 100 epochs are a few `log_batch` calls, and the UI still follows a run live.
    Call it as an epoch callback; `flush()` writes what is left (do so before the run ends).
    """

    FLUSH_SECONDS = 1.0

    def __init__(self) -> None:
        self._rows: list = []
        self._oldest: float | None = None

    def __call__(self, epoch: int, logs: dict) -> None:
        with phase("tracking in fit"):
            stamp = int(time.time() * 1000)
            self._rows += [Metric(key, float(value), stamp, epoch) for key, value in logs.items()]
            self._oldest = self._oldest or time.monotonic()
            if time.monotonic() - self._oldest >= self.FLUSH_SECONDS:
                self.flush()

    @property
    def pending(self) -> bool:
        return bool(self._rows)

    def flush(self) -> None:
        rows, self._rows, self._oldest = self._rows, [], None
        if rows:
            client, run_id = mlflow.MlflowClient(), mlflow.active_run().info.run_id
            for start in range(0, len(rows), _BATCH_LIMIT):
                client.log_batch(run_id, metrics=rows[start:start + _BATCH_LIMIT])


_BATCH_LIMIT = 1000  # metrics per log_batch call that MLflow's REST API accepts


def log_model(model: Autoencoder | Path, example: np.ndarray) -> str:
    """Log the pyfunc (this package's code + the saved model directory); returns its URI.

    `model` is a trained model, or the directory `Autoencoder.save` wrote it to.
    """
    serving_log = logging.getLogger("aeservice.serving")
    level = serving_log.level
    serving_log.setLevel(logging.WARNING)  # MLflow's check of the example loads the model: no "loaded" line
    try:
        with tempfile.TemporaryDirectory() as tmp:
            saved = model.save(Path(tmp) / "autoencoder") if isinstance(model, Autoencoder) else Path(model)
            numpy_only = (model if isinstance(model, Autoencoder) else load_model(saved)).serves_on_numpy()
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=str(PYFUNC_FILE),
                artifacts={"model": str(saved)},
                code_paths=[str(Path(aeservice.__file__).parent)],
                signature=SIGNATURE,
                input_example=example.astype(np.float64),
                pip_requirements=_requirements(keras=not numpy_only),
            )
    finally:
        serving_log.setLevel(level)
    return info.model_uri


def warm_up_model_logging() -> None:
    """The slow first-call work of `log_model`, done ahead by a process that has time for it.

    MLflow checks the requirements against the environment by mapping every installed
    distribution's files to modules: a noticeable pause, once per process. `train`'s tracking worker calls
    this while the model trains. Best effort: MLflow's internals may move.
    """
    with contextlib.suppress(Exception):
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

        warn_dependency_requirement_mismatches(_requirements())
    with contextlib.suppress(Exception):
        import mlflow.pyfunc.loaders.code_model  # noqa: F401  (MLflow's check loads the model with it)

        import aeservice.serving.pyfunc_model  # noqa: F401


# What serving a logged model installs (`mlflow models serve` without --env-manager local): the
# pyfunc and the numpy plans need only these; Keras and its backend only for a model whose nets
# have no plan. scikit-learn and threadpoolctl come with MLflow anyway: pinned to the trained ones.
SERVING_PACKAGES = ("mlflow", "numpy", "pandas", "scikit-learn", "threadpoolctl")
BACKEND_PACKAGES = {"jax": ("jax", "jaxlib"), "tensorflow": ("tensorflow",), "torch": ("torch",)}


def _requirements(keras: bool = True) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    from aeservice.backend import current

    names = [*SERVING_PACKAGES, *(("keras", *BACKEND_PACKAGES.get(current(), ())) if keras else ())]
    reqs = []
    for name in names:
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


def log_new_params(params: dict) -> None:
    """Log params the run does not have yet: `mlflow run` logs -P values as typed (e.g. 1e-3)."""
    run = mlflow.active_run()
    have = mlflow.get_run(run.info.run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in have})


class MlflowTracker:
    """The in-process `Tracker`: applies each message (`aeservice.tracking.messages`) to MLflow.

    `train_run` uses it directly; `train`'s tracking worker applies the messages the trainer
    sends it with one of these. Epoch metrics are buffered (`EpochMetrics`).
    """

    save_phase = "model logging"  # in-process, saving the model has always been part of logging it

    def __init__(self) -> None:
        self.run_id: str | None = None
        self._active = False
        self._epochs = EpochMetrics()

    @property
    def pending(self) -> bool:
        """Epoch metrics wait to be written (`flush`)."""
        return self._epochs.pending

    def flush(self) -> None:
        self._epochs.flush()

    def send(self, message: Message) -> None:
        if isinstance(message, Epoch):
            self._epochs(message.epoch, message.logs)
        elif isinstance(message, RunStarted):
            run = start_run(message.experiment, nested=message.nested, tags=message.tags,
                            run_name=message.run_name)
            self.run_id, self._active = run.info.run_id, True
        elif isinstance(message, Setup):
            log_setup(message)
        elif isinstance(message, Result):
            with phase("tracking"):
                self._epochs.flush()
            log_scores(message.metrics, message.used)
        elif isinstance(message, ModelSaved):
            with phase("model logging"):
                log_model(Path(message.path), message.example)
        elif isinstance(message, Figures):
            log_plots(Path(message.path))
        elif isinstance(message, Finished):
            self._active = False
            with phase("tracking"):
                mlflow.end_run("FINISHED")
        elif isinstance(message, Failed):
            if self._active:
                self._active = False
                with contextlib.suppress(Exception):  # the curve up to a failure; the failure is the news
                    self._epochs.flush()
                if message.reason:
                    with contextlib.suppress(Exception):
                        mlflow.set_tag(REASON_TAG, message.reason[:5000])  # MLflow's limit on a tag value
                mlflow.end_run(message.status)
        else:
            raise TypeError(f"not a tracking message: {message!r}")


def train_run(prepared: Prepared, callbacks: Sequence[EpochCallback] = (), nested: bool = False,
              tags: dict | None = None, log_artifacts: bool = True) -> tuple[str, TrainResult]:
    """Train inside one MLflow run and log everything, in this process; returns (run id, result)."""
    return train_tracked(prepared, MlflowTracker(), callbacks, nested=nested, tags=tags,
                         log_artifacts=log_artifacts)


def log_setup(setup: Setup) -> None:
    """What a run records before training: every setting and the training data's digest."""
    with phase("tracking"):
        log_new_params(setup.params)
        with warnings.catch_warnings():  # a file path "can be interpreted in multiple ways": it is a path
            warnings.simplefilter("ignore", UserWarning)
            features, digest = _digest_input(setup)
            dataset_input = mlflow.data.from_numpy(features, source=setup.dataset_source, name=setup.dataset_name,
                                                   digest=digest)
        mlflow.log_input(dataset_input, context="training")


def _digest_input(setup: Setup) -> tuple[np.ndarray, str]:
    """(features, digest) for `mlflow.data.from_numpy` from the first training rows: features of
    the whole shape that take no memory (for the profile and schema), and a digest of the first
    values and that shape, as MLflow's own digest hashes them."""
    from mlflow.data.digest_utils import MAX_ROWS, compute_numpy_digest

    head = np.asarray(setup.train_rows)
    shape = tuple(setup.train_shape or head.shape)
    digest = compute_numpy_digest(head.reshape(-1)[:MAX_ROWS], np.asarray(shape, dtype=np.int64))
    return np.broadcast_to(head[:1], shape), digest


def log_scores(metrics: dict[str, float], used: dict[str, Any]) -> None:
    """The final metrics, and the sizes the model resolved (`training.used_params`)."""
    with phase("tracking"):
        mlflow.log_metrics(metrics)
        mlflow.log_params(used)


def log_plots(folder: Path) -> None:
    """The PNGs `aeservice.figures.run.write_figures` wrote, under runs:/<id>/plots."""
    with phase("tracking"):
        mlflow.log_artifacts(str(folder), folder.name)
