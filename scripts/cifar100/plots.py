"""Drawing. Every function takes numbers computed elsewhere (``metrics``, ``gradcam``, ...), an
optional ``ax``/figure size, and returns the matplotlib Figure; ``save`` writes it atomically.

Only analysis scripts import this module: training code never does, so a plot edit never
forces a retrain.
"""

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .files import atomic_path  # noqa: E402


def save(fig, path, dpi: int = 120) -> None:
    """Write ``fig`` to ``path`` (format from the suffix) via a temp file, then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=str(path).rsplit(".", 1)[-1])
    plt.close(fig)


def show_image(ax, image_hwc_uint8: np.ndarray, title: str = "", color: str = "black") -> None:
    """One 32x32 image without axes, with a small title."""
    ax.imshow(image_hwc_uint8, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7, color=color)


def grid(n: int, cols: int, cell: float = 1.6):
    """A figure with ``n`` image cells in rows of ``cols``; unused cells hidden."""
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell * 1.15), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat[:n]


# --- Evaluation figures (confusion, errors, calibration, samples, training curves) -----------
# Each takes numbers from ``metrics`` (or history.csv) and an optional ax; none computes metrics.

CORRECT_COLOR, WRONG_COLOR = "tab:green", "tab:red"


def _fig_ax(ax, figsize):
    """The figure of ``ax``, or a new figure with one axes when ``ax`` is None."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def thinned_ticks(n: int, max_labels: int) -> np.ndarray:
    """Every k-th position of ``n`` so that at most ``max_labels`` tick labels are drawn."""
    step = max(1, -(-n // max(1, max_labels)))
    return np.arange(0, n, step)


def _note(ax, text: str, title: str) -> None:
    """An empty panel that says why it is empty, so a declared figure is still meaningful."""
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])


def confusion_heatmap(matrix: np.ndarray, class_names: list[str], order=None, groups=None, ax=None,
                      max_labels: int = 50, title: str = "Confusion matrix (row-normalised)"):
    """Row-normalised confusion matrix as an image: no cell values, at most ``max_labels`` ticks.

    ``order`` lists class indices in display order (``metrics.superclass_order``) and ``groups``
    gives each class's superclass: thin lines then separate superclass blocks, so confusions
    inside a superclass show as blocks on the diagonal. A square-root colour scale keeps the
    small off-diagonal shares (about 0.01 on CIFAR-100) visible next to a diagonal near 0.8.
    """
    from matplotlib.colors import PowerNorm

    n = len(class_names)
    order = np.arange(n) if order is None else np.asarray(order)
    m = np.asarray(matrix, dtype=float)[np.ix_(order, order)]
    fig, ax = _fig_ax(ax, (9, 8) if n > 30 else (6, 5))
    im = ax.imshow(m, cmap="viridis", norm=PowerNorm(0.5, vmin=0.0, vmax=max(float(m.max()), 1e-12)),
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="share of the true class")
    ticks = thinned_ticks(n, max_labels)
    names = [class_names[i] for i in order]
    fontsize = 8 if len(ticks) <= 20 else 5
    ax.set_xticks(ticks, [names[t] for t in ticks], rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, [names[t] for t in ticks], fontsize=fontsize)
    if groups is not None:
        g = np.asarray(groups)[order]
        for b in np.flatnonzero(np.diff(g) != 0) + 0.5:
            ax.axhline(b, color="white", linewidth=0.4, alpha=0.7)
            ax.axvline(b, color="white", linewidth=0.4, alpha=0.7)
        title += ", grouped by superclass"
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return fig


