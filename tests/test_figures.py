"""Figures a researcher reads at 100 classes: the facts behind each one, checked on its artists and
on the numbers it is drawn from (not on pixels)."""

import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.image import AxesImage
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from cifar100 import metrics, plots, replicates  # noqa: E402

# Long names, like CIFAR-100's ("large_man-made_outdoor_things"), and names with mathtext in them.
FINE = [f"class_{i:02d}_{'x' * (i % 7)}" for i in range(100)]
COARSE = [f"superclass_{k:02d}_outdoor_things" for k in range(20)]


def svg_texts(path) -> list[str]:
    return ["".join(e.itertext()) for e in ET.parse(path).iter() if e.tag.endswith("text")]


@pytest.fixture(scope="module")
def cm100():
    rng = np.random.default_rng(0)
    labels = np.arange(3000) % 100
    preds = np.where(rng.random(3000) < 0.6, labels, rng.integers(0, 100, 3000))
    return metrics.confusion_matrix(labels, preds, 100)


# --- confusion matrix ---------------------------------------------------------------------------


def test_vector_confusion_matrix_names_every_class_and_superclass(cm100, tmp_path):
    f2c = np.arange(100) % 20
    order = metrics.superclass_order(f2c, 100)
    fig = plots.confusion_heatmap(metrics.normalize_rows(cm100), FINE, order=order, groups=f2c, group_names=COARSE)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [FINE[i] for i in order]  # all 100, none thinned
    assert min(t.get_fontsize() for t in ax.get_xticklabels()) >= 7
    plots.save(fig, tmp_path / "cm.svg")
    texts = svg_texts(tmp_path / "cm.svg")
    assert all(texts.count(name) == 2 for name in FINE)  # once on each axis, as text, not as paths
    assert all(texts.count(name) == 2 for name in COARSE)  # block names on the top and right edges
    svg = (tmp_path / "cm.svg").read_text()
    assert "pixelated" in svg  # the matrix keeps one pixel a cell and is not smoothed when zoomed


def test_superclass_names_sit_on_their_blocks(cm100):
    f2c = np.arange(100) // 5  # blocks of five consecutive classes
    fig = plots.confusion_heatmap(metrics.normalize_rows(cm100), FINE, groups=f2c, group_names=COARSE)
    top = [a for a in fig.axes[0].child_axes if a.get_xticklabels()][0]
    ticks = dict(zip([t.get_text() for t in top.get_xticklabels()], top.get_xticks()))
    assert ticks == {COARSE[k]: pytest.approx(5 * k + 2) for k in range(20)}


def test_thinning_is_still_possible(cm100):
    fig = plots.confusion_heatmap(metrics.normalize_rows(cm100), FINE, max_labels=25)
    assert len(fig.axes[0].get_xticklabels()) == 25


def test_mathtext_in_class_names_is_printed_not_parsed(tmp_path):
    names = ["$x^2$", "a$b", "50$ bill", r"\alpha"]
    cm = np.eye(4, dtype=np.int64) * 5 + 1
    fig = plots.confusion_heatmap(metrics.normalize_rows(cm), names, groups=np.array([0, 0, 1, 1]),
                                  group_names=["$g$", "h$"])
    plots.save(fig, tmp_path / "cm.png")  # mathtext would fail on the unbalanced "a$b"
    plots.save(plots.confusion_heatmap(metrics.normalize_rows(cm), names), tmp_path / "cm.svg")
    assert [n for n in names if n in svg_texts(tmp_path / "cm.svg")] == names  # verbatim, dollars kept
    acc = np.array([1.0, 0.5, 0.25, 0.0])
    ex = metrics.extreme_classes(acc, 2)
    plots.save(plots.class_extremes(acc, names, ex["best"], ex["worst"], ties=ex), tmp_path / "ex.png")
    plots.save(plots.errors_gallery(np.zeros((2, 32, 32, 3), np.uint8), names[:2], names[2:], [0.9, 0.8]),
               tmp_path / "gallery.png")


# --- best and worst classes ---------------------------------------------------------------------


