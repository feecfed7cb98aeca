"""MLflow tracking: runs, per-epoch metrics, figures and the logged pyfunc model.

Names load on first use (PEP 562), so `aeservice.tracking.worker` can fork before this package
has imported MLflow, Keras or matplotlib.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["MODEL_ARTIFACT", "SIGNATURE", "log_model", "log_new_params", "EpochMetrics", "mlflow_run", "train_run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("aeservice.tracking.runs"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
