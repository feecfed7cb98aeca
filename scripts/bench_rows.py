#!/usr/bin/env python
"""How `aeservice train` grows with the rows: wall time, time per epoch, rows per second, peak
memory of the trainer and of its tracking worker, at 10^4, 10^5 and 10^6 rows of a 50-feature
float32 table, against a plain Keras script of the same net on the same backend.

Each size gets a .npy file of rows near a curved 3-D sheet in 50-D (in --folder, /tmp by
default; deleted afterwards unless --keep), then, as whole processes in a throw-away folder with
its own sqlite:///mlflow.db:

    aeservice train --model ae --dataset rows_N.npy --hidden 256,128 --epochs E --restarts 1
    python scripts/bench_rows.py --plain rows_N.npy --batch B --epochs E
        (the same net, batch, epochs and 70/15/15 split as a user's Keras script: np.load,
        model.fit with validation every epoch, model.evaluate on the test rows)

Time per epoch is the median of epochs 2..E (the first compiles): aeservice's from the rows per
second its progress lines print, the plain script's from a callback. Peak memory is each
process's own maximum resident set (Linux's VmHWM): `train` prints its trainer's and its
tracking worker's, the plain script prints its own. The data files are written by a process of
their own: `getrusage`'s peak survives exec, so a child of the process that had just written 3 GB
through a mapping reported that 3 GB as its own. The plots phase is `train`'s own timing.

    python scripts/bench_rows.py [--rows 10000,100000,1000000] [--epochs 4] [--folder /tmp]
                                 [--models ae,sparse,vae,pca] [--plots-repeats 5]
    python scripts/bench_rows.py --big 3  # also: a 3 GB memory-mapped .npy, one epoch

The plots phase of one run is noisy on shared cores, so the figures are also timed alone: one
model's figures drawn against the smallest and the largest size's split in turn, in one process,
--plots-repeats times alternating, the medians compared.

The targets (docs/scale-rows.md): peak trainer memory at 10^6 rows <= 3x the data + the trainer's
peak at 10^4 (the fixed part); time per epoch at 10^6 / plain Keras's <= 1.0; plots phase at
10^6 / at 10^4 <= 1.3; the 3 GB file trains with a peak well under its size.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = 50
PEAK = re.compile(r"peak memory: ([0-9.]+) MB(?: \+ ([0-9.]+) MB tracking worker)?")
RATE = re.compile(r"^epoch (\d+)/\d+ .*\(([0-9,]+) rows/s")
PHASE = re.compile(r"([a-z][a-z -]*?) ([0-9.]+) s")


def make_rows(path: Path, n: int, seed: int = 0, chunk: int = 1_000_000) -> Path:
    """n rows near a curved 3-D sheet in 50-D, float32, written a chunk at a time (in a process
    of its own, so the benchmark's children start small: see the docstring)."""
    if os.environ.get("BENCH_ROWS_WRITER") != "1":
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--make", str(path), str(n)],
                       env=dict(os.environ, BENCH_ROWS_WRITER="1"), check=True)
        return path
    import numpy as np

    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((3, FEATURES)).astype("float32")
    out = np.lib.format.open_memmap(path, mode="w+", dtype="float32", shape=(n, FEATURES))
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        z = rng.standard_normal((k, 3), dtype=np.float32)
        out[start:start + k] = np.tanh(z @ mix) + 0.1 * rng.standard_normal((k, FEATURES), dtype=np.float32)
    out.flush()
    del out
    return path


