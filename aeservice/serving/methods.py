"""The methods behind the `method` param, with input checks that name the problem.

Pure numpy in, numpy out, but for `info`, which answers with what the model is (a JSON object);
the MLflow pyfunc wraps this and turns UserError into HTTP 400.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from aeservice.errors import UserError
from aeservice.models import Autoencoder

__all__ = ["METHODS", "INFO", "MAX_SAMPLES", "DEFAULT_SAMPLES", "as_matrix", "model_info", "prepare_for_serving",
           "run_method", "warm_up"]

MAX_SAMPLES = 10_000  # upper bound on `n` for sample: keeps one response below ~10 MB of JSON
DEFAULT_SAMPLES = 10


def as_matrix(model_input: Any) -> np.ndarray:
    """Any MLflow input (DataFrame, array, list, dict of one column) as a finite 2-D float array."""
    if hasattr(model_input, "to_numpy"):  # pandas DataFrame / Series
        frame = model_input
        if getattr(frame, "ndim", 2) == 2 and len(frame) > 0:  # empty frames: the empty-input error below
            bad = [c for c in frame.columns if frame[c].dtype.kind not in "biuf"]
            if bad:
                raise UserError(f"non-numeric values in column(s) {', '.join(map(str, bad[:5]))}")
        model_input = frame.to_numpy()
    if isinstance(model_input, dict):
        if len(model_input) != 1:
            raise UserError("send one unnamed tensor of rows, not several named inputs")
        model_input = next(iter(model_input.values()))
    try:
        x = np.asarray(model_input, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError("input must be rows of numbers; found non-numeric values") from None
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise UserError(f"input must be a 2-D array of rows, got {x.ndim} dimensions")
    if x.shape[0] == 0 or x.shape[1] == 0:
        hint = " (a CSV body needs a header line, then one line per row)" if x.shape[1] else ""
        raise UserError(f"input is empty: send at least one row{hint}")
    if not np.isfinite(x).all():
        raise UserError("input has NaN or infinite values")
    return x


def _int_param(params: dict, name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, str)):
        raise UserError(f"param {name!r} must be an integer, got {value!r}")
    try:
        as_float = float(value)
    except ValueError:
        raise UserError(f"param {name!r} must be an integer, got {value!r}") from None
    if not as_float.is_integer():
        raise UserError(f"param {name!r} must be an integer, got {value!r}")
    number = int(as_float)
    if not low <= number <= high:
        raise UserError(f"param {name!r} must be between {low} and {high}, got {number}")
    return number


def _sample(model: Autoencoder, x: np.ndarray, params: dict) -> np.ndarray:
    n = _int_param(params, "n", DEFAULT_SAMPLES, 1, MAX_SAMPLES)
    seed = _int_param(params, "seed", 0, 0, 2**32 - 1)
    return model.sample(n, seed)


def _float_param(params: dict, name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise UserError(f"param {name!r} must be a number, got {value!r}")
    return number


def _detect(model: Autoencoder, x: np.ndarray, params: dict) -> np.ndarray:
    """1 where the score is above the threshold the model was trained with, or `threshold` if given."""
    return model.detect(x, _float_param(params, "threshold"))


METHODS: dict[str, Callable[[Autoencoder, np.ndarray, dict], np.ndarray]] = {
    "encode": lambda m, x, p: m.encode(x),
    "decode": lambda m, x, p: m.decode(x),
    "reconstruct": lambda m, x, p: m.reconstruct(x),
    "sample": _sample,
    "score": lambda m, x, p: m.score(x),
    "detect": _detect,
}


INFO = "info"  # what the model is (`model_info`): the one method that answers with an object, not rows


def model_info(model: Autoencoder) -> dict[str, Any]:
    """`Autoencoder.info` (kind, n_features, latent_dim, data_kind, image_shape) and how to call it:
    the methods and the most rows `sample` gives."""
    return {**model.info(), "methods": [*METHODS, INFO], "max_samples": MAX_SAMPLES}


def run_method(model: Autoencoder, model_input: Any, params: dict | None) -> np.ndarray | dict[str, Any]:
    """Rows in, rows out; `info` ignores its input (send a placeholder such as [[0]])."""
    params = dict(params or {})
    method = params.get("method") or "encode"
    if method == INFO:
        return model_info(model)
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join([*METHODS, INFO])}")
    out = METHODS[method](model, as_matrix(model_input), params)
    if not np.isfinite(out).all():  # JSON has no NaN/inf: say why instead of sending invalid JSON
        raise UserError(f"{method} gave non-finite values: input values are too large for this model")
    return out


def prepare_for_serving(model: Autoencoder) -> dict[str, bool]:
    """Freeze the model (numpy plans for its nets where they match) and warm every method up."""
    plans = model.freeze()
    warm_up(model)
    return plans


def warm_up(model: Autoencoder) -> None:
    """Run every method once at load time, on two batch sizes.

    A net without a numpy plan runs Keras' compiled inference step, which is traced on first use
    and once more for a second batch size before it generalizes to any size: doing that here
    keeps tens of milliseconds of tracing out of the first requests a server answers.
    """
    data, latent = np.zeros((2, model.n_features_)), np.zeros((2, model.latent_dim_))
    for rows in (1, 2):
        for method in METHODS:
            run_method(model, latent[:rows] if method == "decode" else data[:rows],
                       {"method": method, "n": rows, "threshold": 0.0})  # detect: also models saved without one
