"""A quick sweep for choosing defaults: the synthetic cases in one process, settings overridden.

The same rows, split and scoring as scripts/benchmark_quality.py (the generator's rows with the
seed, the CLI's 70/15/15 split, 5000 fresh rows, PCA on the same training rows), but fitted in
this process through `aeservice.models` rather than one `aeservice train` per model: several
times faster, and so the way to try a setting across sizes and seeds before the benchmark
checks it on the user's path. Each `--set NAME=VALUE` is a ModelConfig field, given to every
model as if typed on the command line. Prints one line per kind, case and size: the ratio to
PCA's test MSE for each seed, then the median and the worst.

    python scripts/sweep_quality.py --kinds ae,vae --cases scurve,curve3d --sizes 60,200 --set restarts=1
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from aeservice.config import DataConfig, TrainConfig  # noqa: E402
from aeservice.data import load_dataset, split_dataset, synthetic  # noqa: E402
from aeservice.models import build_model  # noqa: E402

GENERATORS = {"scurve": (synthetic.scurve, 0.01, 1), "curve3d": (synthetic.curve3d, 0.1, 2),
              "two_gaussians": (synthetic.two_gaussians, 1.0, 1)}
FRESH_ROWS = 5000


def ratio(case: str, rows: int, seed: int, kind: str, overrides: dict) -> tuple[float, str]:
    """kind's test MSE over PCA's on fresh rows, and what the fit kept."""
    make, noise, latent = GENERATORS[case]
    config = DataConfig(dataset=case, n_samples=rows)
    split = split_dataset(load_dataset(config, seed), config, seed)
    fresh, _ = make(FRESH_ROWS, noise, np.random.default_rng([seed, 1]))
    scale = split.train.std(axis=0)
    errors, kept = {}, ""
    for name in ("pca", kind):
        settings = TrainConfig.from_flat({"model": name, "latent_dim": latent, "seed": seed,
                                          **(overrides if name != "pca" else {})}).model
        model = build_model(settings, "continuous").fit(split.train, split.val)
        errors[name] = float(np.mean(((fresh - model.reconstruct(fresh)) / scale) ** 2))
        kept = getattr(model, "kept_", kept)
    return errors[kind] / errors["pca"], kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="ae,sparse,vae")
    parser.add_argument("--cases", default=",".join(GENERATORS))
    parser.add_argument("--sizes", default="60,200,1000")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a ModelConfig setting for every non-PCA model, e.g. restarts=1 or patience=100")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if not value:
            parser.error(f"--set needs NAME=VALUE, got {item!r}")
        overrides[name.strip()] = value.strip()
    for kind in args.kinds.split(","):
        for case in args.cases.split(","):
            for rows in (int(s) for s in args.sizes.split(",")):
                start, values, kept = time.perf_counter(), [], []
                for seed in (int(s) for s in args.seeds.split(",")):
                    value, what = ratio(case, rows, seed, kind, overrides)
                    values.append(value)
                    kept.append(what)
                print(f"{kind:6s} {case:13s} {rows:6d} rows: " + " ".join(f"{v:.3f}" for v in values)
                      + f" | median {np.median(values):.3f} worst {max(values):.3f}"
                      + f"  ({time.perf_counter() - start:.0f} s; kept {', '.join(kept)})", flush=True)
    if overrides:
        print(f"with {overrides}", file=sys.stderr)


if __name__ == "__main__":
    main()
