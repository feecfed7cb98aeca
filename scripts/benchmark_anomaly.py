"""Outlier-detection benchmark on the user's path, by PyOD's protocol, on the ODDS sets.

PyOD's benchmark (yzhao062/pyod, notebooks/benchmark.py) splits each set 60/40, fits each
detector on the training rows without their labels (outliers included) and measures the ROC-AUC
of its scores on the test rows. Here each seeded split is written as CSV files (features only)
and trained by `aeservice train --model KIND --dataset train.csv --seed S --contamination 0.1`
in its own process: nothing else is given, so the CLI's defaults, its own 70/15/15 split of the
training rows and its tracking are what is measured. `--contamination` is how a user asks for
detection (it sets `detect`'s threshold; the auto code size is then the detection one); with
`--reconstruction-defaults` it is left out. The logged pyfunc model is loaded with
`mlflow.pyfunc.load_model` and asked for `score` on the test rows.

The table: ROC-AUC mean and spread (standard deviation over the splits) of each kind, PyOD's
published PCA, AutoEncoder and IForest figures beside them (one split each; read from the data
folder's README.md), and the mean seconds per `aeservice train` process (all of it: start-up,
fit, tracking) and of its fit alone. With --pyod and PyOD installed, its detectors with their
defaults run on the same splits too (fitted on the standardized rows, as its benchmark does).

Runs go to a tracking store in a temporary folder (`--store` keeps them). Progress on stderr,
the table on stdout, results also as JSON (--json) as they come, so a cut-short run still says
what it measured.

    python scripts/benchmark_anomaly.py                        # six sets, four kinds, five splits
    python scripts/benchmark_anomaly.py --sets wbc --splits 2  # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import numpy as np  # noqa: E402

SETS = ("cardio", "wbc", "ionosphere", "arrhythmia", "vowels", "letter")
KINDS = ("pca", "ae", "sparse", "vae")
PUBLISHED = ("PCA", "AutoEncoder", "IForest")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "odds"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def published(folder: Path) -> dict[str, dict[str, float]]:
    """PyOD's ROC-AUC per set and detector, from the table in the data folder's README.md."""
    table: dict[str, dict[str, float]] = {}
    readme = folder / "README.md"
    if not readme.is_file():
        return table
    header: list[str] = []
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "set" in cells and "PCA" in cells:
            header = cells
        elif header and len(cells) == len(header) and cells[0] in SETS:
            table[cells[0]] = {name: float(cells[header.index(name)]) for name in PUBLISHED if name in header}
    return table


def load(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    mat = loadmat(folder / f"{name}.mat")
    return np.asarray(mat["X"], dtype=np.float64), np.asarray(mat["y"]).ravel().astype(int)


def split(x: np.ndarray, y: np.ndarray, seed: int):
    """PyOD's split: 60% to fit on, 40% to score."""
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=0.4, random_state=seed)


def write_csv(path: Path, x: np.ndarray) -> Path:
    header = ",".join(f"f{i}" for i in range(x.shape[1]))
    np.savetxt(path, x, delimiter=",", header=header, comments="", fmt="%.10g")
    return path


_LOADING = threading.Lock()


def train_and_score(store: Path, kind: str, train_csv: Path, test: np.ndarray, seed: int,
                    extra: list[str]) -> dict:
    """`aeservice train` in its own process, then `score` of the logged model on the test rows."""
    import mlflow
    import pandas as pd

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / (train_csv.parent.name + '-' + kind)}.db"}
    cmd = ["aeservice", "train", "--model", kind, "--dataset", str(train_csv), "--seed", str(seed),
           "--experiment", "anomaly-benchmark", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=store)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    run_id = re.search(r"model: runs:/(\w+)/model", proc.stdout).group(1)
    fit = re.search(r"\bfit (\d+\.\d+) s", proc.stderr)
    with _LOADING:  # one store per train process (no SQLite lock waits); the URI is process-wide
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    frame = pd.DataFrame(test, columns=[f"f{i}" for i in range(test.shape[1])])
    scores = np.asarray(model.predict(frame, params={"method": "score"}), dtype=np.float64).ravel()
    return {"scores": scores, "seconds": seconds, "fit_seconds": float(fit.group(1)) if fit else None}


