"""Test MSE of every model kind on every seed data set, with default settings.

Prints a markdown table (rows: data sets; columns: kinds, plus predicting the training mean).
No MLflow: this measures the models, not the tracking. Usage:
    python scripts/quality_table.py [--datasets curve3d,normal1d,scurve,two_gaussians,digits]
                                    [--latent-dim auto] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from aeservice.config import MODEL_KINDS, DataConfig, ModelConfig, TrainConfig  # noqa: E402
from aeservice.training import fit_and_evaluate, prepare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="curve3d,normal1d,scurve,two_gaussians,digits")
    parser.add_argument("--latent-dim", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    latent = None if args.latent_dim == "auto" else int(args.latent_dim)
    print(f"| data set | latent | mean | {' | '.join(MODEL_KINDS)} | vae test_elbo |")
    print("|---" * (len(MODEL_KINDS) + 4) + "|")
    for name in args.datasets.split(","):
        cells, elbo, used = [], "", None
        for kind in MODEL_KINDS:
            cfg = TrainConfig(DataConfig(dataset=name), ModelConfig(model=kind, latent_dim=latent, seed=args.seed))
            prepared = prepare(cfg)
            start = time.perf_counter()
            result = fit_and_evaluate(prepared)
            seconds = time.perf_counter() - start
            used = result.model.latent_dim_
            cells.append(f"{result.metrics['test_mse']:.4g} ({len(result.history.get('loss', [])) or 1} ep, "
                         f"{seconds:.0f} s)")
            if kind == "vae":
                elbo = f"{result.metrics['test_elbo']:.4g}"
        split = prepared.split
        mean_mse = float(np.mean((split.test - split.train.mean(axis=0)) ** 2))
        print(f"| {name} | {used} | {mean_mse:.4g} | {' | '.join(cells)} | {elbo} |", flush=True)


if __name__ == "__main__":
    main()
