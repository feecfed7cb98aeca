"""The MLflow pyfunc, as models-from-code: MLflow logs this file, not a pickled object.

The model directory (meta.json, state.npz, encoder/decoder .keras) is an artifact, loaded once
in `load_context`; each request is a direct call of the Keras models on one numpy array.
"""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# MLflow suggests type hints for its own input validation; the methods validate inputs themselves.
warnings.filterwarnings("ignore", message=".*Add type hints")

import mlflow  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE  # noqa: E402
from mlflow.pyfunc import PythonModel  # noqa: E402


class AutoencoderPyfunc(PythonModel):
    def load_context(self, context):
        from aeservice.models import load_model

        self.model = load_model(context.artifacts["model"])

    def predict(self, context, model_input, params=None):
        from aeservice.errors import UserError
        from aeservice.serving.methods import run_method

        try:
            return run_method(self.model, model_input, params)
        except UserError as exc:  # a 400 that names the problem, never a 500
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


mlflow.models.set_model(AutoencoderPyfunc())
