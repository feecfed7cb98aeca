"""Importing Keras without the extras it only offers: for `train`'s tracking worker.

Keras imports scikit-learn (with SciPy) and matplotlib whenever they are installed, only to
offer its scikit-learn wrappers and plotting helpers: 1.0 s of a 2.1 s import. The tracking
worker needs Keras for one thing, MLflow's check that the logged model loads, and uses neither
extra; on 2 busy cores the second it saves is a second the trainer gets.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

__all__ = ["lean_keras", "OPTIONAL_FOR_KERAS"]

OPTIONAL_FOR_KERAS = ("sklearn", "matplotlib")  # Keras wraps each import in try/except ImportError


@contextmanager
def lean_keras(hidden: tuple[str, ...] = OPTIONAL_FOR_KERAS) -> Iterator[None]:
    """Import Keras inside this block with `hidden` packages looking absent to it.

    Only packages not yet imported are hidden, and only for the block: later imports of them
    work as usual. In this process Keras's `keras.wrappers.SKLearn*` and `keras.visualization`
    then act as if those packages were missing; use it where neither is needed.
    """
    names = [name for name in hidden if name not in sys.modules]
    for name in names:
        sys.modules[name] = None  # type: ignore[assignment]  (None makes `import name` fail)
    try:
        yield
    finally:
        for name in names:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
