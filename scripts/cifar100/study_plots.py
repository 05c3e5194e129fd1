"""Drawing for reproducibility studies. Every function takes numbers from ``seed_agreement``,
``variance_sources`` or ``recipe_differences`` (intervals as ``intervals`` states) and an optional
``ax`` (or axes) and returns the matplotlib Figure; ``save`` (from ``plots``) writes it atomically.

Distributions across seeds are drawn with seaborn (strip plots show every seed: with 3 to 10
seeds a box or violin would pretend to a shape that few points cannot show).
"""

import math

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from .plots import _fig_ax, save  # noqa: E402,F401  (scripts save study figures through this module)

LABELS = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "macro_f1": "macro F1", "ece": "ECE"}
SOURCE_COLORS = {"all": "tab:blue", "init": "tab:orange", "data": "tab:green", "order": "tab:olive",
                 "augment": "tab:cyan", "none": "tab:gray"}


def _finite(x) -> bool:
    return x is not None and x != "" and math.isfinite(float(x))


# --- one recipe's seeds --------------------------------------------------------------------------


def _interval_text(low, high, scale: float = 100, fmt: str = ".1f") -> str:
    return f" [{scale * float(low):{fmt}}, {scale * float(high):{fmt}}]" if _finite(low) and _finite(high) else ""


