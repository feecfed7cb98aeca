"""Compare the training runs of one experiment: find them in MLflow, and log a comparison run.

A training run is what `aeservice.tracking.train_run` logs (by `train`, by each `tune` trial, by
`main`): tagged `model`, FINISHED, with a `val_mse` metric. Everything else in the experiment
(comparison runs like ours, `tune` or `main` parents, failed runs) is left out, so comparing
twice counts the same runs. Their rows are ranked and shown by `aeservice.leaderboard`: by
default each (data set, kind) shows its best run by `val_mse`; `all_runs=True` lists every run.

The figures need the data and the models back: `TrainConfig.from_flat(run params)` and
`training.prepare` rebuild the run's seeded split, and each model is loaded from its logged
directory with `aeservice.models.load_model` (not through `mlflow.pyfunc.load_model`, which would
put the run's copy of the code on `sys.path` of this process). `aeservice.figures.comparison`
draws them.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import mlflow
from mlflow.entities import Run
from mlflow.models import Model

from aeservice.config import TrainConfig
from aeservice.errors import UserError
from aeservice.leaderboard import Row, format_table, make_row, rank, to_csv, to_markdown
from aeservice.models import Autoencoder, load_model
from aeservice.tracking import MODEL_ARTIFACT, mlflow_run
from aeservice.training import prepare

# matplotlib (and aeservice.figures, which draws with it) is imported where the figures and
# the report are made, so the table and a wrong experiment name come back without starting them.

__all__ = ["COMPARISON_TAG", "ComparisonReport", "training_runs", "leaderboard", "load_run_model", "compare"]

COMPARISON_TAG = "aeservice.comparison"  # marks our own report runs (never candidates)

Progress = Callable[[str], None]


@dataclass
class ComparisonReport:
    experiment: str
    run_id: str  # the comparison run holding comparison.md, comparison.csv and the figures
    rows: list[Row]
    artifacts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the figures had to leave out, and why

    def lines(self) -> list[str]:
        """What `aeservice compare` prints: the table, then where the report run went."""
        run = mlflow.get_run(self.run_id)
        where = mlflow.MlflowClient().get_experiment(run.info.experiment_id).name  # `mlflow run`'s own
        return [format_table(self.rows), "",
                f"report: run {self.run_id} in experiment {where!r} ({', '.join(self.artifacts)})",
                f"tracking store: {mlflow.get_tracking_uri()}  (open it with `mlflow ui`)"]


# ---- finding the runs ---------------------------------------------------------------------------
def _is_training_run(run: Run) -> bool:
    tags = run.data.tags
    return (run.info.status == "FINISHED" and bool(tags.get("model")) and "val_mse" in run.data.metrics
            and tags.get(COMPARISON_TAG) != "true")


def training_runs(experiment: str, dataset: str | None = None, run_ids: Sequence[str] | None = None) -> list[Run]:
    """The finished training runs of an experiment (nested tune trials included), or only those of
    `run_ids` (the `main` job's own models).

    A run that is the parent of other training runs is a summary (a `tune` study), not a model
    of its own, so it is left out even when it carries a `model` tag and the best trial's metrics.
    """
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        raise UserError(f"experiment {experiment!r} not found in {mlflow.get_tracking_uri()}")
    runs = mlflow.search_runs(experiment_ids=[found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              output_format="list")
    runs = [r for r in runs if _is_training_run(r) and (run_ids is None or r.info.run_id in run_ids)]
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    runs = [r for r in runs if r.info.run_id not in parents]
    if not runs:
        raise UserError(f"experiment {experiment!r} has no finished training runs "
                        "(runs tagged 'model' with a val_mse metric); train some with `aeservice train`")
    if dataset:
        chosen = [r for r in runs if dataset in (_dataset_of(r), r.data.params.get("dataset"))]
        if not chosen:
            have = ", ".join(sorted({_dataset_of(r) for r in runs}))
            raise UserError(f"experiment {experiment!r} has no training runs on data set {dataset!r}; "
                            f"it has: {have}")
        runs = chosen
    return runs


def _dataset_of(run: Run) -> str:
    return run.data.tags.get("dataset") or run.data.params.get("dataset", "?")


# ---- the leaderboard ------------------------------------------------------------------------------
def _row(run: Run) -> Row:
    return make_row(run.data.tags["model"], _dataset_of(run), run.data.params, run.data.metrics, run.info.run_id)


def leaderboard(runs: Sequence[Run], all_runs: bool = False, metric: str = "test_mse") -> list[Row]:
    """One row per run (or per best run of each data set and kind), sorted by test_mse per data set;
    of runs equally good on val_mse the newest counts."""
    newest_first = sorted(runs, key=lambda run: -(run.info.start_time or 0))
    return rank([_row(r) for r in newest_first], all_runs=all_runs, metric=metric)


# ---- the figures ----------------------------------------------------------------------------------
def load_run_model(run_id: str) -> Autoencoder:
    """The model a training run logged at runs:/<id>/model, loaded with this package's code."""
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{MODEL_ARTIFACT}", dst_path=tmp)
        conf = Model.load(local).flavors["python_function"]
        return load_model(Path(local) / conf["artifacts"]["model"]["path"])


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem if "/" in name else name) or "data"


