"""Figures that put several models of one data set side by side (for `aeservice compare`).

Each takes `models`, an ordered kind -> fitted model mapping, and the one split every model is
shown on, so the pictures compare like with like. Built from the per-run helpers in
`aeservice.figures.run`; `aeservice.comparison` logs them to the comparison run.
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np

from aeservice.data import Dataset, Split
from aeservice.figures.run import image_grid, label_palette, legend_room, pixel_max, project_2d, scatter_labels
from aeservice.models import MODELS, Autoencoder

__all__ = ["test_mse_bars", "reconstruction_overlay", "reconstruction_grid", "latent_spaces",
           "comparison_figures", "MAX_OVERLAY_FEATURES"]

MAX_OVERLAY_FEATURES = 3  # up to 3-D data is drawn as points (3-D via its 2 main directions)
# One colour per kind in every figure, by its place in aeservice.models.MODELS (blue is the
# data's); kinds no longer registered get the colours after those.
_COLOURS = ("tab:gray", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def _colour(kind: str, position: int) -> str:
    kinds = list(MODELS)
    index = kinds.index(kind) if kind in kinds else len(kinds) + position
    return _COLOURS[index % len(_COLOURS)]


def test_mse_bars(test_mse: Mapping[str, float], dataset: str) -> plt.Figure:
    """One bar per kind, lowest first, with the value written on the bar."""
    names = list(test_mse)
    values = [test_mse[n] for n in names]
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2.5, 3.6))
    bars = ax.bar(names, values, color=[_colour(n, i) for i, n in enumerate(names)])
    ax.bar_label(bars, labels=[f"{v:.4g}" for v in values], fontsize=8)
    ax.set_ylabel("test_mse (data units)")
    ax.set_title(f"{dataset}: test MSE per kind (lower is better)")
    ax.margins(y=0.15)
    fig.tight_layout()
    return fig


def reconstruction_overlay(models: Mapping[str, Autoencoder], split: Split, dataset: str) -> plt.Figure:
    """The test data with every kind's reconstruction drawn over it, in one picture."""
    x = split.test
    fig, ax = plt.subplots(figsize=(6.5, 5))
    if x.shape[1] == 1:
        bins = np.histogram_bin_edges(x[:, 0], bins=30)
        ax.hist(x[:, 0], bins=bins, density=True, alpha=0.35, color="tab:blue", label="data")
        for i, (kind, model) in enumerate(models.items()):
            ax.hist(model.reconstruct(x)[:, 0], bins=bins, density=True, histtype="step", linewidth=1.6,
                    color=_colour(kind, i), label=kind, zorder=3 + len(models) - i)
        ax.set_xlabel("value")
        ax.set_ylabel("density")
    else:
        xy, xl, yl = project_2d(x)
        ax.scatter(xy[:, 0], xy[:, 1], s=7, alpha=0.25, color="tab:blue", label="data")
        for i, (kind, model) in enumerate(models.items()):  # the first (best) kind is drawn on top
            rxy, _, _ = project_2d(model.reconstruct(x), x)
            ax.scatter(rxy[:, 0], rxy[:, 1], s=5, alpha=0.75, color=_colour(kind, i), label=kind,
                       zorder=3 + len(models) - i)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
    ax.legend(markerscale=2)
    ax.set_title(f"{dataset}: test data and each kind's reconstruction")
    fig.tight_layout()
    return fig


def reconstruction_grid(models: Mapping[str, Autoencoder], dataset: Dataset, split: Split,
                        count: int = 10) -> plt.Figure:
    """Originals in the top row, then one labelled row of reconstructions per kind."""
    x = split.test[:count]
    rows = [x] + [model.reconstruct(x) for model in models.values()]
    return image_grid(np.concatenate(rows), dataset.image_shape, len(x),
                      f"{dataset.name}: test images and reconstructions",
                      row_titles=["original", *models], vmax=pixel_max(next(iter(models.values()))))


def _latent_panel(ax, codes: np.ndarray, labels: np.ndarray | None, categorical: bool) -> None:
    if codes.shape[1] == 1 and labels is not None and not categorical:
        ax.scatter(labels, codes[:, 0], s=6)
        ax.set_xlabel("label")
        ax.set_ylabel("code")
        return
    if codes.shape[1] == 1:  # a 1-D code: how each class spreads along it
        bins = np.histogram_bin_edges(codes[:, 0], bins=30)
        groups = [(None, codes[:, 0])] if labels is None else [(v, codes[labels == v, 0]) for v in np.unique(labels)]
        for (value, part), color in zip(groups, label_palette(len(groups))):
            ax.hist(part, bins=bins, alpha=0.5, color=color, label=None if value is None else str(value))
        if labels is not None:
            ax.legend(fontsize=7, ncol=2)
        ax.set_xlabel("code")
        ax.set_ylabel("test rows")
        return
    xy, xl, yl = project_2d(codes)
    scatter_labels(ax, xy, labels, categorical)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)


def latent_spaces(models: Mapping[str, Autoencoder], dataset: Dataset, split: Split) -> plt.Figure:
    """One panel per kind: its codes of the test rows, coloured by label when there are labels."""
    room = legend_room(split.test_labels, dataset.categorical_labels)  # each panel's legend beside it
    fig, axes = plt.subplots(1, len(models), figsize=((4.3 + room) * len(models), 4), squeeze=False)
    for ax, (kind, model) in zip(axes[0], models.items()):
        codes = model.encode(split.test)
        _latent_panel(ax, codes, split.test_labels, dataset.categorical_labels)
        ax.set_title(f"{kind} ({codes.shape[1]}-D code)")
    fig.suptitle(f"{dataset.name}: test codes per kind")
    fig.tight_layout()
    return fig


def comparison_figures(models: Mapping[str, Autoencoder], test_mse: Mapping[str, float], dataset: Dataset,
                       split: Split, prefix: str = "plots") -> dict[str, plt.Figure]:
    """file name -> figure for one data set: the bars always, the data pictures when they apply."""
    figures = {f"{prefix}/test_mse.png": test_mse_bars(test_mse, dataset.name)}
    if not models:
        return figures
    if dataset.kind == "image" and dataset.image_shape:
        figures[f"{prefix}/reconstructions.png"] = reconstruction_grid(models, dataset, split)
    elif dataset.n_features <= MAX_OVERLAY_FEATURES:
        figures[f"{prefix}/reconstructions.png"] = reconstruction_overlay(models, split, dataset.name)
    figures[f"{prefix}/latent_spaces.png"] = latent_spaces(models, dataset, split)
    return figures
