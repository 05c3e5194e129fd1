#!/usr/bin/env python
"""The headline numbers as a reStructuredText fragment: the report's first page includes it.

    python scripts/headline.py --seeds-summaries results/baseline/seeds_summary.csv \
        --runs results/baseline/seed0/summary.json results/baseline/seed1/summary.json \
        --headline results/headline.rst

Two tables: per recipe, top-1, top-5, macro F1 and ECE as mean [95% t interval truncated to
[0, 1]] with the number of seeds and the selection rule; per run, the seed notebook's "expected
results" (overall accuracy, macro F1, weighted F1, best and worst class) and the selected epoch,
so the two can be compared at a glance.
"""

import argparse
import math

from cifar100 import replicates
from cifar100.cli import run_cli
from cifar100.exceptions import DataError
from cifar100.files import read_json, write_text

METRIC_NAMES = {"top1": "top-1", "top5": "top-5", "macro_f1": "macro F1", "ece": "ECE"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds-summaries", nargs="+", required=True,
                   help="seeds_summary.csv of every recipe, written by aggregate.py (required)")
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


def interval(stats: dict, m: str) -> str:
    mean, low, high = stats["mean"][m], stats["ci95_low"][m], stats["ci95_high"][m]
    if math.isnan(low):
        return f"{mean:.4f}"
    return f"{mean:.4f} [{low:.4f}, {high:.4f}]"


def run_row(s: dict, path) -> list[str]:
    """One run's row from its summary.json ``s`` (read from ``path``)."""
    nb = s.get("notebook") if isinstance(s, dict) else None
    if not isinstance(nb, dict):
        raise DataError(f"{path}: no 'notebook' block (written by report.py)")

    def named(key):
        tied = nb.get(f"{key}_classes_tied") or []
        more = f" (+{len(tied) - 1} tied)" if len(tied) > 1 else ""
        return f"{nb[f'{key}_class']} {nb[f'{key}_class_accuracy']:.2f}{more}"

    return [s.get("recipe", "?"), str(s.get("seed", "?")), f"{nb['overall_accuracy']:.4f}", f"{nb['macro_f1']:.4f}",
            f"{nb['weighted_f1']:.4f}", named("best"), named("worst"),
            f"{s.get('selected_epoch', '?')} ({s.get('selection', '?')})"]


def main(argv=None):
    a = parse_args(argv)
    recipes = [replicates.read_seeds_summary(p) for p in a.seeds_summaries]
    summaries = [(p, read_json(p)) for p in a.runs]
    runs = [run_row(s, p) for p, s in summaries]
    selection = {}  # recipe -> the selection rules its runs used (one, unless the config changed)
    for _, s in summaries:
        selection.setdefault(str(s.get("recipe")), set()).add(str(s.get("selection")))
    recipe_rows = [[r["recipe"], str(r["n_seeds"]), *(interval(r["stats"], m) for m in replicates.METRICS),
                    ", ".join(sorted(selection.get(r["recipe"], [])))] for r in recipes]
    text = "\n\n".join([
        "Headline results\n================",
        f"Mean over seeds with the {replicates.interval_method()} in brackets (none with one seed); "
        "ECE: expected calibration error, lower is better. best_test selects the epoch with the best test "
        "accuracy, as the notebook does, which makes the test numbers optimistic.",
        rst_table(["recipe", "seeds", *METRIC_NAMES.values(), "selection"], recipe_rows),
        "Per run, as in the notebook's expected results (best and worst class by per-class accuracy):",
        rst_table(["recipe", "seed", "accuracy", "macro F1", "weighted F1", "best class", "worst class",
                   "selected epoch"], runs),
    ]) + "\n"
    write_text(a.headline, text)
    print(f"wrote {a.headline}: {len(recipes)} recipes, {len(runs)} runs")


if __name__ == "__main__":
    run_cli(main)
