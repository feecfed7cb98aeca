"""How to score rows for outlier detection: the measurements behind `Autoencoder.score`.

In process (no CLI, no tracking), on PyOD's protocol (60/40 split, fitted on the training rows
without labels, ROC-AUC on the test rows) over the ODDS sets: each candidate score of one fitted
model side by side, the mean ROC-AUC over the seeded splits per set.

- user: mean squared reconstruction error in the data's own units (the score before)
- scaled: the same in the model's scaled units (continuous data: standardized features)
- perfeat: scaled errors, each feature's divided by its mean on the training rows (floored at
  --floor times the mean over features): what `score` is now
- perfeat+maha: perfeat times the feature count plus the code's Mahalanobis distance (train codes)
- neg_elbo (vae): the negative ELBO with the posterior mean as the one draw (code KL plus the
  Gaussian decoder's negative log-likelihood, constants left out)

PCA is fitted here with scikit-learn on standardized rows (as the `pca` kind does); the nets
(`--kinds ae,sparse,vae`) through `aeservice.training.fit_rows` with their defaults.

    python scripts/sweep_anomaly.py --latent 2,4                      # PCA, five splits: seconds
    python scripts/sweep_anomaly.py --kinds ae,vae,sparse --splits 2 --latent 2   # the nets: minutes
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_anomaly import DATA, SETS, load, split  # noqa: E402


def _pca_parts(latent: int):
    from sklearn.decomposition import PCA

    def fit(train):
        mean, std = train.mean(axis=0), train.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        pca = PCA(min(latent, train.shape[1])).fit((train - mean) / std)

        def parts(x):
            xs = (x - mean) / std
            code = pca.transform(xs)
            return xs, pca.inverse_transform(code), code, std
        return parts
    return fit


def _net_parts(kind: str, latent: int, seed: int):
    from aeservice.config import ModelConfig, TrainConfig
    from aeservice.training import fit_rows

    def fit(train):
        model = fit_rows(TrainConfig(model=ModelConfig(model=kind, latent_dim=min(latent, train.shape[1]), seed=seed)),
                         train)

        def parts(x):
            xs = model.scaler_.transform(x)
            code = model._encode(xs)
            return xs, model._decode(code), code, model.scaler_.scale_
        parts.model = model
        return parts
    return fit


def scores(parts, train: np.ndarray, test: np.ndarray, floor: float) -> dict[str, np.ndarray]:
    xs_tr, rec_tr, code_tr, _ = parts(train)
    xs, rec, code, std = parts(test)
    errors_tr, errors = (xs_tr - rec_tr) ** 2, (xs - rec) ** 2
    per_feature = errors_tr.mean(axis=0)
    scale = np.maximum(per_feature, floor * per_feature.mean())
    perfeat = np.mean(errors / scale, axis=1)
    centre = code_tr.mean(axis=0)
    cov = np.atleast_2d(np.cov(code_tr.T)) + 1e-6 * np.eye(code_tr.shape[1])
    offset = code - centre
    maha = np.einsum("ij,jk,ik->i", offset, np.linalg.inv(cov), offset)
    out = {"user": np.mean((errors * std**2), axis=1), "scaled": errors.mean(axis=1), "perfeat": perfeat,
           "perfeat+maha": perfeat * xs.shape[1] + maha}
    model = getattr(parts, "model", None)
    if getattr(model, "kind", "") == "vae" and model.gaussian:  # the negative ELBO at the posterior mean
        mean, log_var = model._posterior(xs)
        kl = -0.5 * np.sum(1 + log_var - mean**2 - np.exp(log_var), axis=1)
        lv = model.decoder_log_var_
        out["neg_elbo"] = 0.5 * np.sum((xs - model._decode(mean)) ** 2 * np.exp(-lv) + lv, axis=1) + kl
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--kinds", default="pca")
    parser.add_argument("--latent", default="2", help="code sizes, comma-separated (capped at the features)")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--floor", type=float, default=0.01, help="perfeat's floor, as a share of the mean")
    args = parser.parse_args()
    from sklearn.metrics import roc_auc_score

    sets = args.sets.split(",")
    print(f"| kind | latent | score | {' | '.join(sets)} | mean |")
    print("|---|---:|---|" + "---:|" * (len(sets) + 1))
    for kind in args.kinds.split(","):
        for latent in (int(v) for v in args.latent.split(",")):
            table: dict[str, list[float]] = {}
            for name in sets:
                x, y = load(args.data, name)
                per_split: dict[str, list[float]] = {}
                for seed in range(args.splits):
                    x_train, x_test, _, y_test = split(x, y, seed)
                    fit = _pca_parts(latent) if kind == "pca" else _net_parts(kind, latent, seed)
                    for label, s in scores(fit(x_train), x_train, x_test, args.floor).items():
                        per_split.setdefault(label, []).append(roc_auc_score(y_test, s))
                for label, aucs in per_split.items():
                    table.setdefault(label, []).append(float(np.mean(aucs)))
            for label, means in table.items():
                print(f"| {kind} | {latent} | {label} | " + " | ".join(f"{v:.3f}" for v in means)
                      + f" | {np.mean(means):.3f} |", flush=True)


if __name__ == "__main__":
    main()
