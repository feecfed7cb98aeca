"""Inference plans: a frozen Keras net of Dense (and convolution) layers, run as numpy matrix products.

The serving fast path. Any Keras call costs a fixed ~0.4 ms (compiled `predict_on_batch`) to
1.3 ms (eager) in the TensorFlow runtime, whatever the batch; a 1-row request to
`mlflow models serve` costs about 2 ms in all, so that fixed cost alone is 20-60 %. The same
Dense layers as numpy take microseconds. The plan reads the net's structure from its public
`get_config()` (the one .keras files store) and its weights from `get_weights()`, so it works
on every Keras backend. Convolutions (3x3, stride 2, "same") run as one product per layer over
each window (im2col), and the k-sparse code's TopK is a step with no kernel (activation
"top_k:<k>"); a net with any other kind of layer gets no plan. When a plan is used,
how it is checked, and how it is saved beside the .keras files so that a loaded model answers
without Keras: aeservice.models.frozen.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

__all__ = ["ACTIVATIONS", "DensePlan", "activation_function", "dense_plan", "ROWS_PER_CALL", "CONV_ROWS_PER_CALL", "PLAN_OPS"]

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


def _same_padding(size: int, out: int, stride: int, window: int) -> tuple[int, int]:
    """Keras's (TensorFlow's) "same" padding of one side: the extra row goes after."""
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def _conv(v: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """Conv2D, "same" padding, channels last: each output pixel's window as one row (im2col)
    times the kernel as a (window x in) x out matrix: one matrix product per layer."""
    n, h, w, c = v.shape
    kh, kw = kernel.shape[:2]
    oh, ow = -(-h // stride), -(-w // stride)
    v = np.pad(v, ((0, 0), _same_padding(h, oh, stride, kh), _same_padding(w, ow, stride, kw), (0, 0)))
    cols = [v[:, a:a + stride * (oh - 1) + 1:stride, b:b + stride * (ow - 1) + 1:stride, :]
            for a in range(kh) for b in range(kw)]
    return np.concatenate(cols, axis=-1) @ kernel.reshape(kh * kw * c, -1)


def _deconv(v: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """Conv2DTranspose, "same" padding: each input pixel adds its kernel-weighted copy to a
    window of the (stride x larger) output, then the padding a forward conv would add is cut."""
    n, h, w, _ = v.shape
    kh, kw, out_channels = kernel.shape[:3]
    full = np.zeros((n, (h - 1) * stride + kh, (w - 1) * stride + kw, out_channels), dtype=np.float32)
    for a in range(kh):
        for b in range(kw):
            full[:, a:a + stride * (h - 1) + 1:stride, b:b + stride * (w - 1) + 1:stride, :] += v @ kernel[a, b].T
    top, left = _same_padding(h * stride, h, stride, kh)[0], _same_padding(w * stride, w, stride, kw)[0]
    return full[:, top:top + h * stride, left:left + w * stride, :]


def _shape_op(op: str, params: list):
    """The numpy form of a layer that only moves values (Reshape, Flatten, Cropping2D)."""
    if op == "reshape":
        return lambda v: v.reshape((len(v), *params))
    if op == "flatten":
        return lambda v: v.reshape(len(v), -1)
    (top, bottom), (left, right) = params
    return lambda v: v[:, top:v.shape[1] - bottom, left:v.shape[2] - right, :]


class DensePlan:
    """Callable like a Keras net on one numpy batch: float32 math, an array or a list of arrays out.

    Each step is (name, source, kernel, bias, activation): a Dense layer unless `ops` names it,
    as {name: (op, params)}: "conv" / "deconv" (params [stride]) with their kernel, or "reshape"
    (params: the target shape), "flatten" or "crop" (params: the cropping) without one. Any
    other step without a kernel only applies its activation (the k-sparse code's top-k)."""

    def __init__(self, input_name: str, steps: list[tuple[str, str, np.ndarray | None, np.ndarray | None, str]],
                 outputs: list[str], ops: dict[str, tuple[str, list]] | None = None):
        self.input_name, self.steps, self.outputs, self.ops = input_name, steps, outputs, dict(ops or {})
        # Convolutions hold each row's maps and their windows: a few MB a row for 28x28 images.
        self.rows_per_call = CONV_ROWS_PER_CALL if self.ops else ROWS_PER_CALL
        self._functions = [activation_function(step[4]) for step in steps]

    def __call__(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        step_rows = self.rows_per_call
        if len(x) > step_rows:  # every layer's output is held until the end: bound them by the rows
            parts = [self(x[start:start + step_rows]) for start in range(0, len(x), step_rows)]
            if isinstance(parts[0], list):
                return [np.concatenate(column) for column in zip(*parts)]
            return np.concatenate(parts)
        values = {self.input_name: np.asarray(x, dtype=np.float32)}
        with _one_blas_thread() if len(x) > SINGLE_THREAD_ROWS else contextlib.nullcontext():
            for (name, source, kernel, bias, _), function in zip(self.steps, self._functions):
                op, params = self.ops.get(name, ("dense", []))
                v = values[source]
                if op == "dense":
                    out = v if kernel is None else v @ kernel
                elif op == "conv":
                    out = _conv(v, kernel, params[0])
                elif op == "deconv":
                    out = _deconv(v, kernel, params[0])
                else:
                    values[name] = _shape_op(op, params)(v)
                    continue
                if bias is not None:
                    out += bias
                values[name] = function(out)
        found = [values[name] for name in self.outputs]
        return found[0] if len(found) == 1 else found


CONV_ROWS_PER_CALL = 1024
PLAN_OPS = ("dense", "conv", "deconv", "reshape", "flatten", "crop")


_BLAS = None
# Up to this many rows the products are too small for BLAS to split across threads, so the
# switch to one thread (threadpoolctl, about 40 us with its restore) is skipped: it was a fifth of
# a served 1-row `score` (two plan calls), and a served model spends its time in such requests.
SINGLE_THREAD_ROWS = 16


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


def _convolution(settings: dict) -> bool:
    """A convolution the plan computes: square strides, "same" padding, channels last, plain."""
    strides, dilation = list(settings.get("strides", [1, 1])), list(settings.get("dilation_rate", [1, 1]))
    return (settings.get("padding") == "same" and settings.get("data_format", "channels_last") == "channels_last"
            and len(set(strides)) == 1 and dilation == [1, 1] and settings.get("groups", 1) == 1
            and settings.get("output_padding") is None)


_KERNEL_LAYERS = {  # Keras class -> the plan's op for its settings, or None when the plan cannot compute it
    "Dense": lambda settings: "dense",
    "Conv2D": lambda settings: "conv" if _convolution(settings) else None,
    "Conv2DTranspose": lambda settings: "deconv" if _convolution(settings) else None,
}


def _cropping(settings: dict):
    crop = settings.get("cropping")
    ok = settings.get("data_format", "channels_last") == "channels_last" and crop is not None
    return ("crop", [list(map(int, side)) for side in crop]) if ok else (None, None)


_SHAPE_LAYERS = {
    "Reshape": lambda settings: ("reshape", [int(v) for v in settings["target_shape"]]),
    "Flatten": lambda settings: ("flatten", []) if settings.get("data_format", "channels_last") == "channels_last"
    else (None, None),
    "Cropping2D": _cropping,
}


def dense_plan(net) -> DensePlan | None:
    """A plan for a functional net of one input and Dense, Conv2D, Conv2DTranspose, Reshape,
    Flatten and Cropping2D layers only; None for anything else."""
    try:
        config = net.get_config()
        layers = {layer.name: layer for layer in net.layers}
        inputs = config["input_layers"]
        inputs = inputs[0] if inputs and isinstance(inputs[0], (list, tuple)) else inputs
        if len(inputs) != 3 or list(inputs[1:]) != [0, 0]:
            return None
        steps, ops = [], {}
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
            if kind in _SHAPE_LAYERS:
                op, params = _SHAPE_LAYERS[kind](settings)
                if op is None:
                    return None
                ops[name] = (op, params)
                steps.append((name, source, None, None, "linear"))
                continue
            activation = _activation_name(settings.get("activation"))
            if kind not in _KERNEL_LAYERS or activation not in ACTIVATIONS or settings.get("lora_rank"):
                return None
            op = _KERNEL_LAYERS[kind](settings)
            if op is None:
                return None
            if op != "dense":
                ops[name] = (op, [int(settings["strides"][0])])
            weights = [np.asarray(w, dtype=np.float32) for w in layers[name].get_weights()]
            kernel, bias = weights[0], (weights[1] if settings.get("use_bias", True) else None)
            steps.append((name, source, kernel, bias, activation))
        outputs = config["output_layers"]
        outputs = [outputs] if outputs and not isinstance(outputs[0], (list, tuple)) else outputs
        if any(list(out[1:]) != [0, 0] for out in outputs):
            return None
        return DensePlan(inputs[0], steps, [out[0] for out in outputs], ops)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
