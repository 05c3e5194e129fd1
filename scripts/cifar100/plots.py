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