def pyod_scores(name: str, train: np.ndarray, test: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """PyOD's PCA, AutoEncoder and IForest with their defaults on standardized rows, as its benchmark."""
    from pyod.models.iforest import IForest
    from pyod.models.pca import PCA
    from pyod.utils.utility import standardizer

    train_n, test_n = standardizer(train, test)
    detectors = {"PCA": lambda: PCA(random_state=seed), "IForest": lambda: IForest(random_state=seed)}
    try:
        from pyod.models.auto_encoder import AutoEncoder

        detectors["AutoEncoder"] = lambda: AutoEncoder(random_state=seed, verbose=0)
    except ImportError as exc:  # PyOD 2's AutoEncoder needs torch
        log(f"PyOD AutoEncoder unavailable: {exc}")
    out = {}
    for label, make in detectors.items():
        try:
            scores = make().fit(train_n).decision_function(test_n)
        except ValueError as exc:  # PyOD's PCA divides by the zero variance of constant columns (arrhythmia)
            log(f"PyOD {label} failed on {name} split {seed}: {exc}")
            continue
        if np.isfinite(scores).all():
            out[label] = scores
        else:
            log(f"PyOD {label} gave non-finite scores on {name} split {seed}")
    return out


def table(results: dict, pub: dict, sets: list[str], kinds: list[str], pyod: bool) -> str:
    from sklearn.metrics import roc_auc_score  # noqa: F401  (imported by the caller's scoring too)

    columns = [*kinds, "best", *(f"PyOD {p}" for p in PUBLISHED), *((f"PyOD {p} here" for p in PUBLISHED) if pyod
                                                                  else ())]
    lines = ["| set | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    means: dict[str, list[float]] = {c: [] for c in columns}
    for name in sets:
        cells = []
        best = None
        for kind in kinds:
            aucs = [r["auc"] for r in results.get(name, {}).get(kind, [])]
            if aucs:
                mean = float(np.mean(aucs))
                means[kind].append(mean)
                best = mean if best is None else max(best, mean)
                cells.append(f"{mean:.3f} ± {np.std(aucs):.3f} ({len(aucs)})")
            else:
                cells.append("-")
        cells.append("-" if best is None else f"{best:.3f}")
        if best is not None:
            means["best"].append(best)
        for p in PUBLISHED:
            value = pub.get(name, {}).get(p)
            cells.append("-" if value is None else f"{value:.3f}")
            if value is not None:
                means[f"PyOD {p}"].append(value)
        if pyod:
            for p in PUBLISHED:
                aucs = [r["auc"] for r in results.get(name, {}).get(f"pyod-{p}", [])]
                cells.append(f"{np.mean(aucs):.3f} ± {np.std(aucs):.3f}" if aucs else "-")
                if aucs:
                    means[f"PyOD {p} here"].append(float(np.mean(aucs)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| mean | " + " | ".join(f"{np.mean(v):.3f}" if len(v) == len(sets) else "-"
                                         for v in means.values()) + " |")
    seconds = []
    for kind in kinds:
        runs = [r for name in sets for r in results.get(name, {}).get(kind, [])]
        if runs:
            fits = [r["fit_seconds"] for r in runs if r["fit_seconds"] is not None]
            seconds.append(f"{kind} {np.mean([r['seconds'] for r in runs]):.1f} s per train process"
                           + (f" (fit {np.mean(fits):.1f} s)" if fits else ""))
    return "\n".join(lines) + "\n\nROC-AUC mean ± std over splits (count). Time: " + "; ".join(seconds)


def targets(results: dict, pub: dict, sets: list[str], kinds: list[str]) -> list[str]:
    """Best kind >= PyOD's AutoEncoder on every set; mean of the best >= the best PyOD mean."""
    lines, best = [], {}
    for name in sets:
        means = [np.mean([r["auc"] for r in results[name][k]]) for k in kinds if results.get(name, {}).get(k)]
        if means:
            best[name] = float(max(means))
    for name, value in best.items():
        ae = pub.get(name, {}).get("AutoEncoder")
        here = [r["auc"] for r in results.get(name, {}).get("pyod-AutoEncoder", [])]
        if ae is not None:
            lines.append(f"{name}: best kind {value:.3f} vs PyOD AutoEncoder {ae:.3f} (published, one split): "
                         f"{'met' if value >= ae else 'missed'}")
        if here:  # PyOD run here on the very splits the kinds were scored on
            lines.append(f"{name}: best kind {value:.3f} vs PyOD AutoEncoder {np.mean(here):.3f} (here, the same "
                         f"{len(here)} splits): {'met' if value >= np.mean(here) else 'missed'}")
    if len(best) == len(sets) and all(name in pub for name in sets):
        top = max(np.mean([pub[n][p] for n in sets]) for p in PUBLISHED)
        mean = float(np.mean(list(best.values())))
        lines.append(f"mean of the best kind per set {mean:.3f} vs best PyOD mean {top:.3f}: "
                     f"{'met' if mean >= top else 'missed'}")
        ran = [p for p in PUBLISHED if all(results.get(n, {}).get(f"pyod-{p}") for n in sets)]
        if ran:
            top_here = max(np.mean([np.mean([r["auc"] for r in results[n][f"pyod-{p}"]]) for n in sets]) for p in ran)
            lines.append(f"mean of the best kind per set {mean:.3f} vs best PyOD mean here {top_here:.3f}: "
                         f"{'met' if mean >= top_here else 'missed'}")
        for kind in kinds:
            if all(results.get(n, {}).get(kind) for n in sets):
                one = float(np.mean([np.mean([r['auc'] for r in results[n][kind]]) for n in sets]))
                lines.append(f"mean of {kind} alone {one:.3f}: {'met' if one >= top else 'missed'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with the ODDS .mat files")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--splits", type=int, default=5, help="seeded splits per set (seeds 0, 1, ...)")
    parser.add_argument("--workers", type=int, default=1, help="train processes at once")
    parser.add_argument("--reconstruction-defaults", action="store_true",
                        help="leave --contamination out: the defaults of a user who does not ask for detection")
    parser.add_argument("--pyod", action="store_true", help="also run PyOD's detectors on the same splits")
    parser.add_argument("--store", type=Path, default=None, help="keep the tracking store here")
    parser.add_argument("--json", type=Path, default=None, help="write the results here as they come")
    args = parser.parse_args()
    from sklearn.metrics import roc_auc_score

    sets, kinds = args.sets.split(","), args.kinds.split(",")
    extra = [] if args.reconstruction_defaults else ["--contamination", "0.1"]
    pub = published(args.data)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="aeservice-anomaly-") as tmp:
        store = args.store or Path(tmp)
        store.mkdir(parents=True, exist_ok=True)
        jobs = []
        for seed in range(args.splits):  # splits outermost: a cut-short run has every set
            for name in sets:
                x, y = load(args.data, name)
                x_train, x_test, _, y_test = split(x, y, seed)
                folder = Path(tmp) / f"{name}-{seed}"
                folder.mkdir(exist_ok=True)
                train_csv = write_csv(folder / "train.csv", x_train)
                if args.pyod:
                    for label, scores in pyod_scores(name, x_train, x_test, seed).items():
                        results.setdefault(name, {}).setdefault(f"pyod-{label}", []).append(
                            {"auc": float(roc_auc_score(y_test, scores)), "seed": seed})
                for kind in kinds:
                    jobs.append((name, kind, seed, train_csv, x_test, y_test))

        def run(job):
            name, kind, seed, train_csv, x_test, y_test = job
            got = train_and_score(store, kind, train_csv, x_test, seed, extra)
            auc = float(roc_auc_score(y_test, got["scores"]))
            log(f"{name} {kind} split {seed}: ROC-AUC {auc:.3f} ({got['seconds']:.1f} s)")
            return name, kind, {"auc": auc, "seed": seed, "seconds": got["seconds"],
                                "fit_seconds": got["fit_seconds"]}

        with ThreadPoolExecutor(max(1, args.workers)) as pool:
            for name, kind, row in pool.map(run, jobs):
                results.setdefault(name, {}).setdefault(kind, []).append(row)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1))
    print(table(results, pub, sets, kinds, args.pyod))
    for line in targets(results, pub, sets, kinds):
        print(line)


if __name__ == "__main__":
    main()
