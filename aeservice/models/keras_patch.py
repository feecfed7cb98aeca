"""aeservice's one patch of private Keras state: TensorFlow stays unimported on other backends.

Why: Keras 3 asks `keras.src.utils.module_utils.tensorflow.available`, a lazy module whose first
`available` imports TensorFlow if it is installed (3.3 s and ~400 MB), on every backend:
`keras.utils.set_random_seed` does (to seed TensorFlow too), and so does every serialization of
a model (`serialize_keras_object`, in case of tf.TensorShape, tf.DType or tf.TypeSpec objects;
aeservice has none). Checked on Keras 3.15.1: on JAX, `set_random_seed(0)` alone imports
TensorFlow. Keras has no public switch for this, so where TensorFlow is not the backend and
not imported yet, the lazy module is told it is absent.

When it can go: once Keras checks for TensorFlow without importing it (for example with
`"tensorflow" in sys.modules` or only on the TensorFlow backend), or offers a public way to
say so. Should a Keras upgrade move the private attribute, nothing breaks but the speed, and
tests/test_backends.py (`test_seeding_and_saving_a_net_leave_tensorflow_unimported`) fails.

Applied on import: aeservice.models.layers imports this module, and every use of Keras in
aeservice imports that first (`keras_base.keras_module`).
"""
from __future__ import annotations

import sys

import keras

__all__: list[str] = []


def _leave_tensorflow_unloaded() -> None:
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        return
    try:
        from keras.src.utils import module_utils
    except ImportError:  # a Keras that moved it: TensorFlow is imported when Keras asks, nothing worse
        return
    lazy = getattr(module_utils, "tensorflow", None)
    if lazy is not None:
        lazy._available = False


_leave_tensorflow_unloaded()
