#!/usr/bin/env python
r"""A grid of test images titled with true and predicted class and confidence (green right, red wrong).

    python scripts/samples.py --predictions results/baseline/seed0/predictions.npz --data-dir data \
        --n 16 --figure results/baseline/seed0/samples.png

The images are drawn at random (the same ones for every run) so the grid shows typical cases,
not just the first rows of the test file.
"""

import argparse

import numpy as np

from cifar100 import config, plots
from cifar100.cli import positive_int, run_cli
from cifar100.predictions import load_with_test_set

COLS = 8  # images per row
SEED = 0  # of the random choice of images: the same test images in every run, so runs compare


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, help="predictions.npz written by evaluate.py (required)")
    p.add_argument("--data-dir", default=config.default("data_dir"),
                   help="folder holding cifar-100-python/ (default: %(default)s)")
    p.add_argument("--n", type=positive_int, default=config.default("analysis", "samples"),
                   help="images to show, capped at the test set size (default: %(default)s)")
    p.add_argument("--figure", required=True, help="figure to write, e.g. samples.png (required)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    r = load_with_test_set(a.predictions, a.data_dir)
    test, fine_names, labels, preds, confidence = r.test, r.fine_names, r.labels, r.preds, r.confidence
    n = min(a.n, len(labels))
    idx = np.sort(np.random.default_rng(SEED).choice(len(labels), size=n, replace=False))
    fig = plots.samples_grid(test.images[idx], [fine_names[i] for i in labels[idx]],
                             [fine_names[i] for i in preds[idx]], confidence[idx],
                             preds[idx] == labels[idx], cols=COLS)
    plots.save(fig, a.figure)
    print(f"{a.figure}: {n} test images, {int((preds[idx] == labels[idx]).sum())} predicted correctly")


if __name__ == "__main__":
    run_cli(main)
