"""Built-in data sets by name, data files and image folders by path, and the seeded train/validation/test split."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from aeservice.config import DataConfig
from aeservice.data import images, rows, synthetic
from aeservice.errors import UserError

__all__ = ["Dataset", "Split", "BUILTIN", "detect_kind", "load_dataset", "split_dataset", "describe_builtins"]


@dataclass
class Dataset:
    name: str
    x: np.ndarray  # (rows, features), finite: float64, or a large .npy file memory-mapped (aeservice.data.rows)
    labels: np.ndarray | None  # what plots colour by; None when the data has none
    kind: str  # "continuous" or "image"
    # for image grids and clients: (h, w) gray, (h, w, c) colour; rows are images flattened in that order
    image_shape: tuple[int, ...] | None = None
    source: str = ""  # where it came from, for the MLflow dataset input
    categorical_labels: bool = False  # True: class ids (legend); False: a colour scale
    kind_reason: str = ""  # why `kind` is what it is, for the announce line; "" for files until detected
    label_note: str = ""  # how labels no option named were found, added to kind_reason

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
    """A built-in set by name, or by path a .csv / .npy / .npz / IDX file or a folder of images;
    checked for bad values."""
    name = cfg.dataset
    if name in BUILTIN:
        data = _load_builtin(name, cfg, seed)
    elif (loader := _loader_for(Path(name))) is not None:
        path = Path(name)
        if loader is not _load_folder:
            if not path.is_file():
                raise UserError(f"data file not found: {name}")
            if path.stat().st_size == 0:
                raise UserError(f"data file is empty: {name}")
        data = loader(path, cfg)
    else:
        known = ", ".join(BUILTIN)
        raise UserError(f"unknown data set {name!r}: use one of {known}, a path to a .csv, .npy, .npz or IDX"
                        " file, or a folder of PNG/JPEG images")
    summary = rows.summarize(data.x) if rows.is_streamed(data.x) else None  # one pass over a mapped file
    _check_values(data, summary)
    if cfg.data_kind != "auto":
        data.kind, data.kind_reason = cfg.data_kind, "as --data-kind says"
    elif data.kind_reason == "":  # a file: recognised by its values and shape
        data.kind, data.kind_reason = detect_kind(data.x, data.image_shape, summary)
    if data.label_note:
        data.kind_reason = f"{data.kind_reason}; {data.label_note}"
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
            f"mnist is not cached at {cache} and cannot be downloaded here; copy mnist.npz there, or pass a copy"
            " by path, which works offline: --dataset path/to/t10k-images-idx3-ubyte.gz (IDX, labels beside it)"
            " or --dataset path/to/mnist.npz (NPZ); or use --dataset digits"
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
    labels, label_column, note = None, cfg.label_column, ""
    if label_column is None and (label_column := _pixel_label_column(frame)) is not None:
        note = f"label column {label_column!r} taken as labels"
    if label_column is not None:
        if label_column not in frame.columns:
            raise UserError(f"label column {label_column!r} not in {path}; columns are {list(frame.columns)}")
        labels = frame.pop(label_column).to_numpy()
    if frame.shape[1] == 0:
        raise UserError(f"{path} has no feature columns")
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        named = [c for c in frame.columns if str(c).lower() == "label"]
        hint = (f"; a {named[0]!r} column is taken as labels by itself only when every other column is pixels"
                if named and cfg.label_column is None else "")
        raise UserError(f"non-numeric column(s) in {path}: {', '.join(map(str, bad[:5]))}; features must be"
                        f" numbers: drop them, or name a label column with --label-column{hint}")
    _raise_if_missing(frame.to_numpy(dtype=np.float64), str(path))
    categorical = labels is not None and (labels.dtype.kind in "OUSb" or len(np.unique(labels)) <= 20)
    return Dataset(path.stem, frame.to_numpy(dtype=np.float64), labels, "continuous", None, str(path.resolve()),
                   bool(categorical), label_note=note)


def _pixel_label_column(frame) -> str | None:
    """The column named label (in any case) when every other column is a pixel, as in MNIST as CSV
    (label,1x1,1x2,... or label,pixel0,...): numbers that `_are_pixels`, a square of them."""
    import pandas as pd

    named = [c for c in frame.columns if str(c).lower() == "label"]
    rest = frame.drop(columns=named)
    if len(named) != 1 or _image_side(rest.shape[1]) is None:
        return None
    if not all(pd.api.types.is_numeric_dtype(rest[c]) for c in rest.columns):
        return None
    values = rest.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():  # left for the missing-cell check to report
        return None
    return named[0] if _are_pixels(float(values.min()), float(values.max()), _whole(values)) else None


CHANNELS = (1, 3, 4)  # gray, RGB, RGBA: the last axis of a 4-D array of images


def _from_array(path: Path, x: np.ndarray, labels: np.ndarray | None, name: str | None = None) -> Dataset:
    """Rows from an array: 1-D values, 2-D rows x features, 3-D images (n, h, w), or 4-D images
    with channels (n, h, w, c); images are flattened in (h, w, c) order, one channel as (h, w)."""
    if x.dtype.kind not in "biuf":
        raise UserError(f"{path} holds {x.dtype} values; a numeric array is needed")
    if x.ndim == 0 or x.size == 0:
        raise UserError(f"{path} holds no rows")
    image_shape = None
    if x.ndim == 1:
        x = x[:, None]
    elif x.ndim == 3 or (x.ndim == 4 and x.shape[3] in CHANNELS):
        h, w = int(x.shape[1]), int(x.shape[2])
        image_shape = (h, w) if x.ndim == 3 or x.shape[3] == 1 else (h, w, int(x.shape[3]))
        x = x.reshape(len(x), -1)
    elif x.ndim > 2:
        raise UserError(f"{path} has shape {x.shape}; use rows x features, rows x height x width, or rows x"
                        " height x width x channels (1, 3 or 4)")
    if not isinstance(x, np.memmap):  # a mapped file keeps its own dtype: read (as float32) a chunk at a time
        x = x.astype(np.float64)
    if labels is not None and len(labels) != len(x):
        raise UserError(f"{path}: {len(labels)} labels for {len(x)} rows")
    return Dataset(name or path.stem, x, labels, "continuous", image_shape, str(path.resolve()), labels is not None)


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
    if {"x_train", "x_test"} <= set(arrays):  # Keras's layout (mnist.npz and the like): both parts, in order
        x = np.concatenate([arrays["x_train"], arrays["x_test"]])
        has_y = {"y_train", "y_test"} <= set(arrays)
        return _from_array(path, x, np.concatenate([arrays["y_train"], arrays["y_test"]]) if has_y else None)
    key = next((k for k in ("x", "X", "data", "features") if k in arrays), next(iter(arrays)))
    label_key = next((k for k in ("y", "labels", "target") if k in arrays and k != key), None)
    return _from_array(path, arrays[key], arrays[label_key] if label_key else None)


def _load_idx(path: Path, cfg: DataConfig) -> Dataset:
    """An IDX file, with the labels of a `*-labels-idx1-ubyte[.gz]` file beside it as classes."""
    x = images.read_idx(path)
    labels, beside = None, images.idx_labels_beside(path)
    if beside is not None:
        labels = images.read_idx(beside)
        if labels.ndim != 1:
            raise UserError(f"{beside} holds an array of shape {labels.shape}, not one label per image")
        if len(labels) != len(x):
            raise UserError(f"{beside} holds {len(labels)} labels for the {len(x)} images of {path}")
    data = _from_array(path, x, labels, images.idx_stem(path.name))
    if beside is not None:
        data.label_note = f"labels from {beside.name}"
    return data


def _load_folder(path: Path, cfg: DataConfig) -> Dataset:
    """PNG/JPEG images in a folder; class sub-folders give the labels (`images.read_image_folder`)."""
    x, labels = images.read_image_folder(path)
    data = _from_array(path, x, labels, path.resolve().name)
    if labels is not None:
        data.label_note = f"labels from {len(np.unique(labels))} sub-folders"
    return data


_FILE_LOADERS = {".csv": _load_csv, ".npy": _load_npy, ".npz": _load_npz}


def _loader_for(path: Path) -> Callable[[Path, DataConfig], Dataset] | None:
    """A folder of images, an IDX file by its name (t10k-images-idx3-ubyte[.gz]), else by suffix."""
    if path.is_dir():
        return _load_folder
    if images.is_idx_name(path.name):
        return _load_idx
    return _FILE_LOADERS.get(path.suffix.lower())


MIN_IMAGE_SIDE = 8  # the smallest images in use (8x8 digits); a 4x4 table of [0, 1] values is likelier features


def _whole(x: np.ndarray) -> bool:
    return bool(np.all(np.mod(x, 1) == 0))


def _are_pixels(low: float, high: float, whole: bool) -> bool:
    """Values that can be pixels: in [0, 1], or whole numbers in 0-255."""
    return low >= 0 and (high <= 1 or (whole and high <= 255))


def _image_side(n_features: int) -> int | None:
    """The side of a square image of n_features pixels, MIN_IMAGE_SIDE or more; None if there is none."""
    side = int(round(math.sqrt(n_features)))
    return side if side * side == n_features and side >= MIN_IMAGE_SIDE else None


def detect_kind(x: np.ndarray, image_shape: tuple[int, ...] | None,
                summary: rows.Summary | None = None) -> tuple[str, str]:
    """("image" or "continuous", why) for a file's rows, from their values and shape.

    Images are pixels: every value in [0, 1], or whole numbers in 0-255 (8-bit) or 0-16, with
    rows that were 2-D arrays (or 3-D, with channels) or a square feature count of at least
    MIN_IMAGE_SIDE^2. Anything else is continuous, whatever its shape: a 3-D array of
    standard-normal floats is not images.
    """
    if summary is not None or rows.is_streamed(x):  # a mapped file: from its one chunked pass
        summary = summary or rows.summarize(x)
        low, high, whole = summary.low, summary.high, summary.whole
    else:
        low, high, whole = float(x.min()), float(x.max()), _whole(x)
    if not _are_pixels(low, high, whole):
        span = f"{low:.3g} to {high:.3g}" + ("" if whole else ", not whole numbers")
        return "continuous", f"values {span}: not pixels in [0, 1] or 0-255"
    values = "values in [0, 1]" if high <= 1 else f"whole numbers in 0-{16 if high <= 16 else 255}"
    if image_shape is not None:
        return "image", f"{values}, {'x'.join(map(str, image_shape))} arrays"
    if (side := _image_side(x.shape[1])) is not None:
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
