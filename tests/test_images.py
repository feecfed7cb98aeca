"""Image files users have: IDX files, folders of PNG/JPEG images, pixel CSVs, colour channels, and their plots.

Small synthetic files written here; the real MNIST test set is read only when it is there.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, train_process

from aeservice.config import DataConfig, ModelConfig, TrainConfig
from aeservice.data import load_dataset
from aeservice.data.datasets import detect_kind
from aeservice.data.images import IDX_TYPES, idx_labels_beside, read_idx
from aeservice.errors import UserError

MNIST = REPO.parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"


def write_idx(path: Path, array: np.ndarray, code: int = 0x08) -> Path:
    """An IDX file of `array` as type `code`, gzipped when the name ends in .gz."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    content = header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    path.write_bytes(gzip.compress(content) if path.name.endswith(".gz") else content)
    return path


def write_png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels.astype(np.uint8))
    (image.convert(mode) if mode else image).save(path)
    return path


def one_line_error(cfg: DataConfig) -> str:
    with pytest.raises(UserError) as caught:
        load_dataset(cfg)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def _digits(n: int = 30, side: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, side, side)).astype(np.uint8), rng.integers(0, 3, n).astype(np.uint8)


# ---- IDX -------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_images_with_their_labels_beside(tmp_path, suffix):
    images, labels = _digits()
    path = write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels)
    data = load_dataset(DataConfig(dataset=str(path)))
    assert data.name == "t10k-images" and data.kind == "image" and data.image_shape == (12, 12)
    assert data.x.shape == (30, 144) and data.x.dtype == np.float64
    np.testing.assert_array_equal(data.x[3], images[3].ravel())  # rows in file order, row-major pixels
    np.testing.assert_array_equal(data.labels, labels)
    assert data.categorical_labels
    assert data.kind_reason == f"whole numbers in 0-255, 12x12 arrays; labels from t10k-labels-idx1-ubyte{suffix}"


def test_idx_without_labels_and_with_channels(tmp_path):
    rgb = np.random.default_rng(1).random((20, 10, 10, 3))
    data = load_dataset(DataConfig(dataset=str(write_idx(tmp_path / "colour-images-idx4-ubyte.gz", rgb, 0x0D))))
    assert data.labels is None and data.name == "colour-images"
    assert data.image_shape == (10, 10, 3) and data.x.shape == (20, 300) and data.kind == "image"
    np.testing.assert_allclose(data.x[0], rgb[0].reshape(-1), rtol=1e-6)  # (h, w, c) order
    # the dotted spelling of the names, and a labels file without .gz beside a gzipped images file
    write_idx(tmp_path / "train-images.idx3-ubyte.gz", _digits()[0])
    write_idx(tmp_path / "train-labels.idx1-ubyte", _digits()[1])
    assert idx_labels_beside(tmp_path / "train-images.idx3-ubyte.gz") == tmp_path / "train-labels.idx1-ubyte"


@pytest.mark.parametrize("code", sorted(IDX_TYPES))
def test_every_idx_value_type_reads_back(tmp_path, code):
    values = np.arange(-6, 6).reshape(3, 4) if code != 0x08 else np.arange(12).reshape(3, 4)
    back = read_idx(write_idx(tmp_path / "values-idx2-ubyte", values, code))
    assert back.shape == (3, 4) and back.dtype == np.dtype(IDX_TYPES[code]).newbyteorder("=")
    np.testing.assert_array_equal(back, values)


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _wrong_magic(path: Path) -> None:
    path.write_bytes(b"\x08\x03" + path.read_bytes()[2:])


def _unknown_type(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[2] = 0x07
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name, spoil, message", [
    ("a-images-idx3-ubyte", _truncated, "is truncated: dimensions 30x12x12 need 4320 bytes of values, it has 4313"),
    ("a-images-idx3-ubyte", _wrong_magic, "is not an IDX file: its magic number is 0803"),
    ("a-images-idx3-ubyte", _unknown_type, "unknown IDX value type 0x07"),
    ("a-images-idx3-ubyte", lambda p: p.write_bytes(b"\x00\x00\x08\x03\x00\x00"), "IDX header is cut short"),
    ("a-images-idx3-ubyte.gz", lambda p: p.write_bytes(b"not gzip at all"), "cannot read"),
    ("a-images-idx3-ubyte.gz", _truncated, "cannot read"),  # a gzip stream cut short
])
def test_bad_idx_files_are_one_line_naming_the_file(tmp_path, name, spoil, message):
    path = write_idx(tmp_path / name, _digits()[0])
    spoil(path)
    text = one_line_error(DataConfig(dataset=str(path)))
    assert message in text and str(path) in text
    if name.endswith(".gz"):
        assert "as gzip" in text


