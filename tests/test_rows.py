"""Large tables: memory-mapped .npy files, streamed statistics and batches, fixed-size figure samples."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from aeservice.config import DataConfig, ModelConfig
from aeservice.data import Dataset, load_dataset, rows, split_dataset
from aeservice.data.preprocess import Standardizer, UnitRange
from aeservice.errors import UserError


@pytest.fixture
def mapped(monkeypatch):
    """Every .npy file larger than 64 KB stays memory-mapped, as a large one does."""
    monkeypatch.setattr(rows, "IN_MEMORY_BYTES", 64 * 1024)


def _table(path, n=6000, width=7, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, width)).astype("float32") * 3 + 5
    np.save(path, x)
    return x


def test_a_large_npy_is_memory_mapped_and_split_without_a_copy_of_the_training_rows(tmp_path, mapped):
    x = _table(tmp_path / "t.npy")
    data = load_dataset(DataConfig(dataset=str(tmp_path / "t.npy")))
    assert isinstance(data.x, np.memmap) and data.x.dtype == np.float32  # nothing read into an array
    split = split_dataset(data, DataConfig(), seed=3)
    assert isinstance(split.train, rows.RowSubset) and split.val.dtype == np.float32
    # the same rows as the split of the array in memory: validation and test in the same order
    whole = split_dataset(Dataset("t", x.astype(np.float64), None, "continuous"), DataConfig(), seed=3)
    np.testing.assert_array_equal(split.val, whole.val)
    np.testing.assert_array_equal(split.test, whole.test)
    assert len(split.train) == len(whole.train)
    np.testing.assert_array_equal(np.sort(split.train[:], axis=0), np.sort(whole.train, axis=0))
    # a small file is read whole, as before
    _table(tmp_path / "small.npy", n=100)
    assert not isinstance(load_dataset(DataConfig(dataset=str(tmp_path / "small.npy"))).x, np.memmap)


def test_a_mapped_file_holds_at_most_so_many_validation_and_test_rows(tmp_path, mapped, monkeypatch):
    monkeypatch.setattr(rows, "HELD_OUT_ROWS", 500)
    _table(tmp_path / "t.npy")
    split = split_dataset(load_dataset(DataConfig(dataset=str(tmp_path / "t.npy"))), DataConfig(), seed=0)
    assert len(split.val) == len(split.test) == 500 and len(split.train) == 5000  # 900 each uncapped


def test_a_bad_cell_in_a_mapped_file_is_named_in_one_line(tmp_path, mapped):
    x = _table(tmp_path / "t.npy")
    x[4321, 5] = np.nan
    np.save(tmp_path / "t.npy", x)
    with pytest.raises(UserError, match=r"1 empty, NaN or infinite cell\(s\); first at row 4322, column 6"):
        load_dataset(DataConfig(dataset=str(tmp_path / "t.npy")))


def test_streamed_statistics_and_scaling_match_the_array_in_memory(tmp_path, mapped):
    x = _table(tmp_path / "t.npy")
    mm = np.load(tmp_path / "t.npy", mmap_mode="r")
    subset = rows.RowSubset(mm, np.arange(0, len(x), 2))
    part = x[::2].astype(np.float64)
    streamed, whole = Standardizer().fit(subset), Standardizer().fit(part)
    np.testing.assert_allclose(streamed.offset_, whole.offset_, rtol=1e-10)
    np.testing.assert_allclose(streamed.scale_, whole.scale_, rtol=1e-10)
    assert UnitRange().fit(subset).scale_[0] == pytest.approx(float(part.max()))
    scaled = streamed.transform(subset)
    assert isinstance(scaled, rows.RowSubset)  # scaled as it is read, not copied
    np.testing.assert_allclose(scaled[:], whole.transform(part), atol=1e-5)
    np.testing.assert_array_equal(subset[[5, 1, 3]], x[[10, 2, 6]])  # positions in any order


def test_batches_give_every_training_row_once_per_epoch_in_a_seeded_order(tmp_path, monkeypatch):
    monkeypatch.setattr(rows, "CHUNK_BYTES", 4 * 7 * 100)  # many chunks and windows on small data
    monkeypatch.setattr(rows, "WINDOW_BYTES", 4 * 7 * 300)
    x = _table(tmp_path / "t.npy", n=2000)
    subset = rows.RowSubset(np.load(tmp_path / "t.npy", mmap_mode="r"), np.arange(0, 2000, 2))
    steps = rows.steps_per_epoch(len(subset), 64)
    stream = rows.batches(subset, 64, seed=1, targets=lambda part: {"recon": part})
    epoch = [next(stream) for _ in range(steps)]
    assert all(len(b) == 64 for b, _ in epoch[:-1]) and epoch[0][1]["recon"] is epoch[0][0]
    seen = np.concatenate([b for b, _ in epoch])
    np.testing.assert_array_equal(np.sort(seen, axis=0), np.sort(x[::2], axis=0))
    assert not np.array_equal(seen, x[::2])  # shuffled
    again = rows.batches(subset, 64, seed=1, targets=lambda part: None)
    np.testing.assert_array_equal(next(again)[0], epoch[0][0])
    second = np.concatenate([next(stream)[0] for _ in range(steps)])  # the next epoch: all rows again, reshuffled
    np.testing.assert_array_equal(np.sort(second, axis=0), np.sort(x[::2], axis=0))
    assert not np.array_equal(second, seen)


_READ = """
import resource, sys
import numpy as np
from aeservice.config import DataConfig
from aeservice.data import Dataset, load_dataset, rows, split_dataset
from aeservice.data.preprocess import Standardizer
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
data = load_dataset(DataConfig(dataset=sys.argv[1]))
split = split_dataset(data, DataConfig(), 0)
scaler = Standardizer().fit(split.train)
train = scaler.transform(split.train)
total = 0
stream = rows.batches(train, 512, 0, lambda part: None)
for _ in range(rows.steps_per_epoch(len(train), 512)):  # one epoch of training batches
    total += len(next(stream)[0])
