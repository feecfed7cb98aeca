#!/usr/bin/env python
"""What pruning saves: the same tuning study without pruning and with each pruner.

Runs `aeservice tune --model vae --dataset digits --n-trials 20 --seed 0 --pruner P` for
P = none (the baseline), median, asha and hyperband, each as a whole process with its own Optuna
study in one throw-away folder, then reads the studies back from the Optuna storage: epochs trained (every trial reports each
epoch to Optuna), trial states, best val_mse, and the wall time of each process. Usage:

    python scripts/bench_tuning.py [--n-trials 20] [--epochs 150] [--model vae] [--dataset digits]
                                   [--pruners none,median,asha,hyperband,asha:15]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_study(spec: str, args: argparse.Namespace, folder: Path, env: dict[str, str]) -> dict:
    pruner, _, warmup = spec.partition(":")
    name = f"bench-{pruner}-{warmup or 'auto'}"
    storage = f"sqlite:///{folder / 'optuna.db'}"
    cmd = [sys.executable, "-m", "aeservice", "tune", "--model", args.model, "--dataset", args.dataset,
           "--n-trials", str(args.n_trials), "--epochs", str(args.epochs), "--seed", str(args.seed),
           "--pruner", pruner, "--storage", storage, "--study-name", name, "--experiment", "bench-tuning"]
    if warmup:
        cmd += ["--prune-warmup", warmup]
    print(f"{pruner}: {' '.join(cmd[2:])}", file=sys.stderr)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"tune with pruner {pruner} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.trials
    epochs = sum(len(t.intermediate_values) for t in trials)
    states = {s: sum(t.state == s for t in trials) for s in (optuna.trial.TrialState.COMPLETE,
                                                             optuna.trial.TrialState.PRUNED,
                                                             optuna.trial.TrialState.FAIL)}
    return {"wall": wall, "epochs": epochs, "best": study.best_value, "complete": states[optuna.trial.TrialState.COMPLETE],
            "pruned": states[optuna.trial.TrialState.PRUNED], "failed": states[optuna.trial.TrialState.FAIL]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=150, help="most epochs per trial (early stopping may end a trial sooner)")
    parser.add_argument("--model", default="vae")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pruners", default="none,median,asha,hyperband",
                        help="comma-separated; the first is the baseline the others are compared with. "
                             "NAME:N also passes --prune-warmup N (e.g. asha:15)")
    args = parser.parse_args()
    pruners = [p.strip() for p in args.pruners.split(",") if p.strip()]
    if len(pruners) < 2:
        parser.error("--pruners needs a baseline and at least one pruner to compare, e.g. none,median")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_RUN", "MLFLOW_EXPERIMENT"))}
    env.pop("MLFLOW_TRACKING_URI", None)  # each study logs to the folder's own sqlite:///mlflow.db
    with tempfile.TemporaryDirectory() as tmp:
        results = {p: run_study(p, args, Path(tmp), env) for p in pruners}
    base = results[pruners[0]]
    print(f"\n`aeservice tune --model {args.model} --dataset {args.dataset} --n-trials {args.n_trials} "
          f"--epochs {args.epochs} --seed {args.seed}`, by pruner\n")
    print("| pruner | epochs trained | wall s | complete | pruned | failed | best val_mse |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for pruner, r in results.items():
        print(f"| {pruner} | {r['epochs']} | {r['wall']:.0f} | {r['complete']} | {r['pruned']} | {r['failed']} "
              f"| {r['best']:.5f} |")
    print()
    for pruner in pruners[1:]:
        r = results[pruner]
        print(f"{pruner} / {pruners[0]}: epochs {r['epochs'] / base['epochs']:.2f}, wall {r['wall'] / base['wall']:.2f}, "
              f"best val_mse {r['best'] / base['best']:.3f} ({(r['best'] / base['best'] - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
