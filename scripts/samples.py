#!/usr/bin/env python
"""A grid of test images titled with true and predicted class and confidence (green right, red wrong).

    python scripts/samples.py --predictions results/baseline/seed0/predictions.npz --data-dir data \
        --n 16 --figure results/baseline/seed0/samples.png

The images are drawn at random (fixed --seed) so the grid shows typical cases, not just the
first rows of the test file.
"""

import argparse

import numpy as np

from cifar100 import config, data, metrics, plots
from cifar100.cli import positive_int, run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, help="predictions.npz written by evaluate.py (required)")
    p.add_argument("--data-dir", default=config.default("data_dir"),
                   help="folder holding cifar-100-python/ (default: %(default)s)")
    p.add_argument("--n", type=positive_int, default=config.default("analysis", "samples"),
                   help="images to show, capped at the test set size (default: %(default)s)")
    p.add_argument("--cols", type=positive_int, default=8, help="images per row (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random choice of images (default: %(default)s)")
    p.add_argument("--figure", required=True, help="figure to write, e.g. samples.png (required)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    test, fine_names, _, _ = data.load_test(a.data_dir)
    logits, labels = metrics.load_predictions(a.predictions, test.labels, len(fine_names))
    probs = metrics.softmax(logits)
    preds, confidence = probs.argmax(axis=1), probs.max(axis=1)
    n = min(a.n, len(labels))
    idx = np.sort(np.random.default_rng(a.seed).choice(len(labels), size=n, replace=False))
    fig = plots.samples_grid(test.images[idx], [fine_names[i] for i in labels[idx]],
                             [fine_names[i] for i in preds[idx]], confidence[idx],
                             preds[idx] == labels[idx], cols=a.cols)
    plots.save(fig, a.figure)
    print(f"{a.figure}: {n} test images, {int((preds[idx] == labels[idx]).sum())} predicted correctly")


if __name__ == "__main__":
    run_cli(main)