assert total == len(split.train)
print(type(data.x).__name__, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)
"""


def test_a_mapped_file_is_never_held_in_memory_whole(tmp_path):
    """Checking, splitting, scaling and an epoch of batches over a 256 MB file: the process's peak
    resident memory (mapped pages count) grows by well under the file's size."""
    n, width = 1_342_177, 50  # 256 MB of float32
    out = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype="float32", shape=(n, width))
    rng = np.random.default_rng(0)
    for start in range(0, n, 200_000):
        out[start:start + 200_000] = rng.standard_normal((min(200_000, n - start), width), dtype=np.float32)
    out.flush()
    del out
    size_mb = (tmp_path / "big.npy").stat().st_size / 2**20
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_READ), str(tmp_path / "big.npy")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    kind, grew = proc.stdout.split()
    assert kind == "memmap"
    # validation and test rows are copied (30%: 77 MB); the training rows never are, and the pages read
    # through the mapping are released as it goes
    # (validation + test 77 MB, indices 18 MB: measured 110-140 MB; with mapped pages kept, 390 MB)
    assert float(grew) < 0.75 * size_mb, f"peak grew {grew} MB for a {size_mb:.0f} MB file"


class _Spy:
    """A fitted model that records how many rows each call of the figures passes."""

    def __init__(self, model):
        self.model, self.rows = model, []

    def __getattr__(self, name):
        value = getattr(self.model, name)
        if name in ("encode", "decode", "reconstruct"):
            def call(x, *a, **k):
                self.rows.append(len(x))
                return value(x, *a, **k)
            return call
        if name == "sample":
            def draw(n, *a, **k):
                self.rows.append(int(n))
                return value(n, *a, **k)
            return draw
        return value


def test_figures_draw_a_fixed_size_sample_of_rows():
    from aeservice.figures.run import FIGURE_ROWS, all_figures, figure_rows
    from aeservice.models import build_model

    x = np.random.default_rng(0).standard_normal((30_000, 4))
    data = Dataset("big", x, np.arange(len(x), dtype=float), "continuous")
    split = split_dataset(data, DataConfig(), seed=0)
    sample = figure_rows(split, seed=0)
    assert len(sample.train) == len(sample.test) == FIGURE_ROWS == 1000
    assert len(sample.test_labels) == FIGURE_ROWS
    np.testing.assert_array_equal(figure_rows(split, seed=0).test, sample.test)  # the seed picks them
    assert set(map(tuple, sample.test)) <= set(map(tuple, split.test))
    small = split_dataset(Dataset("small", x[:600], None, "continuous"), DataConfig(), seed=0)
    assert figure_rows(small, seed=0).test is small.test  # small parts are drawn whole, as always

    model = build_model(ModelConfig(model="pca", latent_dim=2), "continuous").fit(split.train, split.val)
    spy = _Spy(model)
    figures = all_figures(spy, model.history_, data, split)
    assert len(figures) == 5 and spy.rows and max(spy.rows) <= FIGURE_ROWS


def test_pca_of_a_streamed_file_is_incremental_and_as_good(tmp_path, mapped, monkeypatch):
    from aeservice.models import build_model
    from aeservice.models import pca as pca_module

    monkeypatch.setattr(pca_module, "STREAM_BATCH_ROWS", 1000)  # several partial fits
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8000, 2)) @ rng.standard_normal((2, 6)) + 0.1 * rng.standard_normal((8000, 6)))
    np.save(tmp_path / "t.npy", x.astype("float32"))
    data = load_dataset(DataConfig(dataset=str(tmp_path / "t.npy")))
    split = split_dataset(data, DataConfig(), seed=0)
    streamed = build_model(ModelConfig(model="pca", latent_dim=2), "continuous").fit(split.train, split.val)
    whole = build_model(ModelConfig(model="pca", latent_dim=2), "continuous").fit(split.train[:], split.val)
    err = [float(np.mean((split.test - m.reconstruct(split.test)) ** 2)) for m in (streamed, whole)]
    assert err[0] == pytest.approx(err[1], rel=0.01)
    assert streamed.history_["val_recon"][0] == pytest.approx(whole.history_["val_recon"][0], rel=0.01)


def test_progress_lines_show_rows_per_second_and_time_left():
    import io

    from aeservice.progress import PACE_ETA, PACE_RATE, progress_printer

    out = io.StringIO()
    report = progress_printer(10, stream=out)
    report(0, {"loss": 0.5, PACE_RATE: 123456.0, PACE_ETA: 200.0})
    report(1, {"loss": 0.4})
    first, second = out.getvalue().splitlines()
    assert first == "epoch 1/10  loss 0.5  (123,456 rows/s, at most 3m20s left)"
    assert second == "epoch 2/10  loss 0.4"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_peak_memory_is_the_process_own_not_its_parents():
    """A child of a process that held 600 MB reports its own peak, not the parent's (getrusage's
    ru_maxrss, which survives exec, would)."""
    parent = (
        "import subprocess, sys, numpy as np\n"
        "held = np.ones(600 * 2**20 // 8)\n"
        "child = 'import resource; from aeservice.timing import peak_memory_mb; '"
        " 'print(peak_memory_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)'\n"
        "print(subprocess.run([sys.executable, '-c', child], capture_output=True, text=True, check=True).stdout)\n"
    )
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True).stdout
    own, inherited = map(float, out.split())
    assert inherited > 600  # what the old number was
    assert own < 300, out
