"""aeservice: train, tune, compare, register and serve autoencoders with MLflow and Keras 3."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