def test_labels_beside_that_do_not_match_are_one_line(tmp_path):
    images, labels = _digits()
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:-1])
    text = one_line_error(DataConfig(dataset=str(path)))
    assert text == f"{tmp_path / 't10k-labels-idx1-ubyte'} holds 29 labels for the 30 images of {path}"


@pytest.mark.skipif(not MNIST.is_file(), reason="the MNIST test set is not on this machine")
def test_the_real_mnist_test_set():
    data = load_dataset(DataConfig(dataset=str(MNIST)))
    assert data.x.shape == (10_000, 784) and data.image_shape == (28, 28) and data.kind == "image"
    assert np.bincount(data.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert data.x.max() == 255 and data.name == "t10k-images"


# ---- folders of images --------------------------------------------------------------------

def test_a_flat_folder_of_gray_images_in_name_order(tmp_path):
    rng = np.random.default_rng(0)
    pictures = {name: rng.integers(0, 256, (12, 10)) for name in ("b.png", "a.png", "c.png")}  # 12 high, 10 wide
    for name, pixels in pictures.items():
        write_png(tmp_path / "gray" / name, pixels)
    (tmp_path / "gray" / "notes.txt").write_text("not an image")
    (tmp_path / "gray" / ".hidden.png").write_bytes(b"junk a Mac leaves")
    data = load_dataset(DataConfig(dataset=str(tmp_path / "gray")))
    assert data.name == "gray" and data.labels is None and data.image_shape == (12, 10)
    assert data.kind == "image" and "12x10 arrays" in data.kind_reason
    for row, name in zip(data.x, ("a.png", "b.png", "c.png")):
        np.testing.assert_array_equal(row, pictures[name].ravel())


def test_a_folder_of_rgb_images_labelled_by_sub_folder(tmp_path):
    rng = np.random.default_rng(0)
    made = {}
    for label in ("dog", "cat"):
        for i in range(3):
            made[label, i] = rng.integers(0, 256, (9, 11, 3))
            write_png(tmp_path / "pets" / label / f"{i}.png", made[label, i])
    write_png(tmp_path / "pets" / "cat" / "3.png", rng.integers(0, 256, (9, 11, 4)), "RGBA")  # alpha dropped
    write_png(tmp_path / "pets" / "dog" / "3.png", rng.integers(0, 256, (9, 11)), "L")  # gray among colour
    data = load_dataset(DataConfig(dataset=str(tmp_path / "pets")))
    assert data.image_shape == (9, 11, 3) and data.x.shape == (8, 9 * 11 * 3)
    assert data.labels.tolist() == ["cat"] * 4 + ["dog"] * 4 and data.categorical_labels
    np.testing.assert_array_equal(data.x[4], made["dog", 0].reshape(-1))  # (h, w, c) order
    gray = data.x[7].reshape(9, 11, 3)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])  # a gray image repeated over 3 channels
    assert data.kind == "image" and data.kind_reason.endswith("9x11x3 arrays; labels from 2 sub-folders")


def test_gray_images_saved_as_rgb_or_palette_keep_one_channel_and_digit_folders_are_classes(tmp_path):
    rng = np.random.default_rng(0)
    for digit in ("0", "1", "10"):
        write_png(tmp_path / "d" / digit / "x.png", np.repeat(rng.integers(0, 256, (8, 8, 1)), 3, axis=2))
        write_png(tmp_path / "d" / digit / "y.png", rng.integers(0, 256, (8, 8)), "P")
    data = load_dataset(DataConfig(dataset=str(tmp_path / "d")))
    assert data.image_shape == (8, 8) and data.x.shape == (6, 64)
    assert data.labels.tolist() == [0, 0, 1, 1, 10, 10]  # whole numbers, so 10 sorts after 1 in a legend


def test_bad_image_folders_are_one_line(tmp_path):
    rng = np.random.default_rng(0)
    write_png(tmp_path / "mixed" / "a.png", rng.integers(0, 256, (8, 8)))
    write_png(tmp_path / "mixed" / "b.png", rng.integers(0, 256, (8, 9)))
    assert one_line_error(DataConfig(dataset=str(tmp_path / "mixed"))) == (
        f"images in {tmp_path / 'mixed'} differ in size: a.png is 8x8, b.png is 9x8 (width x height)")
    (tmp_path / "none" / "sub").mkdir(parents=True)
    (tmp_path / "none" / "readme.txt").write_text("x")
    assert "no PNG/JPG/JPEG images found in" in one_line_error(DataConfig(dataset=str(tmp_path / "none")))
    write_png(tmp_path / "both" / "a.png", rng.integers(0, 256, (8, 8)))
    write_png(tmp_path / "both" / "cls" / "b.png", rng.integers(0, 256, (8, 8)))
    assert "has images both in it (a.png) and in class sub-folders" in one_line_error(
        DataConfig(dataset=str(tmp_path / "both")))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert f"cannot read {tmp_path / 'broken' / 'a.jpg'} as an image" in one_line_error(
        DataConfig(dataset=str(tmp_path / "broken")))


