"""aeservice: train, tune, compare, register and serve autoencoders with MLflow and Keras 3."""
from __future__ import annotations

from aeservice import backend as _backend

_backend.configure()  # before anything imports Keras: the backend is fixed at that import

__version__ = "0.1.0"
__all__ = ["__version__"]
