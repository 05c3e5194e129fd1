#!/usr/bin/env python
r"""Compare recipes: one row per recipe (mean and 95% interval over seeds) and one figure.

    python scripts/compare.py --summaries results/{baseline,cosine}/seeds_summary.csv \
        --churn results/{baseline,cosine}/churn.csv --ensemble results/{baseline,cosine}/ensemble.csv \
        --table results/recipes_summary.csv --figure results/recipes_comparison.png

Reads the seeds_summary.csv files aggregate.py writes and the churn.csv and ensemble.csv files
seeds_study.py writes (same recipe order). The table has, per recipe, every metric's mean, std and
interval, the mean churn between seeds (jackknife interval over seeds, number of pairs) and the
ensemble's top-1 gain over the mean single seed (paired t interval over test images, their number).
The figure has one panel per metric (top-1,
top-5, macro F1, ECE): each recipe's mean with its interval as an error bar and one dot per seed.
The interval is the 95% t interval truncated to [0, 1] (the metrics' range), each recipe's number
of seeds is written under its name, and recipes with one seed get no error bar. Overlapping
intervals are not a test of no difference.
"""

import argparse

from cifar100 import plots, replicates
from cifar100.cli import run_cli
from cifar100.exceptions import DataError
from cifar100.files import write_csv

LABELS = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "macro_f1": "macro F1",
          "ece": "ECE (lower is better)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--summaries", nargs="+", required=True, help="seeds_summary.csv of every recipe (required)")
    p.add_argument("--churn", nargs="+", required=True, help="churn.csv of every recipe, same order (required)")
    p.add_argument("--ensemble", nargs="+", required=True, help="ensemble.csv of every recipe, same order (required)")
    p.add_argument("--table", required=True, help="CSV to write, e.g. results/recipes_summary.csv (required)")
    p.add_argument("--figure", required=True,
                   help="figure to write, e.g. results/recipes_comparison.png (required)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if not len(a.summaries) == len(a.churn) == len(a.ensemble):
        raise DataError(f"give one file per recipe to each list: {len(a.summaries)} summaries, "
                        f"{len(a.churn)} churn, {len(a.ensemble)} ensemble")
    recipes = [replicates.read_seeds_summary(p) for p in a.summaries]
    agreement = [replicates.read_agreement(c, e) for c, e in zip(a.churn, a.ensemble)]
    rows = replicates.recipes_table(recipes, agreement)
    write_csv(a.table, rows)
    names = [r["recipe"] for r in recipes]
    summary = {m: {"mean": [r["stats"]["mean"][m] for r in recipes],
                   "low": [r["stats"]["ci95_low"][m] for r in recipes],
                   "high": [r["stats"]["ci95_high"][m] for r in recipes]} for m in replicates.METRICS}
    points = {m: [r["values"][m] for r in recipes] for m in replicates.METRICS}
    plots.save(plots.recipes_comparison(names, summary, points, LABELS, replicates.interval_method(),
                                        n_seeds=[r["n_seeds"] for r in recipes]), a.figure)
    for r in rows:
        half = r["top1_ci95_halfwidth"]
        print(f"{r['recipe']}: top-1 {r['top1_mean']:.4f}" + (f" +- {half:.4f}" if half != "" else "")
              + f" over {r['n_seeds']} seed{'s' * (r['n_seeds'] > 1)}; mean churn {r['churn_mean'] or 'none'}, "
              f"ensemble top-1 gain {r['ensemble_top1_gain']:+.4f}")
    print(f"wrote {a.table} and {a.figure}")


if __name__ == "__main__":
    run_cli(main)
