"""Data: built-in generators and files in, a checked array and a seeded split out."""
from __future__ import annotations

from aeservice.data.datasets import BUILTIN, Dataset, Split, describe_builtins, load_dataset, split_dataset
from aeservice.data.preprocess import Scaler, scaler_for, scaler_from_state

__all__ = ["BUILTIN", "Dataset", "Split", "Scaler", "describe_builtins", "load_dataset", "scaler_for",
           "scaler_from_state", "split_dataset"]
