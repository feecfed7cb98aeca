"""The figures each training run logs: loss curves, latent space, latent sweep, reconstructions, samples.

Image data gets image grids; low-dimensional data gets the data with the model's output drawn
over it. Every function returns a matplotlib Figure; `write_figures` saves them as PNG files,
which `aeservice.tracking` logs (this module knows nothing of MLflow).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402

from aeservice.data import Dataset, Split  # noqa: E402
from aeservice.data.rows import FIGURE_ROWS, sample_rows  # noqa: E402
from aeservice.models import Autoencoder  # noqa: E402

__all__ = ["loss_curves", "latent_space", "latent_sweep", "reconstructions", "samples", "all_figures",
           "project_2d", "image_grid", "pixel_max", "label_palette", "scatter_labels", "legend_room",
           "write_figures", "figure_rows", "PLOTS_FOLDER", "FIGURE_ROWS", "IMAGE_PIXELS", "IMAGE_MAX_SIDE", "DPI"]

PLOTS_FOLDER = "plots"  # runs:/<id>/plots/<name>.png
DPI = 100
IMAGE_PIXELS = 64  # screen pixels each image's side gets at least, in whole pixels per image pixel
IMAGE_MAX_SIDE = 128  # larger images are shown by every n-th pixel: 100 photos of 1024x1024 would be 100 MP
LEGEND_ROWS = 24  # class entries per legend column
GAP_GRAY = 0.75  # between images: seen against black (digits) and white (photo) backgrounds alike


def _margins(fig: plt.Figure, left: float = 0.8, right: float = 0.2, bottom: float = 0.55, top: float = 0.4,
             wspace: float = 0.3) -> None:
    """Fixed margins in inches, room for ticks, labels and title: `tight_layout` measured every
    text first and took a third of the time spent drawing a run's figures."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wspace)


def loss_curves(history: dict[str, list[float]]) -> plt.Figure:
    # the loss, then each term the kind logs (Autoencoder.loss_terms); a term equal to the loss
    # (the plain AE's recon) would repeat its panel
    terms = [k for k in ("loss", *(k for k in history if k != "loss" and not k.startswith("val_"))) if k in history
             and (k == "loss" or not np.allclose(history[k], history["loss"], rtol=1e-6, atol=0))]
    fig, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3.2), squeeze=False)
    for ax, term in zip(axes[0], terms):
        epochs = np.arange(1, len(history[term]) + 1)
        ax.plot(epochs, history[term], label="train", marker="o" if len(epochs) == 1 else None)
        if f"val_{term}" in history:
            ax.plot(epochs, history[f"val_{term}"], label="validation", marker="o" if len(epochs) == 1 else None)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.legend()
    _margins(fig, left=0.75, right=0.15)
    return fig


