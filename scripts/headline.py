#!/usr/bin/env python
r"""The headline numbers as a reStructuredText fragment: the report's first page includes it.

    python scripts/headline.py --recipes-summary results/recipes_summary.csv \
        --runs results/baseline/seed0/summary.json results/baseline/seed1/summary.json \
        --headline results/headline.rst

Two tables: per recipe (recipes_summary.csv, written by compare.py), top-1, top-5, macro F1 and ECE
as mean [95% interval] with the number of seeds, the mean churn between seeds and the ensemble's
top-1 gain over the mean single seed, each with its interval and n, and the selection rule; per run,
the seed notebook's "expected
results" (overall accuracy, macro F1, weighted F1, best and worst class) and the selected epoch,
so the two can be compared at a glance.
"""

import argparse
import math

from cifar100 import intervals, readers, replicates, rst
from cifar100.cli import run_cli
from cifar100.exceptions import DataError
from cifar100.files import write_text

METRIC_NAMES = {"top1": "top-1", "top5": "top-5", "macro_f1": "macro F1", "ece": "ECE"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes-summary", required=True,
                   help="recipes_summary.csv, written by compare.py (required)")
    p.add_argument("--runs", nargs="+", required=True,
                   help="summary.json of every run, written by report.py (required)")
    p.add_argument("--headline", required=True, help="RST fragment to write, e.g. results/headline.rst (required)")
    return p.parse_args(argv)


def rst_table(header: list[str], rows: list[list[str]]) -> str:
    """A reStructuredText grid-free 'simple table' of strings."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    rule = "  ".join("=" * w for w in widths)

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([rule, line(header), rule, *map(line, rows), rule])


def interval(row: dict, key: str, low: str | None = None, high: str | None = None) -> str:
    """``row[key]`` with its interval in brackets (none where the cells are empty, e.g. one seed)."""
    mean, low, high = row[key], row[low or f"{key}_ci95_low"], row[high or f"{key}_ci95_high"]
    if math.isnan(mean):
        return "none"
    if math.isnan(low):
        return f"{mean:.4f}"
    return f"{mean:.4f} [{low:.4f}, {high:.4f}]"


def count(n: float) -> str:
    return "" if math.isnan(n) else f" ({n:.0f})"


def run_row(s: dict, path) -> list[str]:
    """One run's row from its summary.json ``s`` (read from ``path``)."""
    nb = s.get("notebook") if isinstance(s, dict) else None
    if not isinstance(nb, dict):
        raise DataError(f"{path}: no 'notebook' block (written by report.py)")

    def named(key):
        tied = nb.get(f"{key}_classes_tied") or []
        more = f" (+{len(tied) - 1} tied)" if len(tied) > 1 else ""
        return f"{rst.text(nb[f'{key}_class'])} {nb[f'{key}_class_accuracy']:.2f}{more}"

    # Class names come from the dataset and every string from a file: written as plain text (rst.text)
    return [rst.text(s.get("recipe", "?")), rst.text(s.get("seed", "?")), f"{nb['overall_accuracy']:.4f}",
            f"{nb['macro_f1']:.4f}", f"{nb['weighted_f1']:.4f}", named("best"), named("worst"),
            f"{rst.text(s.get('selected_epoch', '?'))} ({rst.text(s.get('selection', '?'))})"]


def main(argv=None):
    a = parse_args(argv)
    recipes = replicates.read_recipes_summary(a.recipes_summary)
    summaries = [(p, readers.read_run_summary(p)) for p in a.runs]  # checked whole
    runs = [run_row(s, p) for p, s in summaries]
    selection = {}  # recipe -> the selection rules its runs used (one, unless the config changed)
    for _, s in summaries:
        selection.setdefault(str(s.get("recipe")), set()).add(str(s.get("selection")))
    recipe_rows = [[rst.text(r["recipe"]), str(r["n_seeds"]),
                    *(interval(r, f"{m}_mean", f"{m}_ci95_low", f"{m}_ci95_high") for m in replicates.METRICS),
                    f"{interval(r, 'churn_mean', 'churn_ci95_low', 'churn_ci95_high')}{count(r['churn_n_pairs'])}",
                    f"{interval(r, 'ensemble_top1_gain')}{count(r['ensemble_n_images'])}",
                    ", ".join(rst.text(x) for x in sorted(selection.get(r["recipe"], [])))] for r in recipes]
    text = "\n\n".join([
        "Headline results\n================",
        f"Mean over seeds with the {intervals.method()} in brackets (none with one seed). "
        f"{intervals.CONVENTION[0].upper()}{intervals.CONVENTION[1:]}. ECE: expected calibration error, lower is "
        "better. Churn: the share of test "
        "images on which two seeds predict different classes, mean over the seed pairs (their number in "
        "parentheses) with a jackknife interval over seeds. Ensemble gain: top-1 of the mean softmax of all seeds "
        "minus the seeds' mean top-1, with a paired t interval over the test images (their number in parentheses). "
        "best_test selects the epoch with the best test accuracy, as the notebook does, which makes the test "
        "numbers optimistic (selection_optimism.csv says by how much).",
        rst_table(["recipe", "seeds", *METRIC_NAMES.values(), "churn (pairs)", "ensemble gain (images)",
                   "selection"], recipe_rows),
        "Per run, as in the notebook's expected results (best and worst class by per-class accuracy):",
        rst_table(["recipe", "seed", "accuracy", "macro F1", "weighted F1", "best class", "worst class",
                   "selected epoch"], runs),
    ]) + "\n"
    write_text(a.headline, text)
    print(f"wrote {a.headline}: {len(recipes)} recipes, {len(runs)} runs")


if __name__ == "__main__":
    run_cli(main)
