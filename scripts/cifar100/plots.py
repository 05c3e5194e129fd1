"""Drawing. Every function takes numbers computed elsewhere (``metrics``, ``gradcam``, ...), an
optional ``ax``/figure size, and returns the matplotlib Figure; ``save`` writes it atomically.

Only analysis scripts import this module: training code never does, so a plot edit never
forces a retrain.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .exceptions import OutputError  # noqa: E402
from .files import atomic_path  # noqa: E402

matplotlib.rcParams.update({
    # Class names are data: "$" in one must print as "$", not start mathtext (or crash on "a$b").
    "text.parse_math": False,
    # SVG/PDF keep text as text: searchable, zoomable, and a test can find every class name in it.
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
    "svg.hashsalt": "cifar100",  # stable ids: the same figure gives the same file
})


def save(fig, path, dpi: int = 120) -> None:
    """Write ``fig`` to ``path`` (format from the suffix: png, svg, pdf) via a temp file, then close it."""
    fmt = Path(path).suffix[1:].lower()
    formats = fig.canvas.get_supported_filetypes()
    if fmt not in formats:
        plt.close(fig)
        raise OutputError(f"{path}: cannot write a figure as {'.' + fmt if fmt else 'a file without a suffix'}: "
                          f"use one of {', '.join('.' + f for f in sorted(formats))}")
    # No creation date in vector files, so an unchanged figure is an unchanged file.
    metadata = {"Date": None} if fmt in ("svg", "pdf") else None
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt, metadata=metadata)
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


def _name_width(names, fontsize: float) -> float:
    """Rough width in inches of the longest of ``names`` at ``fontsize`` points (0.6 em a character)."""
    return max((len(str(x)) for x in names), default=0) * fontsize * 0.6 / 72


def confusion_heatmap(matrix: np.ndarray, class_names: list[str], order=None, groups=None, group_names=None,
                      ax=None, max_labels: int | None = None, title: str = "Confusion matrix (row-normalised)"):
    """Row-normalised confusion matrix as an image: no cell values, every class named by default.

    ``order`` lists class indices in display order (``metrics.superclass_order``) and ``groups``
    gives each class's superclass: thin lines then separate superclass blocks, so confusions
    inside a superclass show as blocks on the diagonal, and ``group_names`` (superclass names)
    label the blocks on the top and right edges. ``max_labels`` thins the class names (None: all).
    The figure grows with the class count (0.16 in a class: names at 7 pt never overlap), and
    a square-root colour scale keeps the small off-diagonal shares (about 0.01 on CIFAR-100)
    visible next to a diagonal near 0.8. Save it as .svg too: the matrix stays one pixel a cell
    and the names stay text, so it zooms without loss.
    """
    from matplotlib.colors import PowerNorm

    n = len(class_names)
    order = np.arange(n) if order is None else np.asarray(order)
    m = np.asarray(matrix, dtype=float)[np.ix_(order, order)]
    names = [class_names[i] for i in order]
    fontsize = 7 if n > 30 else 9
    g = None if groups is None else np.asarray(groups)[order]
    labelled = g is not None and group_names is not None
    if ax is None:
        side = max(4.5, 0.16 * n)
        margin = _name_width(names, fontsize) + 1.0  # class names on the left and bottom
        extra = _name_width(group_names, fontsize) + 0.3 if labelled else 0.0  # superclass names, top and right
        fig = plt.figure(figsize=(side + margin + extra + 1.3, side + margin + extra + 0.6), layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    # interpolation="none": PNG and SVG show one flat square per cell (an SVG keeps the 100x100 image
    # and the viewer enlarges it without smoothing).
    im = ax.imshow(m, cmap="viridis", norm=PowerNorm(0.5, vmin=0.0, vmax=max(float(m.max()), 1e-12)),
                   interpolation="none")
    fig.colorbar(im, ax=ax, fraction=0.046 * min(1.0, 30 / max(n, 1)) + 0.02, pad=0.02,
                 label="share of the true class (square-root scale)")
    ticks = thinned_ticks(n, n if max_labels is None else max_labels)
    ax.set_xticks(ticks, [names[t] for t in ticks], rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, [names[t] for t in ticks], fontsize=fontsize)
    if g is not None:
        starts = np.r_[0, np.flatnonzero(np.diff(g) != 0) + 1]
        for b in starts[1:] - 0.5:
            ax.axhline(b, color="white", linewidth=0.6, alpha=0.8)
            ax.axvline(b, color="white", linewidth=0.6, alpha=0.8)
        if labelled:
            centers = (starts + np.r_[starts[1:], n] - 1) / 2
            labels = [str(group_names[g[s0]]) for s0 in starts]
            top, right = ax.secondary_xaxis("top"), ax.secondary_yaxis("right")
            top.set_xticks(centers, labels, rotation=90, fontsize=fontsize, fontweight="bold")
            right.set_yticks(centers, labels, fontsize=fontsize, fontweight="bold")
            top.set_xlabel("superclass")
            right.set_ylabel("superclass")
        title += ", grouped by superclass"
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return fig


def _tie_note(tie: dict | None) -> str:
    """One line under a panel when a tie at its cut decided which classes are shown."""
    if not tie:
        return ""
    return f"hatched: {tie['tied']} classes share {tie['value']:.2f}, {tie['shown']} shown (lowest class index first)"


def class_extremes(accuracy: np.ndarray, class_names: list[str], best, worst, axes=None, ties: dict | None = None,
                   n_classes: int | None = None):
    """Two bar charts: the most accurate classes (``best``) and the least accurate (``worst``).

    ``best``/``worst`` are class indices from ``metrics.extreme_classes`` (disjoint), drawn top to
    bottom; ``ties`` its {"best_tie", "worst_tie"}: a note under a panel then says how many classes
    share the value at its cut, and bars tied with classes left out are hatched. ``n_classes``
    (classes with an accuracy) goes into the titles. ``axes`` is an optional pair of axes.
    """
    ties = ties or {}
    if axes is None:
        rows = max(len(best), len(worst), 1)
        fig, axes = plt.subplots(1, 2, figsize=(11, 0.3 * rows + 2.0), sharex=True)
    fig = axes[0].figure
    of = f" of {n_classes}" if n_classes else ""
    panels = ((axes[0], best, CORRECT_COLOR, f"{len(best)} most accurate classes{of}", ties.get("best_tie")),
              (axes[1], worst, WRONG_COLOR, f"{len(worst)} least accurate classes{of}", ties.get("worst_tie")))
    for ax, idx, color, title, tie in panels:
        idx = np.asarray(idx, dtype=int)
        y = np.arange(len(idx))
        bars = ax.barh(y, accuracy[idx], color=color)
        if tie:
            for bar, i in zip(bars, idx):
                if accuracy[i] == tie["value"]:
                    bar.set_hatch("///")
                    bar.set_edgecolor("white")
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=8)
        ax.set_yticks(y, [class_names[i] for i in idx], fontsize=9)
        ax.invert_yaxis()  # first listed at the top
        ax.set_xlim(0, 1.12)
        ax.set_xlabel("test accuracy (share of the class's test images)")
        ax.set_title(title)
        note = _tie_note(tie)
        if note:
            ax.text(0.0, -0.1 - 0.6 / max(len(idx), 1), note, transform=ax.transAxes, ha="left",
                    va="top", fontsize=8, style="italic")
    axes[0].set_ylabel("class")
    fig.suptitle("Per-class accuracy: best and worst classes (ties broken by class index)")
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

    Blue bars reach each bin's accuracy. The gap to the bin's mean confidence (the height on the
    diagonal the bar should reach; each bin's term of the ECE) is a hatched band from the accuracy
    to that confidence: red on white above the bar when the bin is overconfident, white on the
    blue top of the bar when it is underconfident, so the blue always reaches the accuracy and
    each band looks as its legend entry. A black tick marks each bin's mean confidence. Without
    ``ax`` a second panel below shows how many predictions fall in each bin.
    """
    from matplotlib.patches import Patch

    if ax is None:
        fig, (ax, count_ax) = plt.subplots(2, 1, figsize=(6, 7), sharex=True,
                                           gridspec_kw={"height_ratios": [3, 1]})
    fig = ax.figure
    edges = np.asarray(calib["edges"])
    left, width = edges[:-1], np.diff(edges)
    centers = left + width / 2
    acc = np.nan_to_num(np.asarray(calib["accuracy"], dtype=float))
    conf = np.asarray(calib["confidence"], dtype=float)
    count = np.asarray(calib["count"])
    filled = count > 0
    ax.bar(centers[filled], acc[filled], width=width[filled], color="tab:blue", edgecolor="black",
           linewidth=0.5, label="accuracy", zorder=2)
    over = filled & (conf > acc)
    under = filled & (conf < acc)
    handles = [Patch(facecolor="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy")]
    # Overconfident: red hatching on white above the bar. Underconfident: white hatching on the
    # blue top of the bar, outlined in red; each style has its own legend entry.
    for mask, hatch_color, face, label in ((over, WRONG_COLOR, "none", "gap, overconfident bin"),
                                           (under, "white", "none", "gap, underconfident bin")):
        if mask.any():
            lo, hi = np.minimum(acc, conf)[mask], np.maximum(acc, conf)[mask]
            ax.bar(centers[mask], hi - lo, bottom=lo, width=width[mask], facecolor=face, edgecolor=WRONG_COLOR,
                   hatchcolor=hatch_color, hatch="///", linewidth=1.0, zorder=3)
            handles.append(Patch(facecolor="tab:blue" if hatch_color == "white" else "none", edgecolor=WRONG_COLOR,
                                 hatchcolor=hatch_color, hatch="///", label=label))
    ax.hlines(conf[filled], left[filled], left[filled] + width[filled], color="black", linewidth=1.5, zorder=4)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, zorder=5)
    handles += [plt.Line2D([], [], color="black", linewidth=1.5, label="mean confidence of the bin"),
                plt.Line2D([], [], color="black", linestyle="--", linewidth=1, label="perfect calibration")]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE {calib['ece']:.4f}, {calib['n_bins']} equal-width bins)")
    last = ax
    if count_ax is not None:
        bars = count_ax.bar(centers, count, width=width, color="0.6", edgecolor="black", linewidth=0.5)
        if len(count) <= 20:  # the numbers, where they fit
            count_ax.bar_label(bars, labels=[str(c) if c else "" for c in count], fontsize=7, padding=1)
        count_ax.set_ylim(0, max(1, count.max()) * 1.2)
        count_ax.set_ylabel("predictions")
        count_ax.set_title("Predictions per confidence bin", fontsize=9)
        last = count_ax
    last.set_xlabel("confidence (top-1 softmax probability)")
    fig.tight_layout()
    return fig