def class_extremes(accuracy: np.ndarray, class_names: list[str], best, worst, axes=None):
    """Two bar charts: the most accurate classes (``best``) and the least accurate (``worst``).

    ``best``/``worst`` are class indices from ``metrics.best_and_worst``, drawn top to bottom.
    ``axes`` is an optional pair of axes.
    """
    if axes is None:
        rows = max(len(best), len(worst), 1)
        fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * rows + 1.6), sharex=True)
    fig = axes[0].figure
    for ax, idx, color, title in ((axes[0], best, CORRECT_COLOR, f"{len(best)} most accurate classes"),
                                  (axes[1], worst, WRONG_COLOR, f"{len(worst)} least accurate classes")):
        idx = np.asarray(idx, dtype=int)
        y = np.arange(len(idx))
        bars = ax.barh(y, accuracy[idx], color=color)
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=7)
        ax.set_yticks(y, [class_names[i] for i in idx], fontsize=8)
        ax.invert_yaxis()  # first listed at the top
        ax.set_xlim(0, 1.1)
        ax.set_xlabel("test accuracy")
        ax.set_title(title)
    axes[0].set_ylabel("class")
    fig.suptitle("Per-class accuracy: best and worst classes")
    fig.tight_layout()
    return fig


def superclass_heatmap(matrix, coarse_names, ax=None, annotate: bool = True):
    """Row-normalised superclass confusion (20x20 on CIFAR-100) with cell values in percent.

    With ``matrix`` None (a dataset whose meta has no superclasses) the figure says so instead.
    """
    title = "Superclass confusion (row-normalised, %)"
    if matrix is None or coarse_names is None:
        fig, ax = _fig_ax(ax, (6, 4))
        _note(ax, "no superclasses in meta", title)
        return fig
    m = np.asarray(matrix, dtype=float)
    k = len(coarse_names)
    fig, ax = _fig_ax(ax, (9, 8) if k > 10 else (6, 5))
    im = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="share of the true superclass")
    if annotate:
        fontsize = 6 if k > 10 else 8
        for (i, j), v in np.ndenumerate(m):
            if v >= 0.005:  # blank cells read faster than a sea of zeros
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=fontsize,
                        color="white" if v > 0.5 else "black")
    ax.set_xticks(np.arange(k), coarse_names, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(k), coarse_names, fontsize=7)
    ax.set_xlabel("predicted superclass")
    ax.set_ylabel("true superclass")
    ax.set_title(title)
    return fig


