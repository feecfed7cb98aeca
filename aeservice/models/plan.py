"""Inference plans: a frozen Keras net of Dense layers, run as a few numpy matrix products.

The serving fast path. Any Keras call costs a fixed ~0.4 ms (compiled `predict_on_batch`) to
1.3 ms (eager) in the TensorFlow runtime, whatever the batch; a 1-row request to
`mlflow models serve` costs about 2 ms in all, so that fixed cost alone is 20-60 %. The same
Dense layers as numpy take microseconds. The plan reads the net's structure from its public
`get_config()` (the one .keras files store) and its weights from `get_weights()`, so it works
on every Keras backend; a net with any other kind of layer than Dense and the k-sparse code's
TopK (a step with no kernel, activation "top_k:<k>") gets no plan. When a plan is used,
how it is checked, and how it is saved beside the .keras files so that a loaded model answers
without Keras: aeservice.models.frozen.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["ACTIVATIONS", "DensePlan", "activation_function", "dense_plan", "ROWS_PER_CALL"]

ROWS_PER_CALL = 16_384  # rows run through the layers at once: 256 + 128 wide layers hold 25 MB of them

_SQRT_2_OVER_PI = np.float32(np.sqrt(2 / np.pi))


def _gelu_tanh(v: np.ndarray) -> np.ndarray:
    """0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))), in place on one float32 buffer: the
    formula as written took 16 ms for 1000 x 256 values (`v ** 3` alone is slow), this 0.24 ms."""
    out = v * v
    out *= np.float32(0.044715)
    out += np.float32(1)
    out *= v
    out *= _SQRT_2_OVER_PI
    np.tanh(out, out=out)
    out += np.float32(1)
    out *= v
    out *= np.float32(0.5)
    return out


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "sigmoid": lambda v: 0.5 * (1 + np.tanh(0.5 * v)),  # = 1 / (1 + e^-v), without overflow
    "tanh": np.tanh,
    "softplus": lambda v: np.logaddexp(0, v),
    "aeservice>gelu_tanh": _gelu_tanh,
    "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0))),
    "silu": lambda v: v * 0.5 * (1 + np.tanh(0.5 * v)),
}


_TOP_K = "top_k:"  # a TopK layer's step: "top_k:8" keeps each row's 8 values largest in size


def _top_k(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def keep(v: np.ndarray) -> np.ndarray:
        width = v.shape[1]
        if k >= width:
            return v
        out = v.copy()  # the step's input may be another step's output
        np.put_along_axis(out, np.argpartition(np.abs(v), width - k, axis=1)[:, :width - k], 0, axis=1)
        return out

    return keep


def activation_function(name: str | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The numpy function of a step's activation name; None for a name no plan knows."""
    if isinstance(name, str) and name.startswith(_TOP_K) and name[len(_TOP_K):].isdigit():
        return _top_k(int(name[len(_TOP_K):]))
    return ACTIVATIONS.get(name) if isinstance(name, str) else None


def _activation_name(setting) -> str | None:
    """A built-in activation is saved as its name, a registered function as a dict naming it."""
    return setting.get("config") if isinstance(setting, dict) else setting


class DensePlan:
    """Callable like a Keras net on one numpy batch: float32 math, an array or a list of arrays out."""

    def __init__(self, input_name: str, steps: list[tuple[str, str, np.ndarray | None, np.ndarray | None, str]],
                 outputs: list[str]):
        """Steps are (name, source, kernel, bias, activation); a step without a kernel only applies its activation."""
        self.input_name, self.steps, self.outputs = input_name, steps, outputs
        self._functions = [activation_function(step[4]) for step in steps]

    def __call__(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        if len(x) > ROWS_PER_CALL:  # every layer's output is held until the end: bound them by the rows
            parts = [self(x[start:start + ROWS_PER_CALL]) for start in range(0, len(x), ROWS_PER_CALL)]
            if isinstance(parts[0], list):
                return [np.concatenate(column) for column in zip(*parts)]
            return np.concatenate(parts)
        values = {self.input_name: np.asarray(x, dtype=np.float32)}
        with _one_blas_thread():
            for (name, source, kernel, bias, _), function in zip(self.steps, self._functions):
                out = values[source] if kernel is None else values[source] @ kernel
                if bias is not None:
                    out += bias
                values[name] = function(out)
        found = [values[name] for name in self.outputs]
        return found[0] if len(found) == 1 else found


_BLAS = None


def _one_blas_thread():
    """BLAS on one thread for these small products (a 7 us switch per call).

    Measured on 2 busy cores: 1000 digits rows through 64-256-128 took 1.3 ms on one OpenBLAS
    thread and 7-15 ms on two, whose threads spin against TensorFlow's and other processes'.
    """
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController().select(user_api="blas")
    return _BLAS.limit(limits=1)


def _history(node_args) -> str | None:
    """The layer name a Dense layer reads from, in the saved-config format of Keras 3."""
    if not isinstance(node_args, list) or len(node_args) != 1:
        return None
    tensor = node_args[0]
    if not isinstance(tensor, dict) or tensor.get("class_name") != "__keras_tensor__":
        return None
    history = tensor.get("config", {}).get("keras_history")
    return history[0] if history and list(history[1:]) == [0, 0] else None


def dense_plan(net) -> DensePlan | None:
    """A plan for a functional net of one input and Dense layers only; None for anything else."""
    try:
        config = net.get_config()
        layers = {layer.name: layer for layer in net.layers}
        inputs = config["input_layers"]
        inputs = inputs[0] if inputs and isinstance(inputs[0], (list, tuple)) else inputs
        if len(inputs) != 3 or list(inputs[1:]) != [0, 0]:
            return None
        steps = []
        for entry in config["layers"]:
            kind, name, settings = entry["class_name"], entry["name"], entry["config"]
            if kind == "InputLayer" and name == inputs[0]:
                continue
            nodes = entry.get("inbound_nodes") or []
            source = _history(list(nodes[0].get("args", []))) if len(nodes) == 1 and not nodes[0].get("kwargs") else None
            if source is None:
                return None
            if entry.get("registered_name") == "aeservice>TopK":  # the k-sparse code: no weights
                steps.append((name, source, None, None, f"{_TOP_K}{int(settings['k'])}"))
                continue
            activation = _activation_name(settings.get("activation"))
            if kind != "Dense" or activation not in ACTIVATIONS or settings.get("lora_rank"):
                return None
            weights = [np.asarray(w, dtype=np.float32) for w in layers[name].get_weights()]
            kernel, bias = weights[0], (weights[1] if settings.get("use_bias", True) else None)
            steps.append((name, source, kernel, bias, activation))
        outputs = config["output_layers"]
        outputs = [outputs] if outputs and not isinstance(outputs[0], (list, tuple)) else outputs
        if any(list(out[1:]) != [0, 0] for out in outputs):
            return None
        return DensePlan(inputs[0], steps, [out[0] for out in outputs])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
