"""What a training tells its tracking, as typed messages, and the `Tracker` that consumes them.

One run is, in order: `RunStarted`, `Setup`, one `Epoch` per finished epoch, `Result`, then
`ModelSaved` and `Figures` (unless artifacts are off), and `Finished`; or, from any point on,
`Failed`. `aeservice.tracking.steps.train_tracked` sends them; two trackers apply them:
`runs.MlflowTracker` logs to MLflow in this process, `worker.TrackingWorker` sends them over a
pipe to a forked process that applies them with an `MlflowTracker` of its own.

Messages hold plain data only (no model, no Keras object), so they pickle into a process that
has not imported Keras. This module imports nothing heavy, for that process's sake.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Union

if TYPE_CHECKING:
    import numpy as np

__all__ = ["RunStarted", "Setup", "Epoch", "Result", "ModelSaved", "Figures", "Finished", "Failed", "Message",
           "Tracker", "REASON_TAG"]


@dataclass(frozen=True)
class RunStarted:
    """Start the run (in `experiment`, unless nested or under `mlflow run`)."""

    experiment: str | None
    run_name: str
    tags: dict[str, str]
    nested: bool = False


@dataclass(frozen=True)
class Setup:
    """What the run records before training: the settings and facts of the data as params
    (those the run does not have yet), and the training rows as its dataset input: their first
    rows and their shape, so a million rows are not copied into the tracking process."""

    params: dict[str, Any]
    dataset_name: str
    dataset_source: str
    train_rows: np.ndarray  # the first training rows: MLflow's digest reads no more (`steps.DIGEST_VALUES`)
    train_shape: tuple[int, ...] | None = None  # all training rows' shape, for the profile; None: train_rows'


@dataclass(frozen=True)
class Epoch:
    """One finished epoch's logs, logged at step `epoch`."""

    epoch: int
    logs: dict[str, float]


@dataclass(frozen=True)
class Result:
    """The final metrics, and the sizes the model resolved (`training.used_params`) as params."""

    metrics: dict[str, float]
    used: dict[str, Any]


@dataclass(frozen=True)
class ModelSaved:
    """The trained model, saved (`Autoencoder.save`) at `path`: log it as the run's pyfunc."""

    path: str
    example: np.ndarray  # the input example logged with it (`runs.model_example`)


@dataclass(frozen=True)
class Figures:
    """The PNGs `aeservice.figures.run.write_figures` wrote into the folder `path`: log them under plots/."""

    path: str


@dataclass(frozen=True)
class Finished:
    """Everything is sent: end the run FINISHED. Files named by earlier messages may go after this."""


@dataclass(frozen=True)
class Failed:
    """The training side failed: end the run `status` (FAILED, or KILLED on Ctrl-C or SIGTERM), or
    start none. A `reason`, if given, is tagged on the run (`REASON_TAG`) before it ends."""

    status: str = field(default="FAILED")
    reason: str = ""


REASON_TAG = "aeservice.failure_reason"


Message = Union[RunStarted, Setup, Epoch, Result, ModelSaved, Figures, Finished, Failed]


class Tracker(Protocol):
    """Consumes one run's messages, in the order above. `run_id` is known once `Finished` is
    applied (in-process: from `RunStarted` on)."""

    run_id: str | None

    # Where `train_tracked` counts saving the model: the forked tracker's own phase, or (in-process,
    # where saving was always part of logging the model) "model logging".
    save_phase: str

    def send(self, message: Message) -> None:
        """Apply one message, or hand it on to whoever applies it."""
        ...