def image_gallery(images, titles: list[str], colors: list[str], suptitle: str, cols: int = 8,
                  empty_note: str = "nothing to show"):
    """Images in a grid, each with a small coloured title; a note when there are none."""
    if len(images) == 0:
        fig, ax = plt.subplots(figsize=(6, 2))
        _note(ax, empty_note, suptitle)
        return fig
    cols = min(cols, len(images))
    fig, axes = grid(len(images), cols)
    rows = -(-len(images) // cols)
    fig.set_size_inches(cols * 1.7, rows * 2.2 + 0.6)  # room for two-line titles and the suptitle
    for ax, image, title, color in zip(axes, images, titles, colors):
        show_image(ax, image, title, color)
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def errors_gallery(images, true_names: list[str], pred_names: list[str], confidence, cols: int = 8):
    """The most confident wrong predictions: image, true class, predicted class and confidence."""
    titles = [f"true: {t}\npred: {p} ({c:.2f})" for t, p, c in zip(true_names, pred_names, confidence)]
    return image_gallery(images, titles, [WRONG_COLOR] * len(titles),
                         "Most confident wrong predictions (true, predicted, confidence)", cols,
                         empty_note="no wrong predictions")


def samples_grid(images, true_names: list[str], pred_names: list[str], confidence, correct, cols: int = 8):
    """Test images titled with true and predicted class and confidence, green if right, red if wrong."""
    titles = [f"true: {t}\npred: {p} ({c:.2f})" for t, p, c in zip(true_names, pred_names, confidence)]
    colors = [CORRECT_COLOR if ok else WRONG_COLOR for ok in correct]
    return image_gallery(images, titles, colors, "Test images: true and predicted class (confidence)", cols)


def confidence_histogram(conf_correct, conf_wrong, bins: int = 20, ax=None):
    """Histograms (densities) of top-1 confidence for correct and wrong predictions, means marked."""
    fig, ax = _fig_ax(ax, (7, 4.5))
    edges = np.linspace(0, 1, bins + 1)
    for values, color, name in ((conf_correct, CORRECT_COLOR, "correct"), (conf_wrong, WRONG_COLOR, "wrong")):
        values = np.asarray(values)
        if len(values) == 0:
            continue
        ax.hist(values, bins=edges, density=True, alpha=0.5, color=color, label=f"{name} (n={len(values)})")
        mean = float(values.mean())
        ax.axvline(mean, color=color, linestyle="--", linewidth=1.5, label=f"mean {name}: {mean:.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("top-1 confidence (softmax probability)")
    ax.set_ylabel("density")
    ax.set_title("Confidence of correct and wrong predictions")
    ax.legend(loc="best", fontsize=8)
    return fig


def reliability_diagram(calib: dict, ax=None, count_ax=None):
    """Accuracy per confidence bin against the diagonal, from ``metrics.calibration``.

    Bars show each bin's accuracy; red hatched bars the gap to its mean confidence. Without
    ``ax`` a second, smaller panel below shows how many predictions fall in each bin.
    """
    if ax is None:
        fig, (ax, count_ax) = plt.subplots(2, 1, figsize=(6, 7), sharex=True,
                                           gridspec_kw={"height_ratios": [3, 1]})
    fig = ax.figure
    edges = np.asarray(calib["edges"])
    left, width = edges[:-1], np.diff(edges)
    centers = left + width / 2
    acc = np.nan_to_num(np.asarray(calib["accuracy"], dtype=float))
    conf = np.asarray(calib["confidence"], dtype=float)
    filled = np.asarray(calib["count"]) > 0
    ax.bar(centers[filled], acc[filled], width=width[filled], color="tab:blue", edgecolor="black",
           linewidth=0.5, label="accuracy")
    ax.bar(centers[filled], (conf - acc)[filled], bottom=acc[filled], width=width[filled],
           color=WRONG_COLOR, alpha=0.3, edgecolor=WRONG_COLOR, hatch="//", linewidth=0.5,
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE {calib['ece']:.4f}, {calib['n_bins']} bins)")
    ax.legend(loc="upper left", fontsize=8)
    last = ax
    if count_ax is not None:
        count_ax.bar(centers, calib["count"], width=width, color="0.5", edgecolor="black", linewidth=0.5)
        count_ax.set_ylabel("predictions")
        count_ax.set_title("Predictions per confidence bin", fontsize=9)
        last = count_ax
    last.set_xlabel("confidence (top-1 softmax probability)")
    fig.tight_layout()
    return fig


def training_curves(history: dict, axes=None):
    """Loss, accuracy and learning rate per epoch from history.csv columns (nan = not recorded).

    ``history`` maps column names to float arrays; val_* curves are drawn only when recorded.
    ``axes`` is an optional triple of axes.
    """
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    fig = axes[0].figure
    epoch = np.asarray(history["epoch"])
    style = {"marker": "o", "markersize": 3} if len(epoch) <= 30 else {}
    for ax, metric, name in ((axes[0], "loss", "Loss"), (axes[1], "acc", "Accuracy")):
        for split in ("train", "test", "val"):
            y = np.asarray(history.get(f"{split}_{metric}", []), dtype=float)
            if len(y) and np.isfinite(y).any():
                ax.plot(epoch, y, label=split, **style)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name.lower())
        ax.set_title(f"{name} per epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    lr = np.asarray(history["lr"], dtype=float)
    axes[2].plot(epoch, lr, color="tab:purple", **style)
    if np.all(lr[np.isfinite(lr)] > 0) and np.isfinite(lr).any():
        axes[2].set_yscale("log")  # step and cosine schedules span decades
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate")
    axes[2].set_title("Learning rate per epoch")
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --- Grad-CAM and replicates (gradcam.py, aggregate.py, compare.py) ---------------------------------


def gradcam_pairs(images, overlays, titles, colors=None, title: str = "", note: str = "",
                  pairs_per_row: int = 4, cell: float = 1.6):
    """Each image beside its Grad-CAM overlay, ``pairs_per_row`` pairs a row; ``titles[i]`` above
    image i. With no images the figure holds just ``title`` and ``note``."""
    n = len(images)
    if n == 0:
        fig, ax = plt.subplots(figsize=(2 * pairs_per_row * cell * 0.6, 1.4))
        ax.axis("off")
        ax.text(0.5, 0.5, note or "no images to show", ha="center", va="center", fontsize=9)
        if title:
            fig.suptitle(title, fontsize=10)
        return fig
    colors = colors or ["black"] * n
    per_row = min(pairs_per_row, n)
    fig, axes = grid(2 * n, 2 * per_row, cell=cell)
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + 0.6)  # room for the suptitle above the two-line titles
    for i in range(n):
        show_image(axes[2 * i], images[i], titles[i], colors[i])
        show_image(axes[2 * i + 1], overlays[i], "Grad-CAM", colors[i])
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / (height + 0.6))
    if note:
        fig.text(0.5, 0.0, note, ha="center", va="top", fontsize=8, style="italic")
    fig.subplots_adjust(top=1 - 0.75 / (height + 0.6), bottom=0.02, hspace=0.4, wspace=0.08)
    return fig


