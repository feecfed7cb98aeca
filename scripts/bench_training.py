#!/usr/bin/env python
"""Wall time and peak memory of `aeservice train` against a plain Keras script of the same net.

Runs, as whole processes in a throw-away folder (its own sqlite:///mlflow.db):

    aeservice train --model ae --dataset digits --latent-dim 2 --hidden 256,128 --epochs 100
                    --batch-size 64 --patience 0
    python ../shared/bench/plain_keras_ae.py 100     (the same net, epochs and batch, on TensorFlow)
    the same training without tracking                (aeservice's own code: no MLflow, no figures)

alternating which goes first, --repeats times each after one unmeasured warm-up run of each
(the warm-up fills JAX's compilation cache and creates the tracking database, as any second run
on a machine would find them; its time is printed as the cold start). Prints the median wall
time and peak RSS of each, their ratios, and aeservice's own split of its time (from the `time:`
line `train` prints). What tracking adds to the command is the difference between the first and
the third. Usage:

    python scripts/bench_training.py [--repeats 5] [--plain PATH] [--backend jax|tensorflow]
                                     [--extra "--activation relu --input-noise 0"]

--extra appends options to aeservice's command, to price a default: digits are images, so the
benchmark's command trains GELU layers on noisy inputs unless told otherwise.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PLAIN = HERE.parent.parent / "shared" / "bench" / "plain_keras_ae.py"
OURS = ["train", "--model", "ae", "--dataset", "digits", "--latent-dim", "2", "--hidden", "256,128",
        "--epochs", "100", "--batch-size", "64", "--patience", "0"]
PHASE = re.compile(r"([a-z][a-z -]*?) ([0-9.]+) s")
# `train` with the same options, minus MLflow and the figures; exits the way `train` does
UNTRACKED = """
import os, sys
from aeservice.cli.options import config_from_options
from aeservice.cli.train import train
config = config_from_options({k: v for k, v in train.make_context("train", sys.argv[1:]).params.items() if k != "quiet"})
from aeservice.training import fit_and_evaluate, import_libraries, prepare
import_libraries(config)
fit_and_evaluate(prepare(config))
os._exit(0)
"""


class _Popen(subprocess.Popen):
    """A Popen that keeps its child's own rusage (for the peak RSS) when it reaps it."""

    peak_kb = 0

    def _try_wait(self, wait_flags):
        pid, status, usage = os.wait4(self.pid, wait_flags)
        if pid == self.pid:
            self.peak_kb = usage.ru_maxrss  # kilobytes on Linux
        return pid, status


def measure(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stderr) of one whole process."""
    start = time.perf_counter()
    proc = _Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return wall, proc.peak_kb / 1024, stderr


def split(stderr: str, prefix: str = "time: ") -> dict[str, float]:
    """Seconds per phase from the line of `train`'s output that starts with prefix."""
    line = next((ln for ln in stderr.splitlines() if ln.startswith(prefix)), "")
    return {name.strip(): float(value) for name, value in PHASE.findall(line[len(prefix):])}


def peak_total_mb(stderr: str, fallback: float) -> float:
    """This process plus its tracking worker, from `train`'s "peak memory:" line (both count)."""
    line = next((ln for ln in stderr.splitlines() if ln.startswith("peak memory: ")), "")
    numbers = [float(n) for n in re.findall(r"([0-9.]+) MB", line)]
    return sum(numbers) if numbers else fallback


