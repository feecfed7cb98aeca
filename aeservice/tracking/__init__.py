"""MLflow tracking: runs, per-epoch metrics, figures and the logged pyfunc model."""
from __future__ import annotations

from aeservice.tracking.runs import (MODEL_ARTIFACT, SIGNATURE, log_model, log_new_params, metrics_logger, mlflow_run,
                                     train_run)

__all__ = ["MODEL_ARTIFACT", "SIGNATURE", "log_model", "log_new_params", "metrics_logger", "mlflow_run", "train_run"]