def seeds_curves(curves: dict, mean=None, ylabel: str = "test accuracy", title: str = "", ax=None):
    """One line per seed: ``curves`` maps a label to (epochs, values); ``mean`` an optional
    (epochs, values) drawn thick on top."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    for label, (epochs, values) in curves.items():
        ax.plot(epochs, values, lw=1.2, alpha=0.8, marker="o" if len(epochs) <= 20 else None, ms=3, label=label)
    if mean is not None:
        ax.plot(mean[0], mean[1], color="black", lw=2.2, label="mean over seeds")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def recipes_comparison(recipes, summary: dict, points: dict | None = None, labels: dict | None = None,
                       interval: str = "95% CI"):
    """One panel per metric: each recipe's mean with its interval as an error bar, seeds as dots.

    ``summary[metric]`` has lists "mean", "low", "high" (one entry per recipe; NaN bounds draw no
    bar); ``points[metric]`` one array of per-seed values per recipe; ``labels`` titles per metric.
    """
    metrics = list(summary)
    labels = labels or {}
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.0, 0.9 * len(recipes) + 1.8) * len(metrics), 3.6),
                             squeeze=False)
    x = np.arange(len(recipes))
    for ax, m in zip(axes[0], metrics):
        mean = np.asarray(summary[m]["mean"], dtype=float)
        low = np.asarray(summary[m]["low"], dtype=float)
        high = np.asarray(summary[m]["high"], dtype=float)
        err = np.vstack([mean - low, high - mean])
        has = np.isfinite(err).all(axis=0)
        ax.errorbar(x[has], mean[has], yerr=err[:, has], fmt="none", ecolor="black", capsize=5, lw=1.5)
        ax.scatter(x, mean, marker="_", s=400, color="black", zorder=3, label="mean")
        for i, vals in enumerate((points or {}).get(m, [])):
            vals = np.asarray(vals, dtype=float)
            jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else np.zeros(len(vals))
            ax.scatter(x[i] + jitter, vals, s=14, alpha=0.7, color=f"C{i % 10}", zorder=4)
        ax.set_xticks(x, recipes, rotation=30 if len(recipes) > 3 else 0, ha="right" if len(recipes) > 3 else "center")
        ax.set_xlim(-0.6, len(recipes) - 0.4)
        ax.set_title(labels.get(m, m), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"recipes: mean over seeds, {interval} error bars, one dot per seed", fontsize=10)
    fig.tight_layout()
    return fig
