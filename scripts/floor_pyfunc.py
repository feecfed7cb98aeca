"""The benchmark's floor: a pyfunc that does no work (models-from-code, used by bench_serving.py).

It takes the same params as the aeservice model and answers each method with rows sliced from
outputs the real model computed beforehand, so its replies have the same shape and the same
JSON size: whatever the served model costs beyond this is the model's own time.
"""
from __future__ import annotations

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class FloorPyfunc(PythonModel):
    def load_context(self, context):
        with np.load(context.artifacts["outputs"], allow_pickle=False) as outputs:
            self.outputs = {name: outputs[name] for name in outputs.files}

    def predict(self, context, model_input, params=None):
        params = params or {}
        method = params.get("method") or "encode"
        rows = int(params.get("n") or 10) if method == "sample" else len(model_input)
        return self.outputs[method][:rows]


set_model(FloorPyfunc())
