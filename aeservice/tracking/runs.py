"""Where MLflow lives: one run per training, its params, metrics, plots and pyfunc model.

`train_run` is what `train` calls and what `tune` calls for each trial (as a nested run), so
both log exactly the same things.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import keras
import matplotlib.pyplot as plt
import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec

import aeservice
from aeservice.models import Autoencoder, EpochCallback
from aeservice.serving import PYFUNC_FILE
from aeservice.serving.methods import DEFAULT_SAMPLES
from aeservice.timing import phase
from aeservice.tracking.plots import all_figures
from aeservice.training import Prepared, TrainResult, fit_and_evaluate

__all__ = ["train_run", "mlflow_run", "metrics_logger", "log_model", "log_new_params", "log_setup", "log_results",
           "used_params", "run_tags", "run_name", "SIGNATURE", "MODEL_ARTIFACT"]

MODEL_ARTIFACT = "model"  # runs:/<id>/model

# Params only, no input schema: one model takes data rows (encode, reconstruct, score), latent
# rows (decode) and a placeholder row (sample), as arrays or DataFrames of any width; a fixed
# input schema would reject all but one of those. The methods check shapes and name the problem.
SIGNATURE = ModelSignature(
    params=ParamSchema([
        ParamSpec("method", "string", "encode"),
        ParamSpec("n", "long", DEFAULT_SAMPLES),
        ParamSpec("seed", "long", 0),
    ]),
)


@contextmanager
def mlflow_run(experiment: str | None, nested: bool = False, tags: dict | None = None,
               run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """A run that always ends: FINISHED, FAILED on an error, KILLED on Ctrl-C.

    Under `mlflow run`, MLflow has already made the run (MLFLOW_RUN_ID) in the experiment given
    to `mlflow run --experiment-name`; that run is used as it is.
    """
    with phase("tracking"):
        if experiment and not nested and not os.environ.get("MLFLOW_RUN_ID"):
            mlflow.set_experiment(experiment)
        run = mlflow.start_run(nested=nested, tags=tags, run_name=run_name)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    with phase("tracking"):  # also waits for the per-epoch metrics still queued
        mlflow.end_run("FINISHED")


def metrics_logger() -> EpochCallback:
    """Per-epoch metrics, one batch per epoch, written by MLflow's logging thread.

    Synchronous, each epoch's SQLite commit cost ~12 ms of the fit (1.3 s per 100 epochs); queued,
    the writes overlap training, and ending the run waits for any still queued.
    """
    def log(epoch: int, logs: dict) -> None:
        with phase("tracking in fit"):
            mlflow.log_metrics(logs, step=epoch, synchronous=False)

    return log


def log_model(model: Autoencoder, example: np.ndarray) -> str:
    """Log the pyfunc (this package's code + the saved model directory); returns its URI."""
    serving_log = logging.getLogger("aeservice.serving")
    level = serving_log.level
    serving_log.setLevel(logging.WARNING)  # MLflow's check of the example loads the model: no "loaded" line
    try:
        with tempfile.TemporaryDirectory() as tmp:
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=str(PYFUNC_FILE),
                artifacts={"model": str(model.save(Path(tmp) / "autoencoder"))},
                code_paths=[str(Path(aeservice.__file__).parent)],
                signature=SIGNATURE,
                input_example=example.astype(np.float64),
                pip_requirements=_requirements(),
            )
    finally:
        serving_log.setLevel(level)
    return info.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in ("mlflow", "keras", "jax", "jaxlib", "tensorflow", "numpy", "scikit-learn", "pandas"):
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


def train_run(prepared: Prepared, callbacks: Sequence[EpochCallback] = (), nested: bool = False,
              tags: dict | None = None, log_artifacts: bool = True) -> tuple[str, TrainResult]:
    """Train inside one MLflow run and log everything; returns (run id, result)."""
    with mlflow_run(prepared.config.experiment, nested=nested, tags=run_tags(prepared, tags),
                    run_name=run_name(prepared)) as run:
        log_setup(prepared)
        with phase("fit"):
            result = fit_and_evaluate(prepared, callbacks=[metrics_logger(), *callbacks])
        log_results(prepared, result, log_artifacts)
    return run.info.run_id, result


def run_tags(prepared: Prepared, extra: dict | None = None) -> dict:
    return {"model": prepared.config.model.model, "dataset": prepared.dataset.name,
            "backend": keras.backend.backend(), **(extra or {})}


def run_name(prepared: Prepared) -> str:
    return f"{prepared.config.model.model}-{prepared.dataset.name}"


def log_setup(prepared: Prepared) -> None:
    """What a run records before training: every setting and the training data's digest."""
    cfg, data, split = prepared.config, prepared.dataset, prepared.split
    with phase("tracking"):
        log_new_params({**cfg.flatten(), "n_features": data.n_features, "n_train": len(split.train),
                         "data_kind_used": data.kind})
        with warnings.catch_warnings():  # a file path "can be interpreted in multiple ways": it is a path
            warnings.simplefilter("ignore", UserWarning)
            dataset_input = mlflow.data.from_numpy(split.train, source=data.source or data.name, name=data.name)
        mlflow.log_input(dataset_input, context="training")


def used_params(model: Autoencoder) -> dict[str, Any]:
    """The sizes the model resolved from the data (the config may say "auto"), as params."""
    used: dict[str, Any] = {"latent_dim_used": model.latent_dim_}
    if model.kind != "pca":  # PCA has no net, epochs or batches
        sizes = model.sizes_
        used.update(hidden_used=",".join(map(str, sizes.hidden)) or "none", epochs_used=sizes.epochs,
                    batch_size_used=sizes.batch_size)
    return used


def log_results(prepared: Prepared, result: TrainResult, log_artifacts: bool = True) -> None:
    """What a run records after training: final metrics, plots and the pyfunc model."""
    with phase("tracking"):
        mlflow.log_metrics(result.metrics)
        mlflow.log_params(used_params(result.model))
    if log_artifacts:
        cfg, split = prepared.config, prepared.split
        with phase("plots"):
            for name, fig in all_figures(result.model, result.history, prepared.dataset, split,
                                         cfg.model.seed).items():
                mlflow.log_figure(fig, name)
                plt.close(fig)
        with phase("model logging"):
            log_model(result.model, split.test[:3])