def _dataset_figures(rows: list[Row], runs: dict[str, Run], progress: Progress) -> tuple[dict, list[str]]:
    """Figures of one data set from its best run per kind; notes say what had to be left out.

    Every model is shown on one split: the one of the best run's config (runs with other seeds or
    sizes split differently, but their models still take the same rows).
    """
    from aeservice.figures.comparison import comparison_figures, test_mse_bars

    name = rows[0]["dataset"]
    prefix = f"plots/{_slug(name)}"
    notes: list[str] = []
    bars = {r["kind"]: r["test_mse"] for r in rows if r["test_mse"] is not None}
    try:
        prepared = prepare(TrainConfig.from_flat(runs[rows[0]["run_id"]].data.params))
    except UserError as exc:
        notes.append(f"{name}: only the test MSE bars; the data could not be loaded again ({exc})")
        return {f"{prefix}/test_mse.png": test_mse_bars(bars, name)}, notes
    models: dict[str, Autoencoder] = {}
    for row in rows:
        progress(f"loading {row['kind']} model of run {row['run_id']} ({name})")
        try:
            model = load_run_model(row["run_id"])
        except Exception as exc:  # a trial logged without its model, a deleted artifact, ...
            notes.append(f"{name}: {row['kind']} left out of the figures; its model did not load "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
            continue
        if model.n_features_ != prepared.dataset.n_features:
            notes.append(f"{name}: {row['kind']} left out of the figures; it takes {model.n_features_} features, "
                         f"the data has {prepared.dataset.n_features}")
            continue
        models[row["kind"]] = model
    figures = comparison_figures(models, bars, prepared.dataset, prepared.split, prefix)
    return figures, notes


# ---- the report -----------------------------------------------------------------------------------
def _markdown_report(experiment: str, rows: list[Row], all_runs: bool, n_candidates: int,
                     figures: Sequence[str], notes: Sequence[str], metric: str = "test_mse") -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    chosen = ("all of them" if all_runs
              else "the best run of each data set and kind by val_mse")
    parts = [
        f"# Comparison of experiment `{experiment}`",
        "",
        f"{when}: {n_candidates} finished training runs; shown: {chosen}, sorted by {metric} within each "
        "data set. Errors are in the data's own units on each run's held-out rows; test_elbo and "
        "test_nll are the VAE's (nats per row; docs/codes.md); `-` means the value does not apply to that kind.",
        "",
        to_markdown(rows),
    ]
    if figures:
        parts += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    if notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"


def _description(report_md: str, limit: int = 8000) -> str:
    """The run page's description: the report, or its start when it exceeds MLflow's tag limit."""
    if len(report_md) <= limit:
        return report_md
    tail = "\n\n... (cut here; the whole table is in comparison.md and comparison.csv)\n"
    return report_md[:report_md.rfind("\n", 0, limit - len(tail))] + tail


def compare(experiment: str = "aeservice", dataset: str | None = None, all_runs: bool = False,
            figures: bool = True, nested: bool = False, progress: Progress | None = None,
            run_ids: Sequence[str] | None = None, metric: str = "test_mse") -> ComparisonReport:
    """Build the leaderboard of `experiment` (or of its runs `run_ids`) and log it, with figures, to a new
    comparison run.

    Everything that can fail (no such experiment, no runs, data that will not load) happens
    before the comparison run starts. Under `mlflow run` the run MLflow made is the one used.
    """
    rank([], metric=metric)  # an unknown metric fails before anything is read
    runs = training_runs(experiment, dataset, run_ids)
    import matplotlib.pyplot as plt

    progress = progress or (lambda message: None)
    rows = leaderboard(runs, all_runs=all_runs, metric=metric)
    by_id = {r.info.run_id: r for r in runs}
    figs: dict[str, Any] = {}  # artifact path -> matplotlib Figure
    notes: list[str] = []
    if figures:
        best = leaderboard(runs, all_runs=False)
        for name in dict.fromkeys(r["dataset"] for r in best):
            made, why = _dataset_figures([r for r in best if r["dataset"] == name], by_id, progress)
            figs.update(made)
            notes += why
    for note in notes:
        progress(f"note: {note}")
    report_md = _markdown_report(experiment, rows, all_runs, len(runs), list(figs), notes, metric)
    tags = {COMPARISON_TAG: "true", "mlflow.note.content": _description(report_md)}
    try:
        with mlflow_run(experiment, nested=nested, tags=tags, run_name="comparison") as run:
            have = mlflow.get_run(run.info.run_id).data.params
            params = {"compared_experiment": experiment, "compared_dataset": dataset or "all",
                      "compared_runs": "all" if all_runs else "best", "n_candidates": len(runs)}
            mlflow.log_params({k: v for k, v in params.items() if k not in have})
            mlflow.log_metric("n_rows", len(rows))
            mlflow.log_text(report_md, "comparison.md")
            mlflow.log_text(to_csv(rows), "comparison.csv")
            for path, fig in figs.items():
                mlflow.log_figure(fig, path)
    finally:
        for fig in figs.values():
            plt.close(fig)
    return ComparisonReport(experiment, run.info.run_id, rows, ["comparison.md", "comparison.csv", *figs], notes)