def churn_heatmap(matrix: np.ndarray, seeds, ax=None, mean: dict | None = None):
    """Seeds x seeds share of test images with different top-1 predictions, in percent, annotated;
    ``mean`` (churn.csv's "mean" row) puts the mean churn with its interval in the title."""
    fig, ax = _fig_ax(ax, (3.6, 3.2))
    n = len(seeds)
    if n < 2:
        ax.text(0.5, 0.5, "one seed:\nno pair to compare", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    mask = np.eye(n, dtype=bool)  # a seed never disagrees with itself: leave the diagonal blank
    sns.heatmap(100 * np.asarray(matrix), mask=mask, annot=n <= 12, fmt=".1f", cmap="rocket_r", vmin=0,
                square=True, cbar_kws={"label": "predictions differ (% of test images)"}, ax=ax,
                xticklabels=[str(s) for s in seeds], yticklabels=[str(s) for s in seeds], annot_kws={"size": 9})
    ax.set_xlabel("seed")
    ax.set_ylabel("seed")
    title = "churn between seeds"
    if mean:
        title += (f"\nmean {100 * mean['churn']:.1f}%"
                  f"{_interval_text(mean['churn_ci95_low'], mean['churn_ci95_high'])}, {mean['n_pairs']} pairs")
    ax.set_title(title, fontsize=10)
    return fig


def correctness_rates(rates: np.ndarray, n_seeds: int, noise: dict | None = None, ax=None):
    """How many test images k of the n seeds get right, k = 0..n; ``noise``
    (seed_agreement.test_set_noise) adds the observed and the predicted seed-to-seed sd of top-1 and
    the predicted share of the variance with its interval as text."""
    fig, ax = _fig_ax(ax, (4.2, 3.2))
    k = np.rint(np.asarray(rates) * n_seeds).astype(int)
    counts = np.bincount(k, minlength=n_seeds + 1)
    sns.barplot(x=np.arange(n_seeds + 1), y=counts, color="tab:blue", ax=ax)
    ax.set_ylim(0, 1.4 * max(counts.max(), 1))  # headroom for the text box above the bars
    ax.set_xlabel(f"seeds (of {n_seeds}) that get the image right")
    ax.set_ylabel("test images")
    ax.set_title("per-image correctness across seeds", fontsize=10)
    if noise and _finite(noise.get("predicted_sd")):
        share = ""
        if _finite(noise.get("predicted_share")):
            share = (f"\nshare of the variance {noise['predicted_share']:.2f}"
                     f"{_interval_text(noise['predicted_share_ci_low'], noise['predicted_share_ci_high'], 1, '.2g')}")
        ax.text(0.02, 0.97, f"top-1 sd between seeds\nobserved {100 * noise['observed_sd']:.2f} pts\n"
                f"as independent images {100 * noise['predicted_sd']:.2f} pts{share}",
                transform=ax.transAxes, va="top", fontsize=8, bbox={"fc": "white", "ec": "0.8", "alpha": 0.9})
    return fig


def selection_optimism(optimism, seeds, ax=None, interval=None):
    """Per seed, best-epoch minus last-epoch test accuracy in points, with their mean and its
    ``interval`` (low, high), if given, as a band."""
    fig, ax = _fig_ax(ax, (3.0, 3.2))
    values = 100 * np.asarray(optimism, dtype=float)
    sns.stripplot(y=values, ax=ax, size=7, color="tab:purple", jitter=0.08)
    band = interval is not None and _finite(interval[0]) and _finite(interval[1])
    label = f"mean {values.mean():.2f} pts" + (_interval_text(*interval, fmt=".2f") if band else "")
    ax.axhline(values.mean(), color="black", lw=1.5, label=label)
    if band:
        ax.axhspan(100 * interval[0], 100 * interval[1], color="tab:purple", alpha=0.15, lw=0)
    ax.axhline(0, color="0.6", lw=0.8, ls="--")
    low, high = min(0.0, values.min()), max(0.0, values.max(), 100 * interval[1] if band else 0.0)
    pad = max(0.1 * (high - low), 0.1)
    ax.set_ylim(low - pad, high + 2 * pad)  # zero (no optimism) always in view, room for the legend
    ax.set_ylabel("best minus last epoch, test top-1 (pts)")
    ax.set_xticks([])
    ax.set_title(f"best_test optimism, {len(seeds)} seeds", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def seeds_agreement(matrix, seeds, rates, noise: dict, optimism, recipe: str, churn: dict | None = None,
                    optimism_interval=None):
    """The three per-recipe panels side by side: churn, per-image correctness, selection optimism."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3), gridspec_kw={"width_ratios": [1.2, 1.3, 0.7]})
    churn_heatmap(matrix, seeds, ax=axes[0], mean=churn)
    correctness_rates(rates, len(seeds), noise, ax=axes[1])
    selection_optimism(optimism, seeds, ax=axes[2], interval=optimism_interval)
    fig.suptitle(f"{recipe}: agreement between {len(seeds)} seeds", fontsize=11)
    fig.tight_layout()
    return fig


# --- across recipes ------------------------------------------------------------------------------


def differences(rows: list[dict], metric: str = "top1", ax=None):
    """Forest plot: each compared pair's A - B on ``metric`` in points with its 95% interval, the
    test used, its p-value (and Holm's across the metrics) and P(A beats B) with its interval (same
    seed when paired, fresh seeds otherwise)."""
    rows = [r for r in rows if r["metric"] == metric]
    fig, ax = _fig_ax(ax, (7.5, 0.7 * max(len(rows), 1) + 1.4))
    if not rows:
        ax.text(0.5, 0.5, "no recipe pairs to compare", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows):
        diff = 100 * r["difference"]
        if _finite(r["ci95_low"]):
            ax.errorbar(diff, yi, xerr=[[diff - 100 * r["ci95_low"]], [100 * r["ci95_high"] - diff]], fmt="o",
                        color="black", capsize=4)
        else:
            ax.plot(diff, yi, "o", color="black", mfc="white")
        p = ("no test" if not _finite(r["p_value"])
             else "p<0.001" if r["p_value"] < 0.001 else f"p={r['p_value']:.3f}")
        holm = f" (Holm {r['p_holm']:.3f})" if _finite(r.get("p_holm")) else ""
        kind = "same_seed" if r["test"] == "paired" else "fresh_seeds"
        key = f"p_a_beats_b_{kind}"
        beats = (f"\nP(A beats B, {kind.replace('_', ' ')}) {r[key]:.2f}"
                 f"{_interval_text(r[key + '_ci95_low'], r[key + '_ci95_high'], 1, '.2f')}" if _finite(r[key]) else "")
        ax.annotate(f"{r['test'].capitalize()}, {p}{holm}{beats}", (1.02, yi), xycoords=("axes fraction", "data"),
                    va="center", fontsize=8)
    ax.axvline(0, color="0.5", lw=1, ls="--")
    ax.set_yticks(y, [f"{r['recipe_a']} - {r['recipe_b']}" for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(f"difference in {LABELS.get(metric, metric)} (points), 95% interval")
    ax.set_title(f"recipe A minus recipe B ({'lower' if metric == 'ece' else 'higher'} is better for A)",
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def variance_sources(rows: list[dict], values: dict, metric: str = "top1", axes=None):
    """Per family (one row of panels): each source's per-seed values (left) and its sd with the
    chi-square 95% interval and its share of the total variance with the F interval (right), in
    points. ``values`` maps recipe -> per-seed values."""
    rows = [r for r in rows if r["metric"] == metric]
    fams = list(dict.fromkeys(r["family"] for r in rows))
    if axes is None:
        fig, axes = plt.subplots(max(len(fams), 1), 2, figsize=(11, 3.8 * max(len(fams), 1)), squeeze=False)
    else:
        fig = np.asarray(axes).flat[0].figure
        axes = np.atleast_2d(axes)
    if not fams:
        for ax in axes.flat:
            ax.set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no recipes that differ only in vary", ha="center", va="center",
                        transform=axes[0, 0].transAxes)
        return fig
    label = LABELS.get(metric, metric)
    for (left, right), fam in zip(axes, fams):
        members = [r for r in rows if r["family"] == fam]
        names = [r["vary"] for r in members]  # unique in a family; the CSV names each recipe
        xs = np.concatenate([[n] * len(values[r["recipe"]]) for n, r in zip(names, members)])
        ys = 100 * np.concatenate([values[r["recipe"]] for r in members])
        palette = {n: SOURCE_COLORS.get(r["vary"], "tab:red") for n, r in zip(names, members)}
        sns.stripplot(x=xs, y=ys, hue=xs, palette=palette, order=names, size=7, jitter=0.12, legend=False, ax=left)
        left.set_ylabel(f"{label} (%)")
        left.set_xlabel("which randomness the seed drives")
        left.set_title(f"{fam} family: one dot per seed", fontsize=10)
        clipped = False
        for i, r in enumerate(members):
            sd = 100 * r["sd"] if _finite(r["sd"]) else math.nan
            if _finite(r["sd_ci_low"]):
                # The interval comes cut at 0.5, the largest sd a share can have (intervals): a
                # caret marks a cut end.
                low, high = 100 * r["sd_ci_low"], 100 * r["sd_ci_high"]
                color = SOURCE_COLORS.get(r["vary"], "tab:red")
                right.errorbar(i, sd, yerr=[[sd - low], [high - sd]], fmt="o", capsize=5, color=color)
                if "cut" in str(r.get("note", "")):
                    clipped = True
                    right.plot(i, high, marker="^", color=color, ms=8)
            share = ""
            if _finite(r["share"]) and r["share_of"] != r["recipe"]:
                share = f"share {r['share']:.3g}{_interval_text(r['share_ci_low'], r['share_ci_high'], 1, '.3g')}"
            elif _finite(r["share"]):
                share = "total (share 1)"
            if math.isfinite(sd):
                right.annotate(share, (i, sd), xytext=(8, 0), textcoords="offset points", fontsize=8, va="center")
        right.set_xticks(range(len(members)), names)
        right.set_xlim(-0.5, len(members) - 0.3)
        right.set_ylim(bottom=0)  # an sd cannot be negative
        right.set_ylabel(f"sd of {label} between seeds (pts)")
        right.set_title("sd, chi-square 95% interval" + (" (^: cut at 50 pts, the most a share can spread)"
                                                           if clipped else "")
                        + "\nshare of the vary-all variance [F 95% interval]", fontsize=9)
        right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
