#!/usr/bin/env python
r"""Per-class classification report, calibration (ECE, reliability diagram) and the run's summary.json.

    python scripts/report.py --predictions results/baseline/seed0/predictions.npz \
        --metrics results/baseline/seed0/metrics.json --data-dir data --ece-bins 15 \
        --report-csv results/baseline/seed0/classification_report.csv \
        --report-json results/baseline/seed0/classification_report.json \
        --report-txt results/baseline/seed0/classification_report.txt \
        --reliability results/baseline/seed0/reliability_diagram.png \
        --summary results/baseline/seed0/summary.json

Writes the five files it is given:
  classification_report.csv   class_index,class_name,precision,recall,f1,support per class, then
                              rows "macro avg" and "weighted avg" (class_index empty)
  classification_report.json  the same numbers: {"classes": [...], "accuracy", "macro avg", "weighted avg"}
  classification_report.txt   scikit-learn's printed report, with top-1, top-5 and ECE
  reliability_diagram.png     accuracy per confidence bin against the diagonal
  summary.json                everything in metrics.json plus macro/weighted precision, recall and
                              F1, ECE, mean confidence and superclass numbers, and top1_tta and
                              tta_gain (flip test-time augmentation, from logits_tta); the replicate
                              aggregation reads top1, top5, macro_f1 and ece from it
"""

import argparse
from cifar100 import config, metrics, plots, readers
from cifar100.cli import positive_int, run_cli
from cifar100.exceptions import DataError
from cifar100.files import write_csv, write_json, write_text
from cifar100.predictions import load_tta_logits, load_with_test_set

REPORT_FIELDS = ["class_index", "class_name", "precision", "recall", "f1", "support"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, help="predictions.npz written by evaluate.py (required)")
    p.add_argument("--metrics", required=True, help="metrics.json written by evaluate.py (required)")
    p.add_argument("--data-dir", default=config.default("data_dir"),
                   help="folder holding cifar-100-python/ (default: %(default)s)")
    p.add_argument("--ece-bins", type=positive_int, default=config.default("analysis", "ece_bins"),
                   help="equal-width confidence bins for ECE and the diagram (default: %(default)s)")
    p.add_argument("--report-csv", required=True, help="classification report CSV to write (required)")
    p.add_argument("--report-json", required=True, help="classification report JSON to write (required)")
    p.add_argument("--report-txt", required=True, help="classification report text to write (required)")
    p.add_argument("--reliability", required=True, help="reliability diagram to write (required)")
    p.add_argument("--summary", required=True, help="run summary JSON to write (required)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    run_metrics = readers.read_metrics(a.metrics)
    r = load_with_test_set(a.predictions, a.data_dir)
    fine_names, fine_to_coarse, logits, labels = r.fine_names, r.fine_to_coarse, r.logits, r.labels
    if (run_metrics["n"], run_metrics["num_classes"]) != logits.shape:
        raise DataError(f"{a.metrics}: describes {run_metrics['n']} test images of {run_metrics['num_classes']} "
                        f"classes, but {a.predictions} holds {logits.shape[0]} of {logits.shape[1]}: "
                        "files of different runs")
    preds, confidence, correct = r.preds, r.confidence, r.correct

    report = metrics.classification_report(labels, preds, fine_names)
    averages = [{"class_index": "", "class_name": name, **report[name]} for name in ("macro avg", "weighted avg")]
    write_csv(a.report_csv, report["classes"] + averages, REPORT_FIELDS)
    write_json(a.report_json, {k: v for k, v in report.items() if k != "text"})

    calib = metrics.calibration(confidence, correct, a.ece_bins)
    plots.save(plots.reliability_diagram(calib), a.reliability)

    # metrics.json (which model: recipe, seed, selection, provenance) first; every number is
    # computed here from the predictions.
    summary = dict(run_metrics)
    for k in (1, 5):
        summary[f"top{k}"] = metrics.topk_accuracy(logits, labels, k)
    macro, weighted = report["macro avg"], report["weighted avg"]
    summary.update({
        "macro_precision": macro["precision"], "macro_recall": macro["recall"], "macro_f1": macro["f1"],
        "weighted_precision": weighted["precision"], "weighted_recall": weighted["recall"],
        "weighted_f1": weighted["f1"],
        "ece": calib["ece"], "ece_bins": a.ece_bins,
        "mean_confidence": float(confidence.mean()),
        "superclass_top1": metrics.superclass_accuracy(labels, preds, fine_to_coarse),
        "semantic_share": metrics.semantic_share(labels, preds, fine_to_coarse),
    })
    tta = load_tta_logits(a.predictions, logits)
    if tta is not None:  # flip test-time augmentation, beside the plain evaluation so its gain shows
        summary["top1_tta"] = metrics.topk_accuracy(tta, labels, 1)
        summary["tta_gain"] = summary["top1_tta"] - summary["top1"]
    # The seed notebook's "expected results" block, key for key, so the two compare at a glance.
    # Best/worst class by per-class accuracy; every class tied at the extreme is listed.
    accuracy, _ = metrics.per_class_accuracy(metrics.confusion_matrix(labels, preds, len(fine_names)))
    top, bottom = metrics.classes_at_extremes(accuracy)
    summary["notebook"] = {
        "overall_accuracy": summary["top1"], "macro_f1": macro["f1"], "weighted_f1": weighted["f1"],
        "best_class": fine_names[top[0]] if len(top) else None,
        "best_class_accuracy": float(accuracy[top[0]]) if len(top) else None,
        "best_classes_tied": [fine_names[i] for i in top],
        "worst_class": fine_names[bottom[0]] if len(bottom) else None,
        "worst_class_accuracy": float(accuracy[bottom[0]]) if len(bottom) else None,
        "worst_classes_tied": [fine_names[i] for i in bottom],
    }
    write_json(a.summary, metrics.json_safe(summary))

    text = (report["text"].rstrip("\n") + "\n\n"
            f"top-1 accuracy {summary['top1']:.4f}\ntop-5 accuracy {summary['top5']:.4f}\n"
            f"expected calibration error {calib['ece']:.4f} ({a.ece_bins} equal-width bins)\n")
    write_text(a.report_txt, text)
    print(f"{a.summary}: macro F1 {macro['f1']:.4f}, ECE {calib['ece']:.4f}")


if __name__ == "__main__":
    run_cli(main)
