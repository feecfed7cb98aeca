"""Image benchmark on the user's path: MNIST's IDX files and digits, `aeservice train` with defaults.

Each cell is `aeservice train --model KIND --dataset DATA --latent-dim L --arch ARCH` in its own
process, with the CLI's own seeded 70/15/15 split (MNIST: the 10,000 images of the IDX test
set, so 7000 train, 1500 validation, 1500 test; digits: the built-in set). The logged model is
loaded back with `mlflow.pyfunc.load_model` and reconstructs the split's test rows; MSE is in
[0, 1] pixel units, over that of the project's own `pca` with the same latent size on the same
split. Also printed: the sparse AE's code figures (L0, dead units, share of activations below
0.01, from the run's test metrics), the VAE's test ELBO and NLL, and each run's wall time.

    python scripts/benchmark_images.py                 # MNIST and digits, every kind, dense and conv, latent 2/16/32
    python scripts/benchmark_images.py --quick         # MNIST only: the cells the targets are judged on (~1 h)
    python scripts/benchmark_images.py --mnist DIR     # where t10k-images-idx3-ubyte.gz lies
    python scripts/benchmark_images.py --quick --store S --reuse   # the table again from the runs in S

Progress on stderr, the table on stdout, then a line per target. Runs go to a tracking store
in a temporary folder (`--store` keeps them).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import numpy as np  # noqa: E402

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
KINDS = ("ae", "sparse", "vae")
LATENTS = (2, 16, 32)
ARCHS = ("dense", "conv")
# The cells the targets are judged on (MNIST): (kind, latent)
TARGET_CELLS = (("ae", 16), ("ae", 2), ("vae", 16), ("sparse", 32), ("ae", 32))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Result:
    data: str
    kind: str
    arch: str  # as asked ("auto" for the default), and what it resolved to
    latent: int
    mse: float
    seconds: float
    arch_used: str = "-"
    kept: str = "-"
    metrics: dict = field(default_factory=dict)


@dataclass
class Runner:
    store: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.store / 'mlflow.db'}"

    reuse: bool = False  # a finished run of the same settings in the store is scored again, not retrained

    def _finished(self, data: str, kind: str, latent: int, arch: str | None):
        import mlflow

        found = mlflow.MlflowClient(self.uri).search_runs(
            [e.experiment_id for e in mlflow.MlflowClient(self.uri).search_experiments()],
            f"params.dataset = '{data}' and params.model = '{kind}' and params.latent_dim = '{latent}' "
            f"and params.arch = '{arch or 'auto'}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
        return found[0] if found else None

    def train(self, data: str, name: str, kind: str, latent: int, arch: str | None, test: np.ndarray,
              top: float) -> Result:
        import mlflow

        run = self._finished(data, kind, latent, arch) if self.reuse else None
        if run is not None:  # its wall time: the run's own, start to end
            run_id, seconds = run.info.run_id, (run.info.end_time - run.info.start_time) / 1000
        else:
            cmd = ["aeservice", "train", "--model", kind, "--dataset", data, "--latent-dim", str(latent),
                   "--experiment", "benchmark-images", "--quiet", *(["--arch", arch] if arch else [])]
            env = {**os.environ, "MLFLOW_TRACKING_URI": self.uri}
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.store)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-1500:]}")
            run_id = next(line.split()[1].rstrip(":") for line in proc.stdout.splitlines() if line.startswith("run "))
            run = mlflow.MlflowClient(self.uri).get_run(run_id)
        mlflow.set_tracking_uri(self.uri)
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
        rebuilt = np.asarray(model.predict(test, params={"method": "reconstruct"}), dtype=np.float64)
        mse = float(np.mean(((test - rebuilt) / top) ** 2))
        params = run.data.params
        result = Result(name, kind, arch or "auto", latent, mse, seconds, params.get("arch_used", "-"),
                        params.get("kept", "-"), dict(run.data.metrics))
        log(f"  {kind:6s} {name} latent {latent:2d} arch {arch or 'auto'} -> {result.arch_used}: "
            f"mse {mse:.5f}, {seconds:.0f} s")
        return result


def test_rows(data: str) -> tuple[np.ndarray, float]:
    """The CLI's test rows of this data set (seed 0) and its pixel scale (what [0, 1] divides by)."""
    from aeservice.config import DataConfig
    from aeservice.data import load_dataset, split_dataset

    config = DataConfig(dataset=data)
    dataset = load_dataset(config)
    split = split_dataset(dataset, config, 0)
    top = float(np.max(dataset.x))
    return np.asarray(split.test, dtype=np.float64), (255.0 if top > 16 else 16.0 if top > 1 else 1.0)


