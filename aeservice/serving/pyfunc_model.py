"""The MLflow pyfunc, as models-from-code: MLflow logs this file, not a pickled object.

The model directory (meta.json, state.npz, encoder/decoder .keras) is an artifact, loaded once
in `load_context` and frozen for serving: each request runs the nets on one numpy array, as numpy
plans of their Dense layers where those reproduce Keras, else as one compiled Keras call.
"""
from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE  # noqa: E402
from mlflow.pyfunc import PythonModel  # noqa: E402

_logger = logging.getLogger("aeservice.serving")
if not _logger.handlers:  # the server log says what was loaded, on which backend, and any failure
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _logger.addHandler(_handler)
    _logger.propagate = False
if _logger.level == logging.NOTSET:  # a level set before (logging the model sets WARNING) stays
    _logger.setLevel(logging.INFO)


class RequestError(MlflowException):
    """A bad request: HTTP 400 whose message is ours alone.

    MLflow's scoring server prefixes the message of any MlflowException from `predict` with
    "Failed to predict data '<the whole input>'"; for a 1000-row request that buries the one
    line that says what is wrong. The message is set once, in __init__, and kept.
    """

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


class AutoencoderPyfunc(PythonModel):
    def load_context(self, context):
        from aeservice.models import load_model
        from aeservice.serving.methods import prepare_for_serving

        self.model = load_model(context.artifacts["model"])
        plans = prepare_for_serving(self.model)  # numpy plans where they match Keras; warmed up
        from aeservice.backend import current

        _logger.info("aeservice %s model loaded (Keras backend %s, %s); numpy inference plans: %s", self.model.kind,
                     current(), "imported" if "keras" in sys.modules else "not imported", plans)

    # The hint is one MLflow does not validate against (DataFrame, Series and ndarray are exempt),
    # which also stops its "add type hints" warning. Arrays, lists and DataFrames all arrive
    # unchanged; run_method checks them and names what is wrong.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        from aeservice.errors import UserError
        from aeservice.serving.methods import run_method

        try:
            return run_method(self.model, model_input, params)
        except UserError as exc:  # a 400 that names the problem, never a 500
            raise RequestError(str(exc)) from None
        except MlflowException:
            raise
        except Exception as exc:  # not foreseen: still say what failed, not MLflow's "unexpected error"
            _logger.exception("predict failed")
            method = (params or {}).get("method") or "encode"
            raise RequestError(f"{method} failed on this input: {type(exc).__name__}: {exc}") from None


mlflow.models.set_model(AutoencoderPyfunc())
