#!/usr/bin/env python
r"""Error analysis: the most confident mistakes, the most frequent confusions, confidence of right vs wrong.

    python scripts/errors.py --predictions results/baseline/seed0/predictions.npz --data-dir data \
        --gallery-size 24 --top-pairs 30 --gallery results/baseline/seed0/errors_gallery.png \
        --pairs results/baseline/seed0/confusion_pairs.csv --histogram results/baseline/seed0/confidence_histogram.png \
        --summary results/baseline/seed0/errors_summary.json

Writes the four files it is given:
  errors_gallery.png        the --gallery-size wrong predictions with the highest confidence
  confusion_pairs.csv       true_index,true_name,pred_index,pred_name,count for the --top-pairs most
                            frequent (true, predicted) errors, most frequent first (fewer rows if
                            fewer distinct errors occur)
  confidence_histogram.png  top-1 confidence of correct and of wrong predictions, means marked
  errors_summary.json       mean confidence of correct and wrong predictions, their difference and
                            the overconfidence gap (mean confidence minus accuracy)
"""

import argparse
from cifar100 import config, metrics, plots
from cifar100.cli import positive_int, run_cli
from cifar100.files import write_csv, write_json
from cifar100.predictions import load_with_test_set

PAIR_FIELDS = ["true_index", "true_name", "pred_index", "pred_name", "count"]
COLS = 8  # images per gallery row
BINS = 20  # of the confidence histogram: 0.05 wide


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, help="predictions.npz written by evaluate.py (required)")
    p.add_argument("--data-dir", default=config.default("data_dir"),
                   help="folder holding cifar-100-python/ (default: %(default)s)")
    p.add_argument("--gallery-size", type=positive_int, default=config.default("analysis", "gallery_size"),
                   help="wrong predictions shown in errors_gallery.png (default: %(default)s)")
    p.add_argument("--top-pairs", type=positive_int, default=config.default("analysis", "top_pairs"),
                   help="most rows of confusion_pairs.csv (default: %(default)s)")
    p.add_argument("--gallery", required=True, help="gallery figure to write (required)")
    p.add_argument("--pairs", required=True, help="confusion pairs CSV to write (required)")
    p.add_argument("--histogram", required=True, help="confidence histogram figure to write (required)")
    p.add_argument("--summary", required=True, help="errors summary JSON to write (required)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    r = load_with_test_set(a.predictions, a.data_dir)
    test, fine_names, labels, preds, confidence, correct = (r.test, r.fine_names, r.labels, r.preds, r.confidence,
                                                            r.correct)

    worst = metrics.most_confident_errors(confidence, correct, a.gallery_size)
    plots.save(plots.errors_gallery(test.images[worst], [fine_names[i] for i in labels[worst]],
                                    [fine_names[i] for i in preds[worst]], confidence[worst], cols=COLS),
               a.gallery)

    cm = metrics.confusion_matrix(labels, preds, len(fine_names))
    pairs = metrics.top_confusion_pairs(cm, a.top_pairs)
    write_csv(a.pairs, [
        {"true_index": t, "true_name": fine_names[t], "pred_index": p, "pred_name": fine_names[p], "count": c}
        for t, p, c in pairs
    ], PAIR_FIELDS)

    plots.save(plots.confidence_histogram(confidence[correct], confidence[~correct], bins=BINS),
               a.histogram)

    summary = metrics.confidence_split(confidence, correct)
    summary["overconfidence_gap_note"] = "mean top-1 confidence minus accuracy; > 0 means overconfident"
    summary["gallery_size"] = int(len(worst))
    summary["top_pair"] = ({"true_name": fine_names[pairs[0][0]], "pred_name": fine_names[pairs[0][1]],
                            "count": pairs[0][2]} if pairs else None)
    write_json(a.summary, metrics.json_safe(summary))
    print(f"{a.summary}: {summary['n_wrong']} errors; mean confidence correct "
          f"{summary['mean_confidence_correct']:.3f}, wrong {summary['mean_confidence_wrong']:.3f}")


if __name__ == "__main__":
    run_cli(main)