def test_extreme_panels_never_repeat_a_class():
    for n_classes in (2, 3, 7, 10, 19, 20, 100):
        acc = np.round(np.random.default_rng(n_classes).random(n_classes), 1)  # many ties
        ex = metrics.extreme_classes(acc, 10)
        assert not set(ex["best"]) & set(ex["worst"])
        assert len(ex["best"]) == len(ex["worst"]) == min(10, n_classes // 2)
        # best really are the highest: nothing left out beats the lowest shown
        rest = np.setdiff1d(np.arange(n_classes), ex["best"])
        assert acc[rest].max() <= acc[ex["best"]].min()
        rest = np.setdiff1d(np.arange(n_classes), ex["worst"])
        assert acc[rest].min() >= acc[ex["worst"]].max()


def test_ties_at_the_cut_are_stated_and_drawn():
    acc = np.linspace(0.1, 0.9, 100)
    acc[:20] = 1.0  # 20 classes at 1.00, 10 places in the panel
    acc[50:53] = 0.0  # three at the bottom, all shown: no tie to state
    ex = metrics.extreme_classes(acc, 10)
    assert ex["best"].tolist() == list(range(10))  # by class index
    assert ex["best_tie"] == {"value": 1.0, "tied": 20, "shown": 10}
    assert ex["worst_tie"] is None and ex["n_classes"] == 100
    fig = plots.class_extremes(acc, FINE, ex["best"], ex["worst"], ties=ex, n_classes=ex["n_classes"])
    best_ax, worst_ax = fig.axes
    notes = [t.get_text() for t in best_ax.texts if "share" in t.get_text()]
    assert notes == ["hatched: 20 classes share 1.00, 10 shown (lowest class index first)"]
    assert all(p.get_hatch() for p in best_ax.patches)
    assert not any(p.get_hatch() for p in worst_ax.patches) and "of 100" in best_ax.get_title()
    best_names = {t.get_text() for t in best_ax.get_yticklabels()}
    assert best_names.isdisjoint(t.get_text() for t in worst_ax.get_yticklabels())


def test_classes_at_extremes_names_every_tied_class():
    acc = np.array([1.0, 0.2, np.nan, 1.0, 0.2, 0.5])
    best, worst = metrics.classes_at_extremes(acc)
    assert best.tolist() == [0, 3] and worst.tolist() == [1, 4]
    assert [x.tolist() for x in metrics.classes_at_extremes(np.array([np.nan]))] == [[], []]


# --- intervals over seeds -----------------------------------------------------------------------


def test_two_seed_interval_stays_in_the_metric_range():
    x = np.array([0.30, 0.98])  # the t interval is about [-3.68, 4.96]
    low, high = stats.t.interval(0.95, df=1, loc=x.mean(), scale=stats.sem(x))
    assert low < 0 and high > 1
    r = replicates.t_interval(x, bounds=(0.0, 1.0))
    assert (r["low"], r["high"]) == (0.0, 1.0) and r["truncated"]
    assert r["half"] == pytest.approx((high - low) / 2)  # the half-width stays the t one
    inside = replicates.t_interval([0.70, 0.72, 0.74], bounds=(0.0, 1.0))
    lo3, hi3 = stats.t.interval(0.95, df=2, loc=0.72, scale=stats.sem([0.70, 0.72, 0.74]))
    assert (inside["low"], inside["high"]) == pytest.approx((lo3, hi3)) and not inside["truncated"]


def test_seeds_summary_bounds_and_note_name_method_and_seeds():
    rows = replicates.seeds_summary([{"recipe": "b", "seed": s, "top1": v, "top5": v, "macro_f1": v, "ece": 0.01 + s}
                                     for s, v in enumerate([0.30, 0.98])])
    stat = {r["row"]: r for r in rows}
    for m in replicates.METRICS:
        assert 0.0 <= stat["ci95_low"][m] <= stat["mean"][m] <= stat["ci95_high"][m] <= 1.0
    assert stat["mean"]["n_seeds"] == 2
    note = stat["mean"]["note"]
    assert "t interval truncated to [0, 1]" in note and "2 seeds" in note and "top1" in note


def test_recipes_table_carries_the_note(tmp_path):
    rows = replicates.seeds_summary([{"recipe": "b", "seed": s, "top1": v, "top5": v, "macro_f1": v, "ece": 0.05}
                                     for s, v in enumerate([0.30, 0.98])])
    path = tmp_path / "seeds_summary.csv"
    from cifar100.files import write_csv
    write_csv(path, rows, replicates.SUMMARY_FIELDS)
    table = replicates.recipes_table([replicates.read_seeds_summary(path)])
    assert table[0]["n_seeds"] == 2 and table[0]["top1_ci95_low"] == 0.0 and table[0]["top1_ci95_high"] == 1.0
    assert "truncated to [0, 1]" in table[0]["note"] and "2 seeds" in table[0]["note"]


def test_recipes_figure_axis_seeds_and_counts():
    summary = {"top1": {"mean": [0.64, 0.62], "low": [0.0, 0.57], "high": [1.0, 0.67]}}
    points = {"top1": [[0.30, 0.98], [0.60, 0.62, 0.64]]}
    fig = plots.recipes_comparison(["baseline", "cosine"], summary, points, {"top1": "top-1"},
                                   replicates.interval_method(), n_seeds=[2, 3])
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert -0.03 < low <= 0.0 and 1.0 <= high < 1.03  # never the 1.75 of an untruncated interval
    assert [t.get_text() for t in ax.get_xticklabels()] == ["baseline\nn=2 seeds", "cosine\nn=3 seeds"]
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in dots) == 2 + 5  # two means, every seed
    assert "truncated to [0, 1]" in fig._suptitle.get_text()


