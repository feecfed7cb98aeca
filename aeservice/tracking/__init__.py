"""MLflow tracking: runs, per-epoch metrics, figures and the logged pyfunc model.

Names load on first use (PEP 562), so `aeservice.tracking.worker` can fork before this package
has imported MLflow, Keras or matplotlib. A training tells its tracking what happened in typed
messages (`messages`), which a `Tracker` consumes: `MlflowTracker` in this process, or
`worker.TrackingWorker` in a forked one; `steps.train_tracked` is the one sequence both run.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    **dict.fromkeys(["MODEL_ARTIFACT", "SIGNATURE", "log_model", "log_new_params", "EpochMetrics", "mlflow_run",
                     "train_run", "MlflowTracker", "ui_link"], "runs"),
    **dict.fromkeys(["train_tracked", "run_name"], "steps"),
    "Tracker": "messages",
}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"aeservice.tracking.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
