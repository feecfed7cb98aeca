"""The one sequence of steps of a tracked training, whichever `Tracker` logs it.

`runs.train_run` runs it with the in-process `MlflowTracker` (what `tune`, `pipeline` and
`train` with AESERVICE_TRACKING_WORKER=0 call); `worker.train_in_parallel` with the
`TrackingWorker`, which hands each message to a forked process. The trainer sends what it
already knows (settings, the data's facts and training rows, the sizes the model used), so the
tracking side never prepares the data again. No MLflow here: the forked path's trainer never
imports it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from aeservice.backend import current as current_backend
from aeservice.models import EpochCallback
from aeservice.timing import phase
from aeservice.tracking.messages import (Epoch, Failed, Figures, Finished, ModelSaved, Result, RunStarted, Setup,
                                         Tracker)
from aeservice.training import Prepared, TrainResult, fit_and_evaluate, used_params

__all__ = ["train_tracked", "run_started", "setup", "run_tags", "run_name", "model_example"]


def train_tracked(prepared: Prepared, tracker: Tracker, callbacks: Sequence[EpochCallback] = (),
                  nested: bool = False, tags: dict | None = None,
                  log_artifacts: bool = True) -> tuple[str, TrainResult]:
    """Start the run, log the setup, train with every epoch logged, then log the final metrics,
    the model and the figures; returns (run id, result). Any failure ends the run with `Failed`
    (KILLED on Ctrl-C) and is raised again."""
    with tempfile.TemporaryDirectory(prefix="aeservice-") as tmp:  # outlives Failed: nothing half-read goes
        try:
            tracker.send(run_started(prepared, nested, tags))
            tracker.send(setup(prepared))

            def epoch(number: int, logs: dict) -> None:
                tracker.send(Epoch(number, dict(logs)))

            with phase("fit"):
                result = fit_and_evaluate(prepared, callbacks=[epoch, *callbacks])
            tracker.send(Result(result.metrics, used_params(result.model)))
            if log_artifacts:
                with phase(tracker.save_phase):
                    model_dir = result.model.save(Path(tmp) / "autoencoder")
                tracker.send(ModelSaved(str(model_dir), model_example(prepared)))  # forked: logged as we draw
                from aeservice.figures.run import write_figures  # matplotlib: only where figures are drawn

                with phase("plots"):
                    figures = write_figures(result.model, result.history, prepared.dataset, prepared.split,
                                            prepared.config.model.seed, Path(tmp))
                tracker.send(Figures(str(figures)))
            tracker.send(Finished())  # returns once the files above are logged
        except KeyboardInterrupt:
            tracker.send(Failed("KILLED"))
            raise
        except BaseException:
            tracker.send(Failed("FAILED"))
            raise
    assert tracker.run_id is not None, "a finished run has an id"
    return tracker.run_id, result


def run_started(prepared: Prepared, nested: bool = False, tags: dict | None = None) -> RunStarted:
    """The run's start; MLflow's own `mlflow.runName` tag in `tags` names it (a trial: vae-digits-t07)."""
    tags = run_tags(prepared, tags)
    return RunStarted(prepared.config.experiment, tags.get("mlflow.runName") or run_name(prepared), tags, nested)


def setup(prepared: Prepared) -> Setup:
    """Every setting, the data's facts, and the first training rows and their shape (the run's dataset input)."""
    cfg, data, split = prepared.config, prepared.dataset, prepared.split
    shape = "x".join(map(str, data.image_shape)) if data.image_shape else "none"  # what a client reshapes rows to
    params = {**cfg.flatten(), "n_features": data.n_features, "n_train": len(split.train), "data_kind_used": data.kind,
              "image_shape": shape}
    head = split.train[:max(1, -(-DIGEST_VALUES // max(1, data.n_features)))]
    return Setup(params, data.name, data.source or data.name, np.asarray(head), tuple(split.train.shape))


DIGEST_VALUES = 10_000  # values of the training rows MLflow's dataset digest hashes (with their shape)


def run_tags(prepared: Prepared, extra: dict | None = None) -> dict:
    return {"model": prepared.config.model.model, "dataset": prepared.dataset.name,
            "backend": current_backend(), **(extra or {})}


def run_name(prepared: Prepared) -> str:
    return f"{prepared.config.model.model}-{prepared.dataset.name}"


def model_example(prepared: Prepared) -> np.ndarray:
    """The input example logged with the model: three test rows."""
    return prepared.split.test[:3]