# --- reliability diagram ------------------------------------------------------------------------


def _rects(ax):
    return [(p.get_x() + p.get_width() / 2, p.get_y(), p.get_y() + p.get_height(), p.get_hatch())
            for p in ax.patches]


def test_reliability_gap_spans_accuracy_to_confidence_both_ways():
    conf = np.array([0.3, 0.3, 0.3, 0.3, 0.9, 0.9, 0.9, 0.9])
    correct = np.array([True, True, True, False, True, False, False, False])  # 0.75 at 0.3, 0.25 at 0.9
    calib = metrics.calibration(conf, correct, n_bins=5)
    fig = plots.reliability_diagram(calib)
    ax = fig.axes[0]
    rects = _rects(ax)
    bars = [r for r in rects if not r[3]]
    gaps = [r for r in rects if r[3]]
    assert [v for r in bars for v in r[:3]] == pytest.approx([0.3, 0, 0.75, 0.9, 0, 0.25])  # blue up to accuracy
    assert [v for r in sorted(gaps) for v in r[:3]] == pytest.approx([0.3, 0.3, 0.75, 0.9, 0.25, 0.9])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["accuracy", "gap, overconfident bin", "gap, underconfident bin", "mean confidence of the bin",
                      "perfect calibration"]
    counts = fig.axes[1]
    assert [t.get_text() for t in counts.texts if t.get_text()] == ["4", "4"]


# --- training curves ----------------------------------------------------------------------------


def test_training_curves_integer_epochs_stepped_lr_and_selected_epoch():
    e = np.arange(1.0, 4.0)
    history = {"epoch": e, "lr": np.array([0.05, 0.05, 0.005]), "train_loss": 1 / e, "test_loss": 1.2 / e,
               "train_acc": e / 4, "test_acc": e / 5}
    fig = plots.training_curves(history, selected={"epoch": 2, "rule": "best_test"})
    loss, acc, lr = fig.axes
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert any(list(line.get_xdata()) == [2, 2] for line in ax.lines)  # the selected epoch
    stairs = lr.patches[0]
    assert stairs.get_data().values.tolist() == [0.05, 0.05, 0.005]
    assert stairs.get_data().edges.tolist() == [0, 1, 2, 3]  # epoch e's rate over [e - 1, e]
    assert lr.get_yticks().tolist() == [0.005, 0.05]
    assert [t.get_text() for t in lr.get_yticklabels()] == ["0.005", "0.05"]
    assert "selected: epoch 2 (best_test)" in [t.get_text() for t in loss.get_legend().get_texts()]


