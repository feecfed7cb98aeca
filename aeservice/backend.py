"""Which Keras backend runs the models, chosen before Keras is first imported.

JAX is the default when it is installed: on these 2-core CPU machines the same Keras fit runs
several times faster on it than on TensorFlow (scripts/bench_training.py; numbers in README).
TensorFlow stays a full backend: set KERAS_BACKEND=tensorflow (or torch) and every command,
test and served model uses it. Saved models are backend-neutral .keras files, so a model trained
on one backend loads and serves on the other.
"""
from __future__ import annotations

import os
import sys
from importlib.util import find_spec
from pathlib import Path

__all__ = ["configure", "current", "default_backend", "device", "import_tensorflow_quietly", "jax_cache_dir"]

PREFERENCE = ("jax", "tensorflow")  # fastest first, by measurement


def default_backend() -> str:
    """The first installed backend of PREFERENCE (TensorFlow if none is: Keras's own default)."""
    return next((name for name in PREFERENCE if find_spec(name) is not None), "tensorflow")


def current() -> str:
    """The backend Keras runs on, or will once imported: a process that serves saved numpy plans
    never imports Keras, and its tags and log lines still name the backend."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND") or default_backend()


def device() -> str:
    """The device the backend computes on: "cpu", or "gpu (<its kind>)". Imports the backend."""
    name = current()
    if name == "jax":
        import jax

        first = jax.devices()[0]
        return "cpu" if first.platform == "cpu" else f"{first.platform} ({first.device_kind})"
    if name == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return f"gpu ({gpus[0].name})" if gpus else "cpu"
    if name == "torch":
        import torch

        return f"gpu ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    return "unknown"


def jax_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aeservice" / "jax"


def configure() -> None:
    """Set defaults in the environment; anything the user already set is left alone.

    JAX compiles each train / test / predict step once per batch shape (about 0.08 s each, ~30
    per fit); its persistent cache keeps them on disk, so a second `train` of the same network
    shape skips those compiles. Keras and JAX read these variables when first imported.
    """
    os.environ.setdefault("KERAS_BACKEND", default_backend())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
    if os.environ["KERAS_BACKEND"] == "jax":
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(jax_cache_dir()))
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def import_tensorflow_quietly() -> None:
    """On the TensorFlow backend, import it now with stderr muted: TensorFlow 2.21 prints C++
    start-up lines before any log level applies; this hides only those."""
    if os.environ.get("KERAS_BACKEND") != "tensorflow" or "tensorflow" in sys.modules:
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    except ImportError:
        pass  # Keras will raise it again, with the message visible
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