def project_2d(points: np.ndarray, reference: np.ndarray | None = None) -> tuple[np.ndarray, str, str]:
    """Points as 2-D: as they are when 1- or 2-D, else their first two principal components."""
    if points.shape[1] == 1:
        return np.column_stack([points[:, 0], np.zeros(len(points))]), "dim 1", ""
    if points.shape[1] == 2:
        return points, "dim 1", "dim 2"
    ref = points if reference is None else reference
    mean = ref.mean(axis=0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    return (points - mean) @ vt[:2].T, "PC 1", "PC 2"


def label_palette(n: int) -> list:
    """n distinct colours for class labels; a style's colour cycle can be shorter than 10."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _markers(n: int) -> dict:
    """Marker size and alpha for n points: smaller and fainter as they crowd (1000 test digits)."""
    return {"s": float(np.clip(2500 / max(n, 1), 4.0, 7.0)), "alpha": 0.75 if n <= 500 else 0.6,
            "linewidths": 0}


def legend_room(labels, categorical: bool) -> float:
    """Inches a class legend beside the axes takes (`scatter_labels`); 0 when there is none."""
    if labels is None or not categorical:
        return 0.0
    return 0.3 + 0.6 * -(-len(np.unique(labels)) // LEGEND_ROWS)


def scatter_labels(ax, xy, labels, categorical: bool) -> None:
    """2-D points coloured by label: a legend for classes beside the axes (it hides no points;
    `legend_room` says its width), a colour bar for a continuous label."""
    style = _markers(len(xy))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], **style)
    elif categorical:
        # one collection in data order (no class drawn over all others), a legend of proxies:
        # one scatter per class took 10x the artists to draw
        values, index = np.unique(labels, return_inverse=True)
        palette = label_palette(len(values))
        ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(palette)[index.ravel()], **style)
        handles = [Line2D([], [], linestyle="", marker="o", markersize=5, color=color, label=str(value))
                   for value, color in zip(values, palette)]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  ncol=-(-len(values) // LEGEND_ROWS), handletextpad=0.2, columnspacing=0.6, frameon=False)
    else:
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="viridis", **{**style, "alpha": None})
        ax.figure.colorbar(points, ax=ax)


def latent_space(model: Autoencoder, split: Split, categorical: bool) -> plt.Figure:
    codes = model.encode(split.test)
    legend = legend_room(split.test_labels, categorical)
    fig, ax = plt.subplots(figsize=(5.5 + legend, 4.5))  # the plot keeps its size beside a legend
    colorbar = split.test_labels is not None and not categorical and codes.shape[1] > 1
    _margins(fig, right=0.7 if colorbar else 0.2 + legend)  # before the colorbar takes its share of the axes
    if codes.shape[1] == 1 and split.test_labels is not None and not categorical:
        ax.scatter(split.test_labels, codes[:, 0], s=6)
        ax.set_xlabel("label")
        ax.set_ylabel("code")
    else:
        xy, xl, yl = project_2d(codes)
        scatter_labels(ax, xy, split.test_labels, categorical)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
    ax.set_title(f"{model.kind}: test codes ({codes.shape[1]}-D)")
    return fig


def pixel_max(model: Autoencoder) -> float | None:
    """The pixel value a model's image grids draw as white: the training max its scaler divides
    by (0-255 data: 255), so originals and outputs share one scale; None when it scaled otherwise."""
    scaler = getattr(model, "scaler_", None)
    if getattr(scaler, "name", None) != "unit_range":
        return None
    return float(np.max(scaler.scale_))


def image_grid(images: np.ndarray, shape: tuple[int, ...], cols: int, title: str,
               row_titles: list[str] | None = None, vmax: float | None = None) -> plt.Figure:
    """Images tiled into one picture: one imshow, not one axes per image (far quicker to draw).

    shape is (h, w), drawn in gray (0 black, vmax white), or (h, w, c) with 3 or 4 channels,
    drawn in colour after dividing by vmax and clipping to [0, 1]; vmax defaults to the images'
    max, at least 1. Each image pixel is a whole number of screen pixels, at least `IMAGE_PIXELS`
    a side per image, with no interpolation: a 28x28 digit stays sharp; an image larger than
    `IMAGE_MAX_SIDE` is shown by every n-th pixel, at most that. Row titles go to the left.
    """
    rows = max(1, int(np.ceil(len(images) / cols)))
    step = -(-max(shape[:2]) // IMAGE_MAX_SIDE)
    h, w = -(-shape[0] // step), -(-shape[1] // step)
    gap = 1
    canvas = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *shape[2:]), np.nan)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = image.reshape(shape)[::step, ::step]
    top = vmax or (max(1.0, float(np.max(images))) if len(images) else 1.0)
    scale = max(1, -(-IMAGE_PIXELS // max(h, w)))  # screen pixels per image pixel
    left = 0.1 + (0.06 * max(map(len, row_titles)) + 0.05 if row_titles else 0.0)  # 7-point text
    right, bottom, head = 0.1, 0.1, 0.45
    width, height = canvas.shape[1] * scale / DPI, canvas.shape[0] * scale / DPI  # the picture, inches
    fig_w = max(left + width + right, 4.0)  # room for the title
    fig_h = bottom + height + head
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=DPI)
    ax = fig.add_axes(((left + (fig_w - left - width - right) / 2) / fig_w, bottom / fig_h, width / fig_w,
                       height / fig_h))
    if canvas.ndim == 3:
        canvas = np.clip(canvas / top, 0.0, 1.0)
        canvas[np.isnan(canvas)] = GAP_GRAY
        ax.imshow(canvas, interpolation="nearest")
    else:
        cmap = plt.get_cmap("gray").with_extremes(bad=str(GAP_GRAY))
        ax.imshow(canvas, cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
    ax.axis("off")
    for r, text in enumerate(row_titles or []):
        ax.text(-1.0, r * (h + gap) + (h - 1) / 2, text, fontsize=7, va="center", ha="right")
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / fig_h, va="top")
    return fig


def _sweep_codes(model: Autoencoder, train: np.ndarray, steps: int) -> np.ndarray:
    """A grid over the 5-95 % range of the training codes, along their two main directions."""
    codes = model.encode(train)
    mean = codes.mean(axis=0)
    if codes.shape[1] == 1:
        lo, hi = np.percentile(codes[:, 0], [2, 98])
        return np.linspace(lo, hi, steps)[:, None]
    _, _, vt = np.linalg.svd(codes - mean, full_matrices=False)
    proj = (codes - mean) @ vt[:2].T
    a_lo, a_hi = np.percentile(proj[:, 0], [5, 95])
    b_lo, b_hi = np.percentile(proj[:, 1], [5, 95])
    a, b = np.meshgrid(np.linspace(a_lo, a_hi, steps), np.linspace(b_hi, b_lo, steps))
    return mean + np.column_stack([a.ravel(), b.ravel()]) @ vt[:2]


def _data_axes(ax, data: np.ndarray):
    if data.shape[1] == 1:
        ax.hist(data[:, 0], bins=30, density=True, alpha=0.4, label="data")
    else:
        xy, xl, yl = project_2d(data)
        ax.scatter(xy[:, 0], xy[:, 1], s=5, alpha=0.3, label="data", color="tab:blue")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)


def latent_sweep(model: Autoencoder, dataset: Dataset, split: Split) -> plt.Figure:
    if dataset.kind == "image" and dataset.image_shape:
        steps = 10 if model.latent_dim_ > 1 else 12
        decoded = model.decode(_sweep_codes(model, split.train, steps))
        cols = steps if model.latent_dim_ > 1 else 12
        return image_grid(decoded, dataset.image_shape, cols, f"{model.kind}: decoded latent sweep",
                          vmax=pixel_max(model))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if dataset.n_features == 1:
        z = _sweep_codes(model, split.train, 100)
        ax.plot(z[:, 0] if z.shape[1] == 1 else np.arange(len(z)), model.decode(z)[:, 0])
        ax.set_xlabel("latent coordinate")
        ax.set_ylabel("decoded value")
    else:
        _data_axes(ax, split.train)
        z = _sweep_codes(model, split.train, 100 if model.latent_dim_ == 1 else 15)
        xy, _, _ = project_2d(model.decode(z), split.train)
        style = "-" if model.latent_dim_ == 1 else "."
        ax.plot(xy[:, 0], xy[:, 1], style, color="tab:red", label="decoded sweep", markersize=3)
        ax.legend()
    ax.set_title(f"{model.kind}: decoded latent sweep")
    _margins(fig)
    return fig


def reconstructions(model: Autoencoder, dataset: Dataset, split: Split, count: int = 10) -> plt.Figure:
    if dataset.kind == "image" and dataset.image_shape:
        x = split.test[:count]
        return image_grid(np.concatenate([x, model.reconstruct(x)]), dataset.image_shape, len(x),
                          f"{model.kind}: test images (top) and reconstructions (bottom)", vmax=pixel_max(model))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    rec = model.reconstruct(split.test)
    if dataset.n_features == 1:
        ax.scatter(split.test[:, 0], rec[:, 0], s=6)
        ax.set_xlabel("data")
        ax.set_ylabel("reconstruction")
    else:
        xy, xl, yl = project_2d(split.test)
        rxy, _, _ = project_2d(rec, split.test)
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.5, label="data")
        ax.scatter(rxy[:, 0], rxy[:, 1], s=6, alpha=0.7, label=model.kind, color="tab:orange")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend()
    ax.set_title(f"{model.kind}: test data and reconstruction")
    _margins(fig)
    return fig


def samples(model: Autoencoder, dataset: Dataset, split: Split, seed: int = 0) -> plt.Figure:
    if dataset.kind == "image" and dataset.image_shape:
        return image_grid(model.sample(30, seed), dataset.image_shape, 10, f"{model.kind}: samples",
                          vmax=pixel_max(model))
    drawn = model.sample(max(500, len(split.train)), seed)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    _data_axes(ax, split.train)
    if dataset.n_features == 1:
        ax.hist(drawn[:, 0], bins=30, density=True, alpha=0.4, label="samples")
    else:
        xy, _, _ = project_2d(drawn, split.train)
        ax.scatter(xy[:, 0], xy[:, 1], s=5, alpha=0.3, label="samples", color="tab:green")
    ax.legend()
    ax.set_title(f"{model.kind}: samples against training data")
    _margins(fig)
    return fig


def all_figures(model: Autoencoder, history: dict, dataset: Dataset, split: Split, seed: int = 0
                ) -> dict[str, plt.Figure]:
    """file name -> figure, for every plot a run logs, drawn from at most `FIGURE_ROWS` rows of
    each part (`figure_rows`): a million rows take no longer to draw than a few thousand."""
    split = figure_rows(split, seed)
    curves = {f"{PLOTS_FOLDER}/loss_curves.png": loss_curves(history)} if history.get("loss") else {}  # no fit made
    return {
        **curves,
        f"{PLOTS_FOLDER}/latent_space.png": latent_space(model, split, dataset.categorical_labels),
        f"{PLOTS_FOLDER}/latent_sweep.png": latent_sweep(model, dataset, split),
        f"{PLOTS_FOLDER}/reconstructions.png": reconstructions(model, dataset, split),
        f"{PLOTS_FOLDER}/samples.png": samples(model, dataset, split, seed),
    }


def figure_rows(split: Split, seed: int = 0, size: int = FIGURE_ROWS) -> Split:
    """At most `size` training and test rows (with their labels), the same for the same seed;
    the parts as they are when they are no larger. Validation rows are not drawn."""
    def pick(rows, labels):
        index = sample_rows(len(rows), size, seed)
        if len(index) == len(rows):
            return rows, labels
        return np.asarray(rows[index]), None if labels is None else labels[index]

    train, train_labels = pick(split.train, split.train_labels)
    test, test_labels = pick(split.test, split.test_labels)
    return Split(train, split.val, test, train_labels, split.val_labels, test_labels)


def write_figures(model: Autoencoder, history: dict, dataset: Dataset, split: Split, seed: int,
                  folder: Path) -> Path:
    """Every figure as a PNG under folder/plots (returned), ready for `mlflow.log_artifacts`.

    Files rather than Figure objects, so the process that holds the trained model can draw them
    while another one logs: `train`'s tracking worker logs the model meanwhile.
    """
    for name, fig in all_figures(model, history, dataset, split, seed).items():
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, pil_kwargs={"compress_level": 1})  # zlib level 1: 15% larger, 2/3 of the time
        plt.close(fig)
    return Path(folder) / PLOTS_FOLDER
