"""Data sets, files, bad values and the seeded split."""
from __future__ import annotations

import numpy as np
import pytest

from aeservice.config import DataConfig
from aeservice.data import BUILTIN, load_dataset, split_dataset
from aeservice.data.preprocess import Standardizer, UnitRange
from aeservice.errors import UserError


@pytest.mark.parametrize("name", ["curve3d", "normal1d", "scurve", "two_gaussians", "digits"])
def test_builtin_sets_load_finite_and_are_seeded(name):
    a = load_dataset(DataConfig(dataset=name), seed=1)
    b = load_dataset(DataConfig(dataset=name), seed=1)
    assert np.isfinite(a.x).all() and a.x.ndim == 2
    np.testing.assert_array_equal(a.x, b.x)
    if name != "digits":
        c = load_dataset(DataConfig(dataset=name), seed=2)
        assert not np.array_equal(a.x, c.x)


def test_generator_size_and_noise_are_options():
    data = load_dataset(DataConfig(dataset="normal1d", n_samples=400, noise=2.0), seed=0)
    assert data.x.shape == (400, 1)
    assert abs(data.x.std() - 2.0) < 0.3 and abs(data.x.mean() - 100) < 0.5


def test_digits_are_unit_range_images_with_labels():
    data = load_dataset(DataConfig(dataset="digits"))
    assert data.kind == "image" and data.image_shape == (8, 8)
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert data.labels is not None and set(np.unique(data.labels)) == set(range(10))


def test_mnist_without_cache_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(UserError, match="mnist is not cached"):
        load_dataset(DataConfig(dataset="mnist"))


def test_split_is_deterministic_and_disjoint():
    data = load_dataset(DataConfig(dataset="digits"))
    cfg = DataConfig()
    s1, s2 = split_dataset(data, cfg, 3), split_dataset(data, cfg, 3)
    np.testing.assert_array_equal(s1.test, s2.test)
    assert len(s1.train) + len(s1.val) + len(s1.test) == len(data.x)
    other = split_dataset(data, cfg, 4)
    assert not np.array_equal(s1.test, other.test)


def test_csv_with_label_column(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("a,b,kind\n" + "\n".join(f"{i},{2 * i + 0.5},{'x' if i % 2 else 'y'}" for i in range(30)))
    data = load_dataset(DataConfig(dataset=str(path), label_column="kind"))
    assert data.x.shape == (30, 2) and data.kind == "continuous"
    assert list(data.labels[:2]) == ["y", "x"]


def test_npy_images_and_npz_labels(tmp_path):
    np.save(tmp_path / "imgs.npy", np.random.default_rng(0).random((20, 4, 4)))
    imgs = load_dataset(DataConfig(dataset=str(tmp_path / "imgs.npy")))
    assert imgs.kind == "image" and imgs.image_shape == (4, 4) and imgs.x.shape == (20, 16)  # 2-D rows
    np.savez(tmp_path / "pts.npz", x=np.ones((12, 3)), y=np.arange(12))
    pts = load_dataset(DataConfig(dataset=str(tmp_path / "pts.npz")))
    assert pts.x.shape == (12, 3) and len(pts.labels) == 12


def test_images_are_recognised_by_their_values_and_shape_wherever_they_come_from(tmp_path):
    """Pixels ([0, 1], or whole numbers up to 255) with 2-D rows or a square of 8x8 or more
    features are images, as a CSV too; anything else is continuous, whatever its shape."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    csv = tmp_path / "digits.csv"
    csv.write_text("\n".join([",".join([f"p{i}" for i in range(64)] + ["label"])]
                             + [",".join(map(str, [*row.astype(int), y])) for row, y in zip(digits.data, digits.target)]))
    data = load_dataset(DataConfig(dataset=str(csv), label_column="label"))
    assert data.kind == "image" and data.image_shape == (8, 8) and "0-16" in data.kind_reason
    rng = np.random.default_rng(0)
    cases = {"normal.npy": (rng.standard_normal((30, 8, 8)), "continuous"),  # a 3-D array, negative values
             "bytes.npy": (rng.integers(0, 256, (30, 28, 28)), "image"),
             "unit.npz": (rng.random((30, 100)), "image"),  # 10x10 features in [0, 1]
             "table.npy": (rng.random((30, 16)), "continuous"),  # 4x4: likelier a table than pixels
             "floats255.npy": (rng.random((30, 64)) * 255, "continuous")}  # 0-255 but not whole numbers
    for name, (x, kind) in cases.items():
        path = tmp_path / name
        np.savez(path, x=x) if name.endswith(".npz") else np.save(path, x)
        assert load_dataset(DataConfig(dataset=str(path))).kind == kind, name
    forced = load_dataset(DataConfig(dataset=str(tmp_path / "table.npy"), data_kind="image"))
    assert forced.kind == "image" and forced.kind_reason == "as --data-kind says"


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("a,b\n", "no rows"),
    ("a,b\n1,2\n3,\n", "empty, NaN or infinite"),
    ("a,b\n1,2\n3,nan\n", "empty, NaN or infinite"),
    ("a,b\n1,x\n3,4\n", "non-numeric column"),
])
def test_bad_csv_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_dataset(DataConfig(dataset=str(path)))


def test_unknown_set_and_missing_file():
    with pytest.raises(UserError, match="unknown data set 'nope'"):
        load_dataset(DataConfig(dataset="nope"))
    with pytest.raises(UserError, match="not found"):
        load_dataset(DataConfig(dataset="/no/such/file.csv"))


def test_too_few_rows_to_split(tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_text("a\n1\n2\n3\n")
    data = load_dataset(DataConfig(dataset=str(path)))
    with pytest.raises(UserError, match="too few rows"):
        split_dataset(data, DataConfig(), 0)


def test_scalers_round_trip_and_fit_on_given_rows_only():
    x = np.random.default_rng(0).normal(100, 10, size=(50, 2))
    s = Standardizer().fit(x[:40])
    np.testing.assert_allclose(s.inverse_transform(s.transform(x)), x)
    np.testing.assert_allclose(s.offset_, x[:40].mean(axis=0))
    u = UnitRange().fit(np.array([[0.0, 16.0], [8.0, 4.0]]))
    np.testing.assert_allclose(u.transform(np.array([[16.0, 8.0]])), [[1.0, 0.5]])


def test_builtin_table_names_every_seed_set():
    assert {"curve3d", "normal1d", "scurve", "two_gaussians", "digits", "mnist"} <= set(BUILTIN)
