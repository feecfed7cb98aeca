"""Built-in data sets by name, data files by path, and the seeded train/validation/test split."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from aeservice.config import DataConfig
from aeservice.data import rows, synthetic
from aeservice.errors import UserError

__all__ = ["Dataset", "Split", "BUILTIN", "detect_kind", "load_dataset", "split_dataset", "describe_builtins"]


@dataclass
class Dataset:
    name: str
    x: np.ndarray  # (rows, features), finite: float64, or a large .npy file memory-mapped (aeservice.data.rows)
    labels: np.ndarray | None  # what plots colour by; None when the data has none
    kind: str  # "continuous" or "image"
    image_shape: tuple[int, int] | None = None  # for image grids
    source: str = ""  # where it came from, for the MLflow dataset input
    categorical_labels: bool = False  # True: class ids (legend); False: a colour scale
    kind_reason: str = ""  # why `kind` is what it is, for the announce line; "" for files until detected

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])


@dataclass
class Split:
    train: np.ndarray  # or, for a memory-mapped file, a rows.RowSubset read in chunks
    val: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None
    val_labels: np.ndarray | None
    test_labels: np.ndarray | None


@dataclass(frozen=True)
class _Builtin:
    make: Callable[[int, float, np.random.Generator], tuple[np.ndarray, np.ndarray]] | None
    n: int
    noise: float
    kind: str
    categorical: bool
    summary: str


BUILTIN: dict[str, _Builtin] = {
    "curve3d": _Builtin(synthetic.curve3d, 1000, 0.1, "continuous", False,
                        "points near a curved 2-D sheet in 3-D, with noise"),
    "normal1d": _Builtin(synthetic.normal1d, 1000, 10.0, "continuous", False,
                         "draws of N(100, 10) in raw units (--noise sets the std)"),
    "scurve": _Builtin(synthetic.scurve, 1000, 0.01, "continuous", False,
                       "a 1-D S-shaped curve in 2-D, with noise"),
    "two_gaussians": _Builtin(synthetic.two_gaussians, 2000, 1.0, "continuous", True,
                              "two correlated 2-D Gaussians, labelled by cluster"),
    "digits": _Builtin(None, 1797, 0.0, "image", True,
                       "scikit-learn's bundled 8x8 digits, 1797 images with labels"),
    "mnist": _Builtin(None, 70000, 0.0, "image", True,
                      "Keras MNIST 28x28 images (needs a copy at ~/.keras/datasets/mnist.npz)"),
}


def describe_builtins() -> list[tuple[str, str, str]]:
    """(name, default size, summary) rows for `aeservice datasets`."""
    return [(name, str(b.n), b.summary) for name, b in BUILTIN.items()]


def load_dataset(cfg: DataConfig, seed: int = 0) -> Dataset:
    """A built-in set by name, or a .csv / .npy / .npz file by path; checked for bad values."""
    name = cfg.dataset
    if name in BUILTIN:
        data = _load_builtin(name, cfg, seed)
    elif Path(name).suffix.lower() in _FILE_LOADERS:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"data file not found: {name}")
        if path.stat().st_size == 0:
            raise UserError(f"data file is empty: {name}")
        data = _FILE_LOADERS[path.suffix.lower()](path, cfg)
    else:
        known = ", ".join(BUILTIN)
        raise UserError(f"unknown data set {name!r}: use one of {known}, or a path to .csv, .npy or .npz")
    summary = rows.summarize(data.x) if rows.is_streamed(data.x) else None  # one pass over a mapped file
    _check_values(data, summary)
    if cfg.data_kind != "auto":
        data.kind, data.kind_reason = cfg.data_kind, "as --data-kind says"
    elif data.kind_reason == "":  # a file: recognised by its values and shape
        data.kind, data.kind_reason = detect_kind(data.x, data.image_shape, summary)
    if data.kind == "image" and data.image_shape is None:
        side = int(round(np.sqrt(data.n_features)))
        data.image_shape = (side, side) if side * side == data.n_features else None
    return data


def _load_builtin(name: str, cfg: DataConfig, seed: int) -> Dataset:
    spec = BUILTIN[name]
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data / 16.0, bunch.target
        return Dataset(name, x, y, "image", (8, 8), "sklearn.datasets.load_digits", True, "a built-in image set")
    if name == "mnist":
        return _load_mnist()
    n = cfg.n_samples or spec.n
    noise = spec.noise if cfg.noise is None else cfg.noise
    x, y = spec.make(n, noise, np.random.default_rng(seed))
    return Dataset(name, x, y, spec.kind, None, f"aeservice.data.synthetic.{name}(n={n}, noise={noise})",
                   spec.categorical, "a built-in generator")


def _load_mnist() -> Dataset:
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"
    if not cache.is_file():
        raise UserError(
            f"mnist is not cached at {cache} and cannot be downloaded here; copy mnist.npz there, "
            "or use --dataset digits"
        )
    import keras

    try:
        (xtr, ytr), (xte, yte) = keras.datasets.mnist.load_data(path=str(cache))
    except Exception as exc:  # a truncated or foreign file
        raise UserError(f"could not read mnist from {cache}: {exc}") from None
    x = np.concatenate([xtr, xte]).reshape(-1, 784) / 255.0
    y = np.concatenate([ytr, yte])
    return Dataset("mnist", x, y, "image", (28, 28), str(cache), True, "a built-in image set")


def _load_csv(path: Path, cfg: DataConfig) -> Dataset:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UserError(f"data file is empty: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot parse {path} as CSV: {str(exc).splitlines()[0]}") from None
    if frame.shape[0] == 0:
        raise UserError(f"data file has a header but no rows: {path}")
    labels = None
    if cfg.label_column is not None:
        if cfg.label_column not in frame.columns:
            raise UserError(f"label column {cfg.label_column!r} not in {path}; columns are {list(frame.columns)}")
        labels = frame.pop(cfg.label_column).to_numpy()
    if frame.shape[1] == 0:
        raise UserError(f"{path} has no feature columns")
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise UserError(f"non-numeric column(s) in {path}: {', '.join(map(str, bad[:5]))}"
                        " (use --label-column for a label column)")
    _raise_if_missing(frame.to_numpy(dtype=np.float64), str(path))
    categorical = labels is not None and (labels.dtype.kind in "OUSb" or len(np.unique(labels)) <= 20)
    return Dataset(path.stem, frame.to_numpy(dtype=np.float64), labels, "continuous", None, str(path.resolve()),
                   bool(categorical))


def _from_array(path: Path, x: np.ndarray, labels: np.ndarray | None) -> Dataset:
    if x.dtype.kind not in "biuf":
        raise UserError(f"{path} holds {x.dtype} values; a numeric array is needed")
    if x.ndim == 0 or x.size == 0:
        raise UserError(f"{path} holds no rows")
    image_shape = None
    if x.ndim == 1:
        x = x[:, None]
    elif x.ndim == 3:
        image_shape = (int(x.shape[1]), int(x.shape[2]))
        x = x.reshape(len(x), -1)
    elif x.ndim > 3:
        raise UserError(f"{path} has shape {x.shape}; use rows x features, or rows x height x width")
    if not isinstance(x, np.memmap):  # a mapped file keeps its own dtype: read (as float32) a chunk at a time
        x = x.astype(np.float64)
    if labels is not None and len(labels) != len(x):
        raise UserError(f"{path}: {len(labels)} labels for {len(x)} rows")
    return Dataset(path.stem, x, labels, "continuous", image_shape, str(path.resolve()), labels is not None)


def _load_npy(path: Path, cfg: DataConfig) -> Dataset:
    try:
        x = rows.open_npy(path)  # memory-mapped: nothing is read yet
    except ValueError as exc:
        raise UserError(f"cannot read {path} as a numeric .npy array: {exc}") from None
    return _from_array(path, x, None)


def _load_npz(path: Path, cfg: DataConfig) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except ValueError as exc:
        raise UserError(f"cannot read {path} as a numeric .npz archive: {exc}") from None
    if not arrays:
        raise UserError(f"{path} holds no arrays")
    key = next((k for k in ("x", "X", "data", "features") if k in arrays), next(iter(arrays)))
    label_key = next((k for k in ("y", "labels", "target") if k in arrays and k != key), None)
    return _from_array(path, arrays[key], arrays[label_key] if label_key else None)


_FILE_LOADERS = {".csv": _load_csv, ".npy": _load_npy, ".npz": _load_npz}


MIN_IMAGE_SIDE = 8  # the smallest images in use (8x8 digits); a 4x4 table of [0, 1] values is likelier features


def detect_kind(x: np.ndarray, image_shape: tuple[int, int] | None,
                summary: rows.Summary | None = None) -> tuple[str, str]:
    """("image" or "continuous", why) for a file's rows, from their values and shape.

    Images are pixels: every value in [0, 1], or whole numbers in 0-255 (8-bit) or 0-16, with
    rows that were 2-D arrays or a square feature count of at least MIN_IMAGE_SIDE^2. Anything
    else is continuous, whatever its shape: a 3-D array of standard-normal floats is not images.
    """
    if summary is not None or rows.is_streamed(x):  # a mapped file: from its one chunked pass
        summary = summary or rows.summarize(x)
        low, high, whole = summary.low, summary.high, summary.whole
    else:
        low, high = float(x.min()), float(x.max())
        whole = bool(np.all(np.mod(x, 1) == 0))
    if low < 0 or not (high <= 1 or (whole and high <= 255)):
        span = f"{low:.3g} to {high:.3g}" + ("" if whole else ", not whole numbers")
        return "continuous", f"values {span}: not pixels in [0, 1] or 0-255"
    values = "values in [0, 1]" if high <= 1 else f"whole numbers in 0-{16 if high <= 16 else 255}"
    side = int(round(math.sqrt(x.shape[1])))
    if image_shape is not None:
        return "image", f"{values}, {image_shape[0]}x{image_shape[1]} arrays"
    if side * side == x.shape[1] and side >= MIN_IMAGE_SIDE:
        return "image", f"{values}, {x.shape[1]} = {side}x{side} features"
    side = f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}"
    return "continuous", f"{values}, but {x.shape[1]} features are not a square image of {side} or more"


def _raise_if_missing(x: np.ndarray, where: str, summary: rows.Summary | None = None) -> None:
    if summary is not None or rows.is_streamed(x):  # a mapped file: from its one chunked pass
        summary = summary or rows.summarize(x)
        if summary.bad:
            row, col = summary.first_bad
            raise UserError(f"{where} has {summary.bad} empty, NaN or infinite cell(s); first at row {row + 1},"
                            f" column {col + 1}")
        return
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise UserError(f"{where} has {int(bad.sum())} empty, NaN or infinite cell(s); first at row {row + 1},"
                        f" column {col + 1}")


def _check_values(data: Dataset, summary: rows.Summary | None = None) -> None:
    if data.x.shape[0] == 0 or data.x.shape[1] == 0:
        raise UserError(f"data set {data.name} has no rows or no features")
    _raise_if_missing(data.x, f"data set {data.name}", summary)


MIN_ROWS = 10


def split_dataset(data: Dataset, cfg: DataConfig, seed: int) -> Split:
    """Seeded shuffle then train / validation / test; the same seed gives the same rows."""
    n = data.x.shape[0]
    n_val = max(1, int(round(n * cfg.val_fraction)))
    n_test = max(1, int(round(n * cfg.test_fraction)))
    if n < MIN_ROWS or n - n_val - n_test < 2:
        raise UserError(f"too few rows to split into train/validation/test: {n} (need at least {MIN_ROWS})")
    order = np.random.default_rng(seed).permutation(n)
    test_idx, val_idx, train_idx = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    y = data.labels
    if rows.is_streamed(data.x):  # training rows stay in the file; validation and test rows are copied
        if n_val > rows.HELD_OUT_ROWS or n_test > rows.HELD_OUT_ROWS:  # at most so many: the rest trains
            n_val, n_test = min(n_val, rows.HELD_OUT_ROWS), min(n_test, rows.HELD_OUT_ROWS)
            test_idx, val_idx, train_idx = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
        return Split(rows.RowSubset(data.x, np.sort(train_idx)), rows.gather(data.x, val_idx),
                     rows.gather(data.x, test_idx), None, None, None)
    return Split(
        data.x[train_idx], data.x[val_idx], data.x[test_idx],
        None if y is None else y[train_idx], None if y is None else y[val_idx], None if y is None else y[test_idx],
    )