def help_seconds(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "aeservice", "--help"], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plain", type=Path, default=DEFAULT_PLAIN, help="the plain Keras script")
    parser.add_argument("--backend", default=None, help="KERAS_BACKEND for aeservice (default: its own choice)")
    parser.add_argument("--extra", default="", help="more `aeservice train` options, one string")
    args = parser.parse_args()
    if not args.plain.is_file():
        parser.error(f"plain Keras script not found: {args.plain} (give --plain PATH)")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_RUN", "MLFLOW_EXPERIMENT"))}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("KERAS_BACKEND", None)
    ours_env = {**env, **({"KERAS_BACKEND": args.backend} if args.backend else {})}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        ours_env["JAX_COMPILATION_CACHE_DIR"] = str(cwd / "jax-cache")  # cold at first, like a new machine
        ours = [sys.executable, "-m", "aeservice", *OURS, *args.extra.split()]
        plain = [sys.executable, str(args.plain), "100"]
        untracked = [sys.executable, "-c", UNTRACKED, *OURS[1:], *args.extra.split()]
        print("warm-up (cold start) runs ...", file=sys.stderr)
        cold_ours = measure(ours, cwd, ours_env)
        cold_plain = measure(plain, cwd, env)
        measure(untracked, cwd, ours_env)
        results: dict[str, list[tuple[float, float, str]]] = {"aeservice": [], "plain": [], "untracked": []}
        for i in range(args.repeats):
            order = [("aeservice", ours, ours_env), ("plain", plain, env), ("untracked", untracked, ours_env)]
            for label, cmd, cmd_env in (order if i % 2 == 0 else order[::-1]):
                results[label].append(measure(cmd, cwd, cmd_env))
                wall, peak, _ = results[label][-1]
                print(f"  {i + 1}/{args.repeats} {label}: {wall:.2f} s, {peak:.0f} MB", file=sys.stderr)

    results["aeservice"] = [(wall, peak_total_mb(err, peak), err) for wall, peak, err in results["aeservice"]]
    med = {label: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
           for label, runs in results.items()}
    backend = args.backend or "default (" + _default_backend() + ")"
    print(f"\n`aeservice {' '.join([*OURS, *args.extra.split()])}` (backend {backend}) against `{args.plain.name} 100` "
          f"(Keras on TensorFlow); median of {args.repeats} alternating runs after one warm-up each\n")
    print("| | wall s | peak RSS MB (aeservice: both processes) | cold start wall s |")
    print("|---|---:|---:|---:|")
    print(f"| aeservice train | {med['aeservice'][0]:.2f} | {med['aeservice'][1]:.0f} | {cold_ours[0]:.2f} |")
    print(f"| plain Keras | {med['plain'][0]:.2f} | {med['plain'][1]:.0f} | {cold_plain[0]:.2f} |")
    print(f"| ratio | {med['aeservice'][0] / med['plain'][0]:.2f} | {med['aeservice'][1] / med['plain'][1]:.2f} "
          f"| {cold_ours[0] / cold_plain[0]:.2f} |")

    phases = _median_phases([split(r[2]) for r in results["aeservice"]])
    phases["start-up (python, click) and exit"] = med["aeservice"][0] - sum(phases.values())
    worker = _median_phases([split(r[2], "tracking worker time (in parallel): ") for r in results["aeservice"]])
    print("\naeservice's time, median per phase (from the `time:` lines `train` prints)\n")
    print("| phase | s | | tracking worker, in parallel | s |")
    print("|---|---:|---|---|---:|")
    rows = max(len(phases), len(worker))
    left, right = list(phases.items()), list(worker.items())
    for i in range(rows):
        a = f"{left[i][0]} | {left[i][1]:.2f}" if i < len(left) else " | "
        b = f"{right[i][0]} | {right[i][1]:.2f}" if i < len(right) else " | "
        print(f"| {a} | | {b} |")
    fit = phases.get("fit", 0.0)
    tracking = sum(v for k, v in phases.items() if k in TRACKING_PHASES)
    print(f"\ntracking on the training process's path: {tracking:.2f} s = {tracking / fit * 100:.0f}% of its fit "
          f"phase ({fit:.2f} s); per-epoch metrics inside the fit: "
          f"{phases.get('tracking in fit', 0.0):.2f} s")
    bare = med["untracked"][0]
    print(f"the same training without tracking (no MLflow, no figures): {bare:.2f} s, peak {med['untracked'][1]:.0f} MB; "
          f"tracking adds {med['aeservice'][0] - bare:.2f} s = {(med['aeservice'][0] - bare) / bare * 100:.0f}% "
          f"to the command")
    print(f"`aeservice --help`: {help_seconds():.2f} s (median of 5)")


# the trainer's phases that exist only to log the run
TRACKING_PHASES = ("tracking", "tracking in fit", "saving the model", "plots", "model logging", "waiting for tracking")


def _median_phases(splits: list[dict[str, float]]) -> dict[str, float]:
    names = list(dict.fromkeys(name for s in splits for name in s))
    return {name: statistics.median(s.get(name, 0.0) for s in splits) for name in names}


def _default_backend() -> str:
    from aeservice.backend import default_backend

    return default_backend()


if __name__ == "__main__":
    main()
