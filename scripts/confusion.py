#!/usr/bin/env python
"""Confusion analysis: fine and superclass confusion matrices, per-class accuracy, best/worst classes.

    python scripts/confusion.py --predictions results/baseline/seed0/predictions.npz --data-dir data \
        --matrix results/baseline/seed0/confusion_matrix.png --per-class results/baseline/seed0/per_class_accuracy.csv \
        --class-extremes results/baseline/seed0/class_extremes.png \
        --superclass results/baseline/seed0/superclass_confusion.png \
        --summary results/baseline/seed0/confusion_summary.json

Writes the five files it is given:
  confusion_matrix.png      row-normalised confusion, classes grouped by superclass, no cell values
  per_class_accuracy.csv    class_index,class_name,superclass,accuracy,support (superclass empty
                            when the dataset has none; accuracy nan for a class absent from the test set)
  class_extremes.png        the --extremes most and least accurate classes
  superclass_confusion.png  superclass confusion with values (a note when meta has no superclasses)
  confusion_summary.json    top1, top5, class accuracy spread, superclass accuracy and the semantic
                            share: the fraction of errors that stay inside the true superclass
                            (null without superclasses or without errors)
"""

import argparse
import numpy as np

from cifar100 import config, data, metrics, plots
from cifar100.cli import positive_int, run_cli
from cifar100.files import write_csv, write_json

PER_CLASS_FIELDS = ["class_index", "class_name", "superclass", "accuracy", "support"]


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
    p.add_argument("--extremes", type=positive_int, default=10,
                   help="classes in each bar chart of class_extremes.png (default: %(default)s)")
    p.add_argument("--max-tick-labels", type=positive_int, default=None,
                   help="most class names per axis of the confusion matrix (default: every class)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    test, fine_names, coarse_names, fine_to_coarse = data.load_test(a.data_dir)
    logits, labels = metrics.load_predictions(a.predictions, test.labels, len(fine_names))
    num_classes = len(fine_names)
    preds = logits.argmax(axis=1)
    cm = metrics.confusion_matrix(labels, preds, num_classes)
    accuracy, support = metrics.per_class_accuracy(cm)
    best, worst = metrics.best_and_worst(accuracy, a.extremes)
    extremes = metrics.extreme_classes(accuracy, a.extremes)  # the figure's: disjoint panels, ties stated
    top, bottom = metrics.classes_at_extremes(accuracy)

    def superclass(i):
        return coarse_names[fine_to_coarse[i]] if fine_to_coarse is not None else ""

    write_csv(a.per_class, [
        {"class_index": i, "class_name": fine_names[i], "superclass": superclass(i),
         "accuracy": float(accuracy[i]), "support": int(support[i])} for i in range(num_classes)
    ], PER_CLASS_FIELDS)

    order = metrics.superclass_order(fine_to_coarse, num_classes)
    for path in filter(None, (a.matrix, a.matrix_vector)):
        plots.save(plots.confusion_heatmap(metrics.normalize_rows(cm), fine_names, order=order,
                                           groups=fine_to_coarse, group_names=coarse_names,
                                           max_labels=a.max_tick_labels), path)
    plots.save(plots.class_extremes(accuracy, fine_names, extremes["best"], extremes["worst"], ties=extremes,
                                    n_classes=extremes["n_classes"]), a.class_extremes)
    coarse_cm = None
    if fine_to_coarse is not None:
        coarse_cm = metrics.coarse_confusion(cm, fine_to_coarse, len(coarse_names))
    plots.save(plots.superclass_heatmap(None if coarse_cm is None else metrics.normalize_rows(coarse_cm),
                                        coarse_names), a.superclass)

    semantic = metrics.semantic_share(labels, preds, fine_to_coarse)
    present = ~np.isnan(accuracy)  # classes with test images
    summary = {
        "n": int(len(labels)),
        "num_classes": num_classes,
        "num_superclasses": len(coarse_names) if fine_to_coarse is not None else None,
        "top1": metrics.topk_accuracy(logits, labels, 1),
        "top5": metrics.topk_accuracy(logits, labels, 5),
        "n_errors": int((preds != labels).sum()),
        "mean_class_accuracy": float(accuracy[present].mean()) if present.any() else None,
        "min_class_accuracy": float(accuracy[worst[0]]) if len(worst) else None,
        "max_class_accuracy": float(accuracy[best[0]]) if len(best) else None,
        "best_classes": [fine_names[i] for i in best],
        "worst_classes": [fine_names[i] for i in worst],
        "classes_at_max_accuracy": [fine_names[i] for i in top],
        "classes_at_min_accuracy": [fine_names[i] for i in bottom],
        "ties_note": "best_classes/worst_classes break ties by class index; classes_at_max/min_accuracy "
                     "list every class at the extreme value",
        "superclass_top1": metrics.superclass_accuracy(labels, preds, fine_to_coarse),
        "semantic_share": semantic,
        "semantic_share_note": "share of errors whose predicted class is in the true class's superclass",
    }
    write_json(a.summary, metrics.json_safe(summary))
    shown = "n/a" if np.isnan(semantic) else f"{semantic:.3f}"
    print(f"{a.summary}: top-1 {summary['top1']:.4f}, {summary['n_errors']} errors, semantic share {shown}")


if __name__ == "__main__":
    run_cli(main)
