#!/usr/bin/env python
r"""Confusion analysis: fine and superclass confusion matrices, per-class accuracy, best/worst classes.

    python scripts/confusion.py --predictions results/baseline/seed0/predictions.npz --data-dir data \
        --matrix results/baseline/seed0/confusion_matrix.png --per-class results/baseline/seed0/per_class_accuracy.csv \
        --class-extremes results/baseline/seed0/class_extremes.png \
        --superclass results/baseline/seed0/superclass_confusion.png \
        --summary results/baseline/seed0/confusion_summary.json

Writes the five files it is given:
  confusion_matrix.png      row-normalised confusion, classes grouped by superclass, no cell values
  per_class_accuracy.csv    class_index,class_name,superclass,accuracy,support (superclass empty
                            when the dataset has none; accuracy nan for a class absent from the test set)
  class_extremes.png        the 10 most and least accurate classes (fewer with few classes)
  superclass_confusion.png  superclass confusion with values (a note when meta has no superclasses)
  confusion_summary.json    errors, the spread of class accuracy and the best and worst classes
                            (top-1, superclass top-1 and the semantic share, the fraction of errors
                            that stay inside the true superclass, are in report.py's summary.json)
"""

import argparse
import numpy as np

from cifar100 import config, metrics, plots
from cifar100.cli import run_cli
from cifar100.files import write_csv, write_json
from cifar100.predictions import load_with_test_set

PER_CLASS_FIELDS = ["class_index", "class_name", "superclass", "accuracy", "support"]
EXTREMES = 10  # classes in each bar chart of class_extremes.png


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, help="predictions.npz written by evaluate.py (required)")
    p.add_argument("--data-dir", default=config.default("data_dir"),
                   help="folder holding cifar-100-python/ (default: %(default)s)")
    p.add_argument("--matrix", required=True, help="confusion matrix figure to write (required)")
    p.add_argument("--matrix-vector", help="the same figure as SVG or PDF, zoomable without loss (default: none)")
    p.add_argument("--per-class", required=True, help="per-class accuracy CSV to write (required)")
    p.add_argument("--class-extremes", required=True, help="most/least accurate classes figure (required)")
    p.add_argument("--superclass", required=True, help="superclass confusion figure to write (required)")
    p.add_argument("--summary", required=True, help="confusion summary JSON to write (required)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    r = load_with_test_set(a.predictions, a.data_dir)
    fine_names, coarse_names, fine_to_coarse, labels, preds = (r.fine_names, r.coarse_names, r.fine_to_coarse,
                                                               r.labels, r.preds)
    num_classes = len(fine_names)
    cm = metrics.confusion_matrix(labels, preds, num_classes)
    accuracy, support = metrics.per_class_accuracy(cm)
    # The figure's lists, also the summary's: disjoint, ties by class index and said so. Every class
    # tied at the extreme accuracy is in report.py's summary.json (the notebook block).
    extremes = metrics.extreme_classes(accuracy, EXTREMES)
    best, worst = extremes["best"], extremes["worst"]

    def superclass(i):
        return coarse_names[fine_to_coarse[i]] if fine_to_coarse is not None else ""

    write_csv(a.per_class, [
        {"class_index": i, "class_name": fine_names[i], "superclass": superclass(i),
         "accuracy": float(accuracy[i]), "support": int(support[i])} for i in range(num_classes)
    ], PER_CLASS_FIELDS)

    order = metrics.superclass_order(fine_to_coarse, num_classes)
    for path in filter(None, (a.matrix, a.matrix_vector)):
        plots.save(plots.confusion_heatmap(metrics.normalize_rows(cm), fine_names, order=order,
                                           groups=fine_to_coarse, group_names=coarse_names), path)
    plots.save(plots.class_extremes(accuracy, fine_names, extremes["best"], extremes["worst"], ties=extremes,
                                    n_classes=extremes["n_classes"]), a.class_extremes)
    coarse_cm = None
    if fine_to_coarse is not None:
        coarse_cm = metrics.coarse_confusion(cm, fine_to_coarse, len(coarse_names))
    plots.save(plots.superclass_heatmap(None if coarse_cm is None else metrics.normalize_rows(coarse_cm),
                                        coarse_names), a.superclass)

    present = ~np.isnan(accuracy)  # classes with test images
    summary = {
        "n": int(len(labels)),
        "num_classes": num_classes,
        "num_superclasses": len(coarse_names) if fine_to_coarse is not None else None,
        "n_errors": int((preds != labels).sum()),
        "mean_class_accuracy": float(accuracy[present].mean()) if present.any() else None,
        "min_class_accuracy": float(accuracy[worst[0]]) if len(worst) else None,
        "max_class_accuracy": float(accuracy[best[0]]) if len(best) else None,
        "best_classes": [fine_names[i] for i in best],
        "worst_classes": [fine_names[i] for i in worst],
        "best_tie": extremes["best_tie"],
        "worst_tie": extremes["worst_tie"],
        "ties_note": "best_classes/worst_classes (the class_extremes figure's) share no class and break ties "
                     "by class index; best_tie/worst_tie say how many classes share the last one's accuracy "
                     "when not all are shown; summary.json's notebook block lists every class at each extreme",
    }
    write_json(a.summary, metrics.json_safe(summary))
    print(f"{a.summary}: {summary['n_errors']} errors over {num_classes} classes")


if __name__ == "__main__":
    run_cli(main)