def test_seeds_curves_mark_each_selected_epoch():
    e = np.arange(1.0, 4.0)
    fig = plots.seeds_curves({"seed 0": (e, e / 4), "seed 1": (e, e / 5)}, selected={"seed 0": 3, "seed 1": 2})
    stars = [(line.get_xdata()[0], line.get_ydata()[0]) for line in fig.axes[0].lines
             if line.get_marker() == "*" and len(line.get_xdata())]
    assert stars == [(3, 0.75), (2, 0.4)]


# --- Grad-CAM -----------------------------------------------------------------------------------


def test_gradcam_figure_shows_randomised_maps_and_its_scale():
    imgs = [np.zeros((32, 32, 3), np.uint8)] * 3
    fig = plots.gradcam_pairs(imgs, imgs, ["t"] * 3, randomised=imgs, randomised_label="layer4 randomised")
    image_axes = [ax for ax in fig.axes if any(isinstance(a, AxesImage) for a in ax.get_children())]
    assert [ax.get_title() for ax in image_axes[:3]] == ["t", "Grad-CAM", "layer4 randomised"]
    assert len(image_axes) == 9
    bars = [ax for ax in fig.axes if ax.get_xlabel() == plots.CAM_SCALE_NOTE]
    assert len(bars) == 1 and bars[0].get_xlim() == (0.0, 1.0)


def test_correlation_summary_counts_dropped_and_cannot_cancel():
    rho = np.array([0.6, -0.6, np.nan, 0.2, np.nan])
    s = metrics.correlation_summary(rho)
    used = rho[np.isfinite(rho)]
    assert (s["n_images"], s["n_used"], s["n_dropped"]) == (5, 3, 2)
    assert s["mean"] == pytest.approx(used.mean()) and s["mean_abs"] == pytest.approx(np.abs(used).mean())
    assert s["median"] == pytest.approx(np.median(used)) and (s["min"], s["max"]) == (-0.6, 0.6)
    empty = metrics.correlation_summary([np.nan])
    assert empty["n_used"] == 0 and math.isnan(empty["mean_abs"])


# --- the report's headline ----------------------------------------------------------------------


def test_headline_states_intervals_seeds_selection_and_notebook_block(tmp_path):
    import json

    from cifar100.files import write_csv
    from helpers import load_script

    runs = []
    for seed, top1 in enumerate([0.30, 0.98]):
        p = tmp_path / f"summary{seed}.json"
        p.write_text(json.dumps({
            "recipe": "baseline", "seed": seed, "top1": top1, "top5": 0.99, "macro_f1": top1, "ece": 0.05,
            "selection": "best_test", "selected_epoch": 3 + seed,
            "notebook": {"overall_accuracy": top1, "macro_f1": top1 - 0.01, "weighted_f1": top1 - 0.02,
                         "best_class": "apple", "best_class_accuracy": 1.0, "best_classes_tied": ["apple", "bee"],
                         "worst_class": "worm", "worst_class_accuracy": 0.1, "worst_classes_tied": ["worm"]}}))
        runs.append(p)
    rows = replicates.seeds_summary([replicates.read_summary(p) for p in runs])
    write_csv(tmp_path / "seeds_summary.csv", rows, replicates.SUMMARY_FIELDS)
    out = tmp_path / "headline.rst"
    table = replicates.recipes_table([replicates.read_seeds_summary(tmp_path / "seeds_summary.csv")])
    write_csv(tmp_path / "recipes_summary.csv", table)  # as compare.py writes it (no churn: cells empty)
    load_script("headline").main(["--recipes-summary", str(tmp_path / "recipes_summary.csv"), "--runs",
                                  *map(str, runs), "--headline", str(out)])
    text = out.read_text()
    assert "0.6400 [0.0000, 1.0000]" in text  # top-1 of two seeds: mean, truncated t interval
    assert "t interval truncated to [0, 1]" in text and "best_test" in text
    line = [x for x in text.splitlines() if x.startswith("baseline") and "0.6400" in x][0]
    assert line.split()[1] == "2"  # seeds
    assert "apple 1.00 (+1 tied)" in text and "worm 0.10" in text and "4 (best_test)" in text
    from docutils.core import publish_parts
    html = publish_parts(text, writer_name="html")["html_body"]
    assert html.count("<table") == 2 and "System Message" not in html  # valid RST: two tables
