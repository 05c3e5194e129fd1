#!/usr/bin/env python
"""Training curves from history.csv: loss, accuracy and learning rate per epoch.

    python scripts/curves.py --history results/baseline/seed0/history.csv \
        --figure results/baseline/seed0/training_curves.png

history.csv has one row per epoch (epoch,lr,train_loss,train_acc,test_loss,test_acc,val_loss,
val_acc,seconds,images_per_s); val_* are empty unless a validation split was held out, and are
then left out of the figure.
"""

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from cifar100 import plots
from cifar100.cli import run_cli
from cifar100.exceptions import DataError
from cifar100.files import read_json

REQUIRED = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]
OPTIONAL = ["val_loss", "val_acc"]


def read_history(path) -> dict[str, np.ndarray]:
    """Columns of history.csv as float arrays (empty cells -> nan); DataError on a bad file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DataError(f"{path}: missing column {missing[0]!r} (found {header})")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path}: no epochs recorded")
    columns = {}
    for name in REQUIRED + [c for c in OPTIONAL if c in header]:
        values = []
        for line, row in enumerate(rows, start=2):
            cell = (row.get(name) or "").strip()
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                raise DataError(f"{path}:{line}: column {name!r} is not a number: {cell!r}") from None
        columns[name] = np.array(values)
    if not np.isfinite(columns["epoch"]).all():
        raise DataError(f"{path}: every row needs an epoch number")
    return columns


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--history", required=True, help="history.csv written by train.py (required)")
    p.add_argument("--metrics", help="metrics.json written by evaluate.py: marks the selected epoch (default: none)")
    p.add_argument("--figure", required=True, help="figure to write, e.g. training_curves.png (required)")
    return p.parse_args(argv)


def read_selected(path) -> dict | None:
    """{"epoch", "rule"} of the evaluated model from metrics.json, or None without a file."""
    if path is None:
        return None
    m = read_json(path)
    if not isinstance(m, dict) or "selected_epoch" not in m:
        raise DataError(f"{path}: expected a JSON object with 'selected_epoch'")
    return {"epoch": m["selected_epoch"], "rule": m.get("selection", "")}


def main(argv=None):
    a = parse_args(argv)
    history = read_history(a.history)
    plots.save(plots.training_curves(history, selected=read_selected(a.metrics)), a.figure)
    epochs = len(history["epoch"])
    print(f"{a.figure}: {epochs} epochs, final test accuracy {history['test_acc'][-1]:.4f}")


if __name__ == "__main__":
    run_cli(main)
