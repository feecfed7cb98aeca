"""Training speed against the seeds' plain Keras autoencoder (../shared/bench/plain_keras_ae.py).

Both fit the same 64-256-128-2 dense AE on digits for the same epochs at batch 64 with
validation every epoch; aeservice adds its loss-term graph, epoch relay and early-stopping
bookkeeping (patience 0 here, so both run every epoch). Prints wall seconds of each fit and
the ratio. Usage: python scripts/bench_train.py [--epochs 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
from keras import layers  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from aeservice.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from aeservice.training import fit_and_evaluate, prepare  # noqa: E402


def plain(epochs: int) -> float:
    """The reference script's model and fit, timed around fit only."""
    x = load_digits().data.astype("float32") / 16.0
    xtr, xva = x[:1437], x[1437:1617]
    keras.utils.set_random_seed(0)
    enc = keras.Sequential([keras.Input((64,)), layers.Dense(256, activation="relu"),
                            layers.Dense(128, activation="relu"), layers.Dense(2)])
    dec = keras.Sequential([keras.Input((2,)), layers.Dense(128, activation="relu"),
                            layers.Dense(256, activation="relu"), layers.Dense(64)])
    model = keras.Sequential([enc, dec])
    model.compile("adam", "mse")
    start = time.perf_counter()
    model.fit(xtr, xtr, epochs=epochs, batch_size=64, validation_data=(xva, xva), verbose=0)
    return time.perf_counter() - start


def ours(epochs: int) -> float:
    cfg = TrainConfig(DataConfig(dataset="digits", val_fraction=0.1, test_fraction=0.1),
                      ModelConfig(model="ae", latent_dim=2, epochs=epochs, patience=0))
    prepared = prepare(cfg)
    start = time.perf_counter()
    fit_and_evaluate(prepared)  # includes the final metrics and the sampling mixture fit
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    plain_s = [plain(args.epochs) for _ in range(args.repeats)]
    ours_s = [ours(args.epochs) for _ in range(args.repeats)]
    p, o = statistics.median(plain_s), statistics.median(ours_s)
    print(f"backend {keras.backend.backend()}, {args.epochs} epochs, median of {args.repeats}")
    print("| fit | seconds | per epoch |\n|---|---|---|")
    print(f"| plain Keras reference | {p:.1f} | {1000 * p / args.epochs:.0f} ms |")
    print(f"| aeservice ae (fit + evaluate) | {o:.1f} | {1000 * o / args.epochs:.0f} ms |")
    print(f"ratio aeservice / plain: {o / p:.2f}")


if __name__ == "__main__":
    main()
