"""Serving: the request methods and the MLflow pyfunc file that exposes them."""
from __future__ import annotations

from pathlib import Path

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")

__all__ = ["PYFUNC_FILE"]