def batch_for(n: int) -> int:
    """The batch `train` resolves for n rows (aeservice.sizes), so both scripts step alike."""
    from aeservice.sizes import resolve_sizes
    from aeservice.config import ModelConfig

    return resolve_sizes(ModelConfig(model="ae"), n - 2 * round(0.15 * n)).batch_size


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str, float]:
    """(wall seconds, stderr + stdout, peak RSS MB: the `peak_mb` line the process printed, else getrusage's)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    own = re.findall(r"^peak_mb ([0-9.]+)$", out, re.M)
    return wall, out, float(own[-1]) if own else usage.ru_maxrss / 1024


def ours(path: Path, epochs: int, folder: Path, env: dict, model: str = "ae") -> dict:
    cmd = ["aeservice", "train", "--model", model, "--dataset", str(path), "--experiment", "bench-rows"]
    if model != "pca":
        cmd += ["--hidden", "256,128", "--epochs", str(epochs), "--restarts", "1"]
    wall, out, _ = run(cmd, folder, env)
    peak = PEAK.search(out)
    rates = [(int(m.group(1)), int(m.group(2).replace(",", ""))) for m in map(RATE.match, out.splitlines()) if m]
    rates = [rate for epoch, rate in rates if epoch > 1 or epochs == 1]  # the first compiles, unless it is all
    timing = next(line for line in out.splitlines() if line.startswith("time:"))
    times = {k.strip(): float(v) for k, v in PHASE.findall(timing)}
    return {"wall": wall, "trainer": float(peak.group(1)), "worker": float(peak.group(2) or 0),
            "rate": statistics.median(rates) if rates else float("nan"), "plots": times.get("plots", float("nan")),
            "fit": times.get("fit", float("nan"))}


def plain(path: Path, epochs: int, folder: Path, env: dict) -> dict:
    n = int(__import__("numpy").load(path, mmap_mode="r").shape[0])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--plain", str(path), "--batch", str(batch_for(n)),
           "--epochs", str(epochs)]
    wall, out, peak = run(cmd, folder, env)
    seconds = [float(v) for v in re.findall(r"^epoch_seconds ([0-9.]+)$", out, re.M)][1:]
    n_train = n - 2 * round(0.15 * n)
    return {"wall": wall, "trainer": peak, "rate": n_train / statistics.median(seconds)}


def plain_keras(path: str, batch: int, epochs: int) -> None:
    """The same net as a user's Keras script: 50-256-128-2-128-256-50, Adam, MSE."""
    import time as clock

    import keras
    import numpy as np
    from keras import layers

    x = np.load(path)
    n = len(x)
    order = np.random.default_rng(0).permutation(n)
    k = round(0.15 * n)
    test, val, train = x[order[:k]], x[order[k:2 * k]], x[order[2 * k:]]
    mean, std = train.mean(axis=0), train.std(axis=0)
    train, val, test = ((part - mean) / std for part in (train, val, test))
    keras.utils.set_random_seed(0)
    enc = keras.Sequential([keras.Input((x.shape[1],)), layers.Dense(256, activation="relu"),
                            layers.Dense(128, activation="relu"), layers.Dense(2)])
    dec = keras.Sequential([keras.Input((2,)), layers.Dense(128, activation="relu"),
                            layers.Dense(256, activation="relu"), layers.Dense(x.shape[1])])
    model = keras.Sequential([enc, dec])
    model.compile("adam", "mse")

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = clock.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            print(f"epoch_seconds {clock.perf_counter() - self.start:.4f}", flush=True)

    model.fit(train, train, epochs=epochs, batch_size=batch, validation_data=(val, val), verbose=0,
              callbacks=[Timer()])
    print("test_mse", float(model.evaluate(test, test, batch_size=4096, verbose=0)))
    from aeservice.timing import peak_memory_mb

    print(f"peak_mb {peak_memory_mb():.1f}")