def _integer_epochs(ax) -> None:
    """Epoch ticks on whole numbers only (a 3-epoch run otherwise gets 1.5, 2.5)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _lr_ticks(ax, lr: np.ndarray) -> None:
    """Ticks at the learning rates used when there are few (a step schedule), written in full."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    used = np.unique(lr[np.isfinite(lr)])
    if 0 < len(used) <= 8:
        ax.yaxis.set_major_locator(FixedLocator(used))
        ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def training_curves(history: dict, axes=None, selected: dict | None = None):
    """Loss, accuracy and learning rate per epoch from history.csv columns (nan = not recorded).

    ``history`` maps column names to float arrays; val_* curves are drawn only when recorded.
    The learning rate of epoch e (history's lr: its value when the epoch starts) is drawn as a
    step over [e - 1, e], so a step schedule shows as steps, with ticks at the values used.
    ``selected`` ({"epoch", "rule"}, from metrics.json) marks the evaluated epoch on every panel.
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
        ax.set_ylabel(name.lower())
        ax.set_title(f"{name} per epoch")
    lr = np.asarray(history["lr"], dtype=float)
    if len(epoch):
        axes[2].stairs(lr, np.r_[epoch[0] - 1, epoch], color="tab:purple", linewidth=1.5, baseline=None)
    if np.all(lr[np.isfinite(lr)] > 0) and np.isfinite(lr).any():
        axes[2].set_yscale("log")  # step and cosine schedules span decades
    _lr_ticks(axes[2], lr)
    axes[2].set_ylabel("learning rate (value during the epoch)")
    axes[2].set_title("Learning rate per epoch")
    for ax in axes:
        if selected is not None and selected.get("epoch") is not None:
            ax.axvline(selected["epoch"], color="0.3", linestyle=":", linewidth=1.5,
                       label=f"selected: epoch {selected['epoch']} ({selected.get('rule', '')})")
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --- Grad-CAM and replicates (gradcam.py, aggregate.py, compare.py) ---------------------------------


CAM_SCALE_NOTE = "Grad-CAM, min-max scaled per image: 0 = weakest, 1 = strongest region of that image"


def gradcam_pairs(images, overlays, titles, colors=None, title: str = "", note: str = "",
                  pairs_per_row: int = 4, cell: float = 1.6, randomised=None, randomised_label: str = "randomised",
                  colorbar: bool = True):
    """Each image beside its Grad-CAM overlay, ``pairs_per_row`` images a row; ``titles[i]`` above
    image i. With ``randomised`` (overlays of the same images from the sanity check's randomised
    model) a third cell shows that map, so the two can be compared image by image. ``colorbar``
    adds the JET scale with what it means (``CAM_SCALE_NOTE``: each map is min-max scaled on its
    own). With no images the figure holds just ``title`` and ``note``."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n = len(images)
    if n == 0:
        fig, ax = plt.subplots(figsize=(2 * pairs_per_row * cell * 0.6, 1.4))
        ax.axis("off")
        ax.text(0.5, 0.5, note or "no images to show", ha="center", va="center", fontsize=9)
        if title:
            fig.suptitle(title, fontsize=10)
        return fig
    colors = colors or ["black"] * n
    k = 2 if randomised is None else 3  # cells per image
    per_row = min(pairs_per_row if k == 2 else max(1, pairs_per_row * 2 // 3), n)
    fig, axes = grid(k * n, k * per_row, cell=cell)
    width, height = fig.get_size_inches()
    bar = 0.8 if colorbar else 0.0
    fig.set_size_inches(width, height + 0.6 + bar)  # room for the suptitle and the colour bar
    total = height + 0.6 + bar
    for i in range(n):
        show_image(axes[k * i], images[i], titles[i], colors[i])
        show_image(axes[k * i + 1], overlays[i], "Grad-CAM", colors[i])
        if randomised is not None:
            show_image(axes[k * i + 2], randomised[i], randomised_label, "0.35")
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / total)
    fig.subplots_adjust(top=1 - 0.75 / total, bottom=(bar + 0.1) / total if colorbar else 0.02, hspace=0.4,
                        wspace=0.08)
    if colorbar:
        cax = fig.add_axes([0.25, 0.45 / total, 0.5, 0.12 / total])  # its label below, the note below that
        cb = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), cax=cax, orientation="horizontal")
        cb.set_label(CAM_SCALE_NOTE, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    if note:
        fig.text(0.5, 0.0, note, ha="center", va="top", fontsize=8, style="italic")
    return fig


def seeds_curves(curves: dict, mean=None, ylabel: str = "test accuracy", title: str = "", ax=None,
                 selected: dict | None = None):
    """One line per seed: ``curves`` maps a label to (epochs, values); ``mean`` an optional
    (epochs, values) drawn thick on top; ``selected`` maps a label to the epoch its model was
    selected at, marked with a star on that seed's line."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    for i, (label, (epochs, values)) in enumerate(curves.items()):
        color = f"C{i % 10}"
        ax.plot(epochs, values, lw=1.2, alpha=0.8, marker="o" if len(epochs) <= 20 else None, ms=3, label=label,
                color=color)
        at = (selected or {}).get(label)
        hit = np.flatnonzero(np.asarray(epochs) == at) if at is not None else []
        if len(hit):
            ax.plot(epochs[hit[0]], values[hit[0]], marker="*", ms=12, color=color, markeredgecolor="black",
                    linestyle="none", zorder=5)
    if mean is not None:
        ax.plot(mean[0], mean[1], color="black", lw=2.2, label="mean over seeds")
    if selected:
        ax.plot([], [], marker="*", ms=10, color="0.6", markeredgecolor="black", linestyle="none",
                label="selected epoch")
    ax.set_xlabel("epoch")
    _integer_epochs(ax)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def recipes_comparison(recipes, summary: dict, points: dict | None = None, labels: dict | None = None,
                       interval: str = "95% CI", n_seeds=None, bounds: tuple[float, float] | None = (0.0, 1.0)):
    """One panel per metric: each recipe's mean with its interval as an error bar, seeds as dots.

    ``summary[metric]`` has lists "mean", "low", "high" (one entry per recipe; NaN bounds draw no
    bar); ``points[metric]`` one array of per-seed values per recipe; ``labels`` titles per metric;
    ``interval`` names the method in the title; ``n_seeds`` (one per recipe) goes under each
    recipe's name. The y axis never leaves ``bounds``, the range the metrics can take.
    """
    metrics = list(summary)
    labels = labels or {}
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.0, 0.9 * len(recipes) + 1.8) * len(metrics), 3.8),
                             squeeze=False)
    x = np.arange(len(recipes))
    names = list(recipes) if n_seeds is None else [f"{r}\nn={k} seed{'s' * (k != 1)}" for r, k in zip(recipes, n_seeds)]
    for ax, m in zip(axes[0], metrics):
        mean = np.asarray(summary[m]["mean"], dtype=float)
        low = np.asarray(summary[m]["low"], dtype=float)
        high = np.asarray(summary[m]["high"], dtype=float)
        err = np.vstack([mean - low, high - mean])
        has = np.isfinite(err).all(axis=0)
        ax.errorbar(x[has], mean[has], yerr=err[:, has], fmt="none", ecolor="black", capsize=5, lw=1.5)
        ax.scatter(x, mean, marker="_", s=400, color="black", zorder=3, label="mean")
        seen = [mean, low[np.isfinite(low)], high[np.isfinite(high)]]
        for i, vals in enumerate((points or {}).get(m, [])):
            vals = np.asarray(vals, dtype=float)
            jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else np.zeros(len(vals))
            ax.scatter(x[i] + jitter, vals, s=16, alpha=0.8, color=f"C{i % 10}", edgecolor="black", linewidth=0.3,
                       zorder=4)
            seen.append(vals)
        if bounds is not None:
            values = np.concatenate([v[np.isfinite(v)] for v in seen])
            pad = max(0.02, 0.08 * float(np.ptp(values))) if len(values) else 0.02
            span = bounds[1] - bounds[0]
            lo = max(bounds[0] - 0.02 * span, float(values.min()) - pad) if len(values) else bounds[0]
            hi = min(bounds[1] + 0.02 * span, float(values.max()) + pad) if len(values) else bounds[1]
            ax.set_ylim(lo, hi)
            ticks = [t for t in ax.get_yticks() if bounds[0] - 1e-9 <= t <= bounds[1] + 1e-9]
            ax.set_yticks(ticks)  # no tick label promises a value the metric cannot take (1.01)
            ax.set_ylim(lo, hi)
        ax.set_xticks(x, names, rotation=30 if len(recipes) > 3 else 0, ha="right" if len(recipes) > 3 else "center")
        ax.set_xlim(-0.6, len(recipes) - 0.4)
        ax.set_title(labels.get(m, m), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Recipes: mean over seeds (black bar), {interval} (error bar), one dot per seed", fontsize=10)
    fig.tight_layout()
    return fig
