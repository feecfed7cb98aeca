"""The quality benchmark's cases with settings overridden and with fewer or more rows.

How the row-scaled sizes (aeservice/sizes.py) were chosen: each `--set NAME=VALUE` is given to
every model as if the user had typed it; the extra cases train on 200-300 or 10000 rows.
Prints one markdown table (medians over the seeds, as scripts/benchmark_quality.py does).

    python scripts/sweep_quality.py --cases curve3d-200,digits-300-2 --set batch_size=64 --set hidden=256,128
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmark_quality as bq  # noqa: E402
import numpy as np  # noqa: E402

from aeservice.config import ModelConfig, TrainConfig  # noqa: E402
from aeservice.data import synthetic  # noqa: E402


def rows_case(make: Callable, n: int, noise: float, kinds: dict[str, float], latent: int, label: str):
    def run(seed: int) -> list[bq.Row]:
        train_rows, test_rows = bq.fresh(make, n, noise, seed)
        return bq.ratio_rows(f"{label}, {n} rows, latent {latent}", kinds, train_rows, test_rows, latent, seed)
    return run


def digits_rows(n: int, latent: int, kinds: dict[str, float]):
    """n of digits' first 1437 images, chosen by the seed; the same 360 test images."""
    def run(seed: int) -> list[bq.Row]:
        train_rows, test_rows = bq.digits_split()
        train_rows = train_rows[np.random.default_rng(seed).permutation(len(train_rows))[:n]]
        return bq.ratio_rows(f"digits {n} rows, latent {latent}", kinds, train_rows, test_rows, latent, seed,
                             scale=np.ones(train_rows.shape[1]), data_kind="image")
    return run


EXTRA = {
    "curve3d-200": rows_case(synthetic.curve3d, 200, 0.1, {"ae": 0.30, "vae": 1.00}, 2, "curve3d"),
    "scurve-200": rows_case(synthetic.scurve, 200, 0.01, {"ae": 0.05, "vae": 0.20}, 1, "scurve"),
    "two_gaussians-300": rows_case(synthetic.two_gaussians, 300, 1.0, {"ae": 0.50, "vae": 1.00}, 1, "two_gaussians"),
    "curve3d-10000": rows_case(synthetic.curve3d, 10000, 0.1, {"ae": 0.30, "vae": 1.00}, 2, "curve3d"),
    "curve3d-20000": rows_case(synthetic.curve3d, 20000, 0.1, {"ae": 0.30, "vae": 1.00}, 2, "curve3d"),
    "digits-300-2": digits_rows(300, 2, {"ae": 0.60, "vae": 0.85}),
    "digits-300-10": digits_rows(300, 10, {"ae": 0.50}),
    "digits-2ae": bq.digits_case(2, {"ae": 0.60}),
    "digits-10ae": bq.digits_case(10, {"ae": 0.50}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cases = {**bq.CASES, **EXTRA}
    parser.add_argument("--cases", required=True, help=f"comma-separated subset of {', '.join(cases)}")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a ModelConfig field as the CLI spells its value, e.g. hidden=256,128 (repeat)")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    given = TrainConfig.from_flat(dict(item.split("=", 1) for item in args.set)).model
    overrides = {name.split("=")[0]: getattr(given, name.split("=")[0]) for name in args.set}
    bq.ModelConfig = functools.partial(ModelConfig, **overrides)  # what `train` builds for each model
    start, per_seed = time.perf_counter(), []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows = []
        for name in args.cases.split(","):
            bq.log(f"{name}, seed {seed}:")
            rows += cases[name](seed)
        per_seed.append(rows)
    print(f"{' '.join(args.set) or 'defaults'} ({args.cases}; seeds {args.seeds}; "
          f"{time.perf_counter() - start:.0f} s)")
    print(bq.table(bq.combine(per_seed)), flush=True)


if __name__ == "__main__":
    main()