def plots_in_process(paths: list[str], repeats: int) -> None:
    """The figures alone: one AE (1 epoch on the first file's rows) drawn against each file's split
    in turn, `repeats` times alternating; prints the median seconds per file."""
    import tempfile as temp

    from aeservice import training
    from aeservice.config import DataConfig, ModelConfig, TrainConfig
    from aeservice.figures.run import write_figures

    prepared = []
    for path in paths:
        config = TrainConfig(data=DataConfig(dataset=path), model=ModelConfig(model="ae", epochs=1, restarts=1))
        training.import_libraries(config)
        prepared.append(training.prepare(config))
    model = training.build_model(prepared[0].config.model, "continuous").fit(prepared[0].split.train,
                                                                             prepared[0].split.val)
    times: dict[str, list[float]] = {path: [] for path in paths}
    for _ in range(repeats):
        for path, p in zip(paths, prepared):
            start = time.perf_counter()
            write_figures(model, model.history_, p.dataset, p.split, 0, Path(temp.mkdtemp()))
            times[path].append(time.perf_counter() - start)
    for path in paths:
        print(f"plots_seconds {path} {statistics.median(times[path]):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="10000,100000,1000000")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--folder", default="/tmp")
    ap.add_argument("--keep", action="store_true", help="keep the data files")
    ap.add_argument("--big", type=float, default=0, help="also train on a memory-mapped .npy of this many GB")
    ap.add_argument("--models", default="ae", help="kinds to time, e.g. ae,sparse,vae,pca")
    ap.add_argument("--plots-repeats", type=int, default=5, help="in-process figure timings per size")
    ap.add_argument("--plain", help=argparse.SUPPRESS)
    ap.add_argument("--make", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--plots", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain:
        return plain_keras(args.plain, args.batch, args.epochs)
    if args.make:
        make_rows(Path(args.make[0]), int(args.make[1]))
        return None
    if args.plots:
        return plots_in_process(args.plots, args.plots_repeats)

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    sizes = [int(v) for v in args.rows.split(",")]
    data_dir = Path(tempfile.mkdtemp(prefix="bench-rows-", dir=args.folder))
    work = Path(tempfile.mkdtemp(prefix="bench-rows-run-"))
    results: dict[tuple[str, int], dict] = {}
    try:
        for n in sizes:
            path = make_rows(data_dir / f"rows_{n}.npy", n)
            for model in args.models.split(","):
                results[(model, n)] = ours(path, args.epochs, work, env, model)
                print(f"{model} {n}: {results[(model, n)]}", file=sys.stderr, flush=True)
            results[("plain", n)] = plain(path, args.epochs, work, env)
            print(f"plain {n}: {results[('plain', n)]}", file=sys.stderr, flush=True)
        low, high = data_dir / f"rows_{min(sizes)}.npy", data_dir / f"rows_{max(sizes)}.npy"
        _, out, _ = run([sys.executable, str(Path(__file__).resolve()), "--plots", str(low), str(high),
                         "--plots-repeats", str(args.plots_repeats)], work, env)
        plots = {int(Path(p).stem.split("_")[1]): float(v) for p, v in re.findall(r"^plots_seconds (\S+) (\S+)$", out, re.M)}
        if not args.keep:
            for n in sizes:
                (data_dir / f"rows_{n}.npy").unlink()
        report(results, sizes, args.models.split(","), plots)
        if args.big:
            n = int(args.big * 2**30 / (4 * FEATURES))
            need = n * 4 * FEATURES * 1.1
            if shutil.disk_usage(data_dir).free < need:
                sys.exit(f"not enough space in {data_dir} for {args.big} GB")
            path = make_rows(data_dir / "rows_big.npy", n)
            size_mb = path.stat().st_size / 2**20
            got = ours(path, 1, work, env)
            path.unlink()
            print(f"\n{n:,} rows x {FEATURES} float32 ({size_mb:,.0f} MB memory-mapped), 1 epoch: wall "
                  f"{got['wall']:.0f} s, {got['rate']:,.0f} rows/s, peak trainer {got['trainer']:.0f} MB "
                  f"({got['trainer'] / size_mb:.2f}x the file) + {got['worker']:.0f} MB tracking worker")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict, sizes: list[int], models: list[str], plots: dict[int, float]) -> None:
    print("\n| run | rows | wall s | s / epoch | rows/s | peak trainer MB | peak tracking worker MB | plots s |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        n_train = n - 2 * round(0.15 * n)
        for who in [*models, "plain"]:
            r = results[(who, n)]
            per_epoch = n_train / r["rate"] if r["rate"] == r["rate"] else float("nan")
            name = "plain Keras" if who == "plain" else f"aeservice {who}"
            print(f"| {name} | {n:,} | {r['wall']:.1f} | {per_epoch:.2f} | {r['rate']:,.0f} | {r['trainer']:.0f} | "
                  f"{r.get('worker', 0) or '-'} | {r.get('plots', float('nan')):.2f} |".replace("| nan |", "| - |"))
    low, high = min(sizes), max(sizes)
    data_mb = high * FEATURES * 4 / 2**20
    print()
    for model in models:
        a, b, p = results[(model, low)], results[(model, high)], results[("plain", high)]
        bound = 3 * data_mb + a["trainer"]
        print(f"{model}: peak trainer at {high:,} rows {b['trainer']:.0f} MB; bound 3 x {data_mb:.0f} MB data + "
              f"{a['trainer']:.0f} MB fixed (at {low:,}) = {bound:.0f} MB: {'met' if b['trainer'] <= bound else 'MISSED'}"
              f"; growth {(b['trainer'] - a['trainer']) / data_mb:.2f} MB per MB of data")
        if b["rate"] == b["rate"]:
            ratio = p["rate"] / b["rate"]
            print(f"{model}: time per epoch at {high:,} / plain Keras = {ratio:.2f} (target <= 1.0)")
        print(f"{model}: plots phase at {high:,} / at {low:,} = {b['plots'] / a['plots']:.2f} (target <= 1.3); "
              f"tracking worker {a['worker']:.0f} -> {b['worker']:.0f} MB")
    if plots:
        print(f"figures alone (one model, in-process, median of the repeats): {plots[low]:.2f} s at {low:,} rows, "
              f"{plots[high]:.2f} s at {high:,}: ratio {plots[high] / plots[low]:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