def test_a_jpeg_folder_loads(tmp_path):
    from PIL import Image

    (tmp_path / "j").mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), (200, 30 * i, 10), np.uint8)).save(tmp_path / "j" / f"{i}.JPG")
    data = load_dataset(DataConfig(dataset=str(tmp_path / "j")))
    assert data.image_shape == (16, 16, 3) and len(data.x) == 3


# ---- pixel CSV -----------------------------------------------------------------------------

def _pixel_csv(path: Path, header: list[str], n: int = 20, extra: str | None = None) -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, 64))
    labels = rng.integers(0, 10, n)
    lines = [",".join(header + (["note"] if extra else []))]
    lines += [",".join(map(str, [y, *row] + ([extra] if extra else []))) for y, row in zip(labels, pixels)]
    path.write_text("\n".join(lines))
    return labels


@pytest.mark.parametrize("header", [
    ["label", *(f"{r}x{c}" for r in range(1, 9) for c in range(1, 9))],
    ["Label", *(f"pixel{i}" for i in range(64))],
])
def test_a_pixel_csv_takes_its_label_column_by_itself(tmp_path, header):
    labels = _pixel_csv(tmp_path / "mnist_test.csv", header)
    data = load_dataset(DataConfig(dataset=str(tmp_path / "mnist_test.csv")))
    assert data.x.shape == (20, 64) and data.kind == "image" and data.image_shape == (8, 8)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.categorical_labels
    assert data.kind_reason == f"whole numbers in 0-255, 64 = 8x8 features; label column {header[0]!r} taken as labels"