def code_figures(metrics: dict) -> str:
    found = {k[len("test_"):]: v for k, v in metrics.items() if k.startswith("test_code_")}
    return ", ".join(f"{k} {v:.3g}" for k, v in sorted(found.items()))


def vae_figures(metrics: dict) -> str:
    return ", ".join(f"{name} {metrics[f'test_{name}']:.1f}" for name in ("elbo", "nll") if f"test_{name}" in metrics)


def table(results: list[Result], pca: dict[tuple[str, int], float]) -> str:
    lines = ["| data | latent | kind | arch (used) | test MSE | / PCA | kept | code / likelihood | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        extra = code_figures(r.metrics) if r.kind == "sparse" else vae_figures(r.metrics) if r.kind == "vae" else ""
        ratio = r.mse / pca[(r.data, r.latent)] if r.kind != "pca" else 1.0
        lines.append(f"| {r.data} | {r.latent} | {r.kind} | {r.arch} ({r.arch_used}) | {r.mse:.5f} | {ratio:.3f} | "
                     f"{r.kept} | {extra} | {r.seconds:.0f} |")
    return "\n".join(lines)


def targets(results: list[Result], pca: dict[tuple[str, int], float], mnist: str) -> list[str]:
    def default(kind: str, latent: int) -> Result | None:
        return next((r for r in results if r.data == mnist and r.kind == kind and r.latent == latent
                     and r.arch == "auto"), None)

    lines = []
    for kind, latent, bound in (("ae", 16, 0.35), ("ae", 2, 0.65), ("vae", 16, 0.60)):
        r = default(kind, latent)
        if r is not None:
            ratio = r.mse / pca[(mnist, latent)]
            lines.append(f"{'met ' if ratio <= bound else 'MISS'} {kind} / PCA at latent {latent}: {ratio:.3f} "
                         f"(target <= {bound}), {r.seconds:.0f} s")
    sparse, plain = default("sparse", 32), default("ae", 32)
    if sparse is not None and plain is not None:
        share = sparse.metrics.get("test_code_share_inactive", float("nan"))
        ratio = sparse.mse / plain.mse
        ok = share >= 0.70 and ratio <= 1.2
        lines.append(f"{'met ' if ok else 'MISS'} sparse at latent 32: share below 0.01 {share:.3f} (target >= 0.70), "
                     f"MSE {ratio:.3f}x the AE's (target <= 1.2)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="MNIST only, the cells the targets are judged on, the other arch only for the AE at latent 16")
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help="folder with t10k-images-idx3-ubyte.gz")
    parser.add_argument("--store", type=Path, default=None, help="keep the tracking store here")
    parser.add_argument("--reuse", action="store_true",
                        help="score the latest finished run of each cell in --store again instead of training it")
    args = parser.parse_args()
    images = args.mnist / "t10k-images-idx3-ubyte.gz"
    if not images.is_file():
        sys.exit(f"no MNIST IDX file at {images} (give --mnist DIR)")
    store = args.store or Path(tempfile.mkdtemp(prefix="aeservice-images-"))
    store.mkdir(parents=True, exist_ok=True)
    runner = Runner(store, reuse=args.reuse)
    mnist = "t10k-images"
    sets = [(str(images), mnist)] + ([] if args.quick else [("digits", "digits")])
    results: list[Result] = []
    pca: dict[tuple[str, int], float] = {}
    started = time.perf_counter()
    for data, name in sets:
        test, top = test_rows(data)
        cells = [(k, lat) for k, lat in TARGET_CELLS] if args.quick else [(k, lat) for lat in LATENTS for k in KINDS]
        for latent in sorted({lat for _, lat in cells}):
            pca[(name, latent)] = runner.train(data, name, "pca", latent, None, test, top).mse
        for kind, latent in cells:
            default = runner.train(data, name, kind, latent, None, test, top)  # what auto picks, then the other arch
            results.append(default)
            if not args.quick or (kind, latent) == ("ae", 16):  # quick: the other arch only where its cost is judged
                other = next(a for a in ARCHS if a != default.arch_used)
                results.append(runner.train(data, name, kind, latent, other, test, top))
    print(table(results, pca))
    print()
    for line in targets(results, pca, mnist):
        print(line)
    print(f"({len(results)} rows, {time.perf_counter() - started:.0f} s; store {store})")


if __name__ == "__main__":
    main()
