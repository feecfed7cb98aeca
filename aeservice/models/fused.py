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
# float32 rows) is not copied whole each epoch; the digits benchmark's epoch is 0.6 MB. 8 MB
# is 40 steps of 512 rows of 50 features (inputs and targets): the call's dispatch is still
# a small part of its steps.
_MAX_STACK_BYTES = 8 * 2**20


def compile_options(n_rows: int, batch_size: int, convolutional: bool = False) -> dict:
    """Extra `compile` arguments: on JAX, one execution is a whole epoch of batches.

    Not for convolutional nets: XLA's CPU code for convolutions inside a scan was several times
    slower than the ordinary per-batch step (5 epochs of 3000 MNIST images: 84 s fused, 18 s not),
    and their batches are big enough that the per-batch dispatch is a small part of the step."""
    if keras.backend.backend() != "jax" or convolutional:
        return {}
    return {"steps_per_execution": max(1, math.ceil(n_rows / batch_size))}


def fuse_epochs(model: keras.Model, validation: tuple[Any, Any] | list[tuple[Any, Any]] | None = None) -> bool:
    """Install the fused train function on a compiled model; False (nothing done) off JAX.

    `validation` is one (x, y) batch, or a list of them, scored after every epoch as
    `val_<metric>` (several batches: each batch's means weighted by its rows, as `evaluate`
    averages); when fused, pass it here instead of to `fit`. Keras's own `evaluate` under a
    many-step `steps_per_execution` held every validation batch's activations at once (500 MB
    for 150,000 rows of 50 features).
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
        # Batches are run as they arrive, in stacks of at most _MAX_STACK_BYTES: an epoch's rows
        # are never all held at once (a million rows streamed from a file included).
        logs, size, per_call, pending, rest = None, None, 1, [], []
        for _ in range(model.steps_per_execution):
            try:
                data = next(iterator)
            except StopIteration:
                break
            if size is None:
                size, per_call = _rows(data), max(1, _MAX_STACK_BYTES // _nbytes(data))  # two scan lengths compile
            if _rows(data) != size:
                rest.append(data)
                continue
            pending.append(data)
            if len(pending) == per_call:
                if logs is not None:  # JAX dispatches ahead: without a wait, every stack of the epoch is queued at once
                    jax.block_until_ready(logs)
                logs, state = epoch(state, jax.tree.map(lambda *parts: np.stack(parts), *pending))
                pending = []
        if pending:
            logs, state = epoch(state, jax.tree.map(lambda *parts: np.stack(parts), *pending))
        for data in rest:
            logs, state = step(state, data)
        if validation is not None:  # the seed state moves on, as after Keras's evaluate
            parts = validation if isinstance(validation, list) else [validation]
            total, sums = sum(_rows(part) for part in parts), {}
            for part in parts:
                val_logs, non_trainable = score(state, part)
                state = (state[0], non_trainable, *state[2:])
                if len(parts) == 1:
                    sums = val_logs
                else:
                    for key, value in val_logs.items():
                        sums[key] = sums.get(key, 0.0) + np.asarray(value, dtype=np.float64) * (_rows(part) / total)
            logs = {**logs, **{f"val_{k}": v for k, v in sums.items()}}
        return logs, state

    model.train_function = train_function
    return True


def _rows(data) -> int:
    import jax

    return jax.tree.leaves(data)[0].shape[0]


def _nbytes(data) -> int:
    import jax

    return max(1, sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(data)))