def test_a_label_column_of_a_table_that_is_not_pixels_stays_a_feature(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("label,a,b,c\n" + "\n".join(f"{i % 3},{i * 0.5},{-i},{i}" for i in range(20)))
    data = load_dataset(DataConfig(dataset=str(path)))
    assert data.x.shape == (20, 4) and data.labels is None and "taken as labels" not in data.kind_reason


def test_a_pixel_csv_with_a_stray_text_column_says_what_to_do(tmp_path):
    path = tmp_path / "pixels.csv"
    _pixel_csv(path, ["label", *(f"pixel{i}" for i in range(64))], extra="scanned")
    text = one_line_error(DataConfig(dataset=str(path)))
    assert text.startswith(f"non-numeric column(s) in {path}: note; features must be numbers")
    assert "'label' column is taken as labels by itself only when every other column is pixels" in text


# ---- arrays with channels, the names and params that carry the shape ---------------------------

def test_4d_arrays_are_images_with_channels(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "rgb.npy", rng.integers(0, 256, (12, 8, 8, 3)))
    np.save(tmp_path / "one.npy", rng.random((12, 8, 8, 1)))
    np.save(tmp_path / "five.npy", rng.random((12, 8, 8, 5)))
    rgb = load_dataset(DataConfig(dataset=str(tmp_path / "rgb.npy")))
    assert rgb.image_shape == (8, 8, 3) and rgb.x.shape == (12, 192) and rgb.kind == "image"
    assert load_dataset(DataConfig(dataset=str(tmp_path / "one.npy"))).image_shape == (8, 8)
    assert "rows x height x width x channels (1, 3 or 4)" in one_line_error(
        DataConfig(dataset=str(tmp_path / "five.npy")))
    assert detect_kind(rgb.x, (8, 8, 3)) == ("image", "whole numbers in 0-255, 8x8x3 arrays")


def test_a_keras_style_npz_is_both_parts_with_labels(tmp_path):
    images, labels = _digits(20)
    np.savez(tmp_path / "mnist.npz", x_test=images[15:], x_train=images[:15], y_train=labels[:15],
             y_test=labels[15:])
    data = load_dataset(DataConfig(dataset=str(tmp_path / "mnist.npz")))
    assert data.x.shape == (20, 144) and data.image_shape == (12, 12)
    np.testing.assert_array_equal(data.labels, labels)
    np.testing.assert_array_equal(data.x[16], images[16].ravel())


def test_mnist_without_its_cache_names_the_file_and_the_offline_copies(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    text = one_line_error(DataConfig(dataset="mnist"))
    assert str(tmp_path / "datasets" / "mnist.npz") in text
    assert "-images-idx3-ubyte.gz (IDX" in text and "mnist.npz (NPZ)" in text


def test_colour_shape_reaches_the_logged_param_and_the_saved_model(tmp_path):
    from aeservice.models import load_model
    from aeservice.tracking.steps import setup
    from aeservice.training import fit_and_evaluate, prepare

    rng = np.random.default_rng(0)
    for i in range(12):
        write_png(tmp_path / "rgb" / f"{i:02d}.png", rng.integers(0, 256, (8, 6, 3)))
    prepared = prepare(TrainConfig(DataConfig(dataset=str(tmp_path / "rgb")), ModelConfig(model="pca", latent_dim=2)))
    assert setup(prepared).params["image_shape"] == "8x6x3"
    model = fit_and_evaluate(prepared).model
    loaded = load_model(model.save(tmp_path / "model"))
    assert loaded.info()["image_shape"] == [8, 6, 3] and loaded.info()["n_features"] == 144


# ---- plots ------------------------------------------------------------------------------------

def test_image_grids_are_sharp_gray_or_colour_and_share_the_model_scale():
    import matplotlib.pyplot as plt

    from aeservice.figures.run import IMAGE_PIXELS, image_grid

    rng = np.random.default_rng(0)
    gray = image_grid(rng.integers(0, 256, (20, 28 * 28)), (28, 28), 10, "gray", vmax=255.0)
    (image,) = gray.axes[0].images
    assert image.get_array().shape == (2 * 29 - 1, 10 * 29 - 1) and image.get_interpolation() == "nearest"
    assert image.get_cmap().name.startswith("gray") and image.get_clim() == (0, 255.0)
    box = gray.axes[0].get_window_extent()  # whole screen pixels per image pixel, at least IMAGE_PIXELS an image
    assert box.width / image.get_array().shape[1] == pytest.approx(3, abs=0.01) and 3 * 28 >= IMAGE_PIXELS
    colour = image_grid(rng.integers(0, 256, (3, 16 * 16 * 3)) * 2.0, (16, 16, 3), 3, "rgb", vmax=255.0)
    canvas = colour.axes[0].images[0].get_array()
    assert canvas.shape == (16, 3 * 17 - 1, 3) and 0 <= canvas.min() and canvas.max() == 1.0  # clipped
    photos = image_grid(rng.random((2, 300 * 200 * 3)), (300, 200, 3), 2, "large")  # every 3rd pixel: 100x67
    assert photos.axes[0].images[0].get_array().shape == (100, 2 * 68 - 1, 3)
    plt.close("all")


def test_the_latent_scatter_of_ten_classes_and_many_points_has_its_legend_beside_it():
    import matplotlib.pyplot as plt

    from aeservice.data import Split
    from aeservice.figures.run import latent_space
    from aeservice.models import build_model

    rng = np.random.default_rng(0)
    x = rng.random((1000, 64))
    model = build_model(ModelConfig(model="pca", latent_dim=2), "image").fit(x, x[:10])
    labels = rng.integers(0, 10, 1000)
    fig = latent_space(model, Split(x, x, x, None, None, labels), categorical=True)
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [str(i) for i in range(10)]
    fig.canvas.draw()
    assert legend.get_window_extent().x0 > ax.get_window_extent().x1  # beside the points, hiding none
    assert legend.get_window_extent().x1 <= fig.bbox.x1
    (points,) = ax.collections
    assert points.get_sizes()[0] < 6 and points.get_alpha() < 0.7  # small and faint when crowded
    plt.close("all")


# ---- the command line ---------------------------------------------------------------------------

def test_train_on_an_idx_file_and_a_truncated_one_from_the_command_line(tracking_uri, tmp_path):
    import mlflow

    images, labels = _digits(60)
    path = write_idx(tmp_path / "small-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "small-labels-idx1-ubyte.gz", labels)
    ok = train_process(tracking_uri, tmp_path, "--model", "pca", "--dataset", str(path), "--experiment", "idx")
    assert ok.returncode == 0, ok.stderr
    (run,) = mlflow.search_runs(experiment_names=["idx"], output_format="list")
    assert run.data.params["image_shape"] == "12x12" and run.data.tags["dataset"] == "small-images"
    cut = write_idx(tmp_path / "cut-images-idx3-ubyte", images)
    _truncated(cut)
    bad = train_process(tracking_uri, tmp_path, "--model", "pca", "--dataset", str(cut), "--experiment", "idx")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"Error: {cut} is truncated: dimensions 60x12x12 need 8640 bytes of values, it has 8633"]
    assert len(mlflow.search_runs(experiment_names=["idx"], output_format="list")) == 1  # no run for the bad file
