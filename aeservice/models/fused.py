"""JAX: one compiled call per epoch instead of one per batch, validation included.

Keras's JAX `fit` dispatches its compiled `train_step` from Python once per batch and runs a
whole `evaluate` (callbacks, iterator, dispatch) for the validation rows after each epoch; on
the small nets and data here that overhead, not the arithmetic, was most of an epoch. With
`fuse_epochs`, `fit` gets a train function that stacks an epoch's full batches and runs Keras's
own stateless `train_step` over them in one `jax.lax.scan` (a last, smaller batch takes the
ordinary step), then Keras's own `test_step` on the validation batch. `fit` still shuffles and
calls every callback once per epoch, so early stopping and learning-rate changes behave as
before; the numbers are the same as without fusing (tests/test_models.py checks). Other
backends keep `fit` as it is.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import keras
import numpy as np

__all__ = ["compile_options", "fuse_epochs"]

# An epoch is stacked in pieces of at most this size, so a large data set (MNIST: 180 MB of
# float32 rows) is not copied whole each epoch; the digits benchmark's epoch is 0.6 MB.
_MAX_STACK_BYTES = 32 * 2**20


def compile_options(n_rows: int, batch_size: int) -> dict:
    """Extra `compile` arguments: on JAX, one execution is a whole epoch of batches."""
    if keras.backend.backend() != "jax":
        return {}
    return {"steps_per_execution": max(1, math.ceil(n_rows / batch_size))}


def fuse_epochs(model: keras.Model, validation: tuple[Any, Any] | None = None) -> bool:
    """Install the fused train function on a compiled model; False (nothing done) off JAX.

    `validation` is one (x, y) batch scored after every epoch as `val_<metric>`; when fused,
    pass it here instead of to `fit`.
    """
    if keras.backend.backend() != "jax" or model.steps_per_execution <= 1:
        return False
    import jax

    step = jax.jit(model.train_step, donate_argnums=0)

    def scan_body(state, data):
        logs, state = model.train_step(state, data)
        return state, logs

    @functools.partial(jax.jit, donate_argnums=0)
    def epoch(state, stacked):
        state, logs = jax.lax.scan(scan_body, state, stacked)
        return jax.tree.map(lambda v: v[-1], logs), state

    @jax.jit
    def score(state, data):
        trainable, non_trainable, _, metrics = state
        fresh = jax.tree.map(jax.numpy.zeros_like, metrics)  # what reset_metrics() does to means
        logs, (_, non_trainable, _) = model.test_step((trainable, non_trainable, fresh), data)
        return logs, non_trainable

    model.make_train_function()
    keras_function = model.train_function  # for Keras versions that hand over a list of batches

    def train_function(state, iterator):
        if not hasattr(iterator, "__next__"):
            return keras_function(state, iterator)
        batches = []
        for _ in range(model.steps_per_execution):
            try:
                batches.append(next(iterator))
            except StopIteration:
                break
        size = _rows(batches[0])
        full = [b for b in batches if _rows(b) == size]
        logs = None
        per_call = max(1, _MAX_STACK_BYTES // _nbytes(batches[0]))  # at most two scan lengths compile
        for start in range(0, len(full), per_call):
            part = full[start:start + per_call]
            logs, state = epoch(state, jax.tree.map(lambda *parts: np.stack(parts), *part))
        for data in batches[len(full):] if len(full) < len(batches) else ():
            logs, state = step(state, data)
        if validation is not None:  # the seed state moves on, as after Keras's evaluate
            val_logs, non_trainable = score(state, validation)
            state = (state[0], non_trainable, *state[2:])
            logs = {**logs, **{f"val_{k}": v for k, v in val_logs.items()}}
        return logs, state

    model.train_function = train_function
    return True


def _rows(data) -> int:
    import jax

    return jax.tree.leaves(data)[0].shape[0]


def _nbytes(data) -> int:
    import jax

    return max(1, sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(data)))
