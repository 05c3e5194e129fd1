#!/usr/bin/env python
r"""Training curves from history.csv: loss, accuracy and learning rate per epoch.

    python scripts/curves.py --history results/baseline/seed0/history.csv \
        --figure results/baseline/seed0/training_curves.png

history.csv has one row per epoch (epoch,lr,train_loss,train_acc,test_loss,test_acc,val_loss,
val_acc,seconds,images_per_s); val_* are empty unless a validation split was held out, and are
then left out of the figure.
"""

import argparse


from cifar100 import plots, readers
from cifar100.cli import run_cli
from cifar100.exceptions import DataError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--history", required=True, help="history.csv written by train.py (required)")
    p.add_argument("--metrics", help="metrics.json written by evaluate.py: marks the selected epoch (default: none)")
    p.add_argument("--figure", required=True, help="figure to write, e.g. training_curves.png (required)")
    return p.parse_args(argv)


def read_selected(path, history: dict, history_path) -> dict | None:
    """{"epoch", "rule"} of the evaluated model from metrics.json, or None without a file. The
    history must hold every epoch the run trained (a file cut at a row boundary does not)."""
    if path is None:
        return None
    m = readers.read_metrics(path)
    epochs = len(history["epoch"])
    trained = ((m.get("run_spec") or {}).get("recipe") or {}).get("epochs")
    if isinstance(trained, int) and trained != epochs:
        raise DataError(f"{history_path}: {epochs} epochs, but {path} describes a run of {trained}")
    if m["selected_epoch"] > epochs:
        raise DataError(f"{path}: selected epoch {m['selected_epoch']} is not in {history_path} ({epochs} epochs)")
    return {"epoch": m["selected_epoch"], "rule": m["selection"]}


def main(argv=None):
    a = parse_args(argv)
    history = readers.read_history(a.history)
    plots.save(plots.training_curves(history, selected=read_selected(a.metrics, history, a.history)), a.figure)
    epochs = len(history["epoch"])
    print(f"{a.figure}: {epochs} epochs, final test accuracy {history['test_acc'][-1]:.4f}")


if __name__ == "__main__":
    run_cli(main)
