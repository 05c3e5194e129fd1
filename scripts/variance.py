#!/usr/bin/env python
r"""Where seed-to-seed variance comes from: recipes that differ only in vary, side by side.

    python scripts/variance.py --summaries results/*/seed*/summary.json \
        --recipes-json '{"baseline": {..., "vary": "all"}, "baseline_init": {..., "vary": "init"}}' \
        --table results/variance_sources.csv --figure results/variance_sources.png

Recipes whose definitions are identical apart from vary (all: the seed drives initialisation, data
order and augmentation; init; data: order and augmentation; order; augment; none: only
non-deterministic kernels differ, on a GPU) form a family. A component the seed does not drive is
seeded with a fixed seed outside the seeds' range, so members never share a run: independent
samples. Per family, member and headline metric one row of the table (cifar100.variance_sources):
the variance over seeds (ddof=1) and sd, each with a chi-square 95% interval (the sd cut at 0.5,
the most a share can spread), and its share of the vary: all member's variance with an F 95%
interval. With 3 seeds a variance's interval is [0.27, 39.5] x s^2 (10 seeds: [0.47, 3.33]):
read the intervals before the shares.
"""

import argparse

from cifar100 import replicates, study_plots, variance_sources
from cifar100.cli import run_cli
from cifar100.files import write_csv

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--summaries", nargs="+", required=True,
                   help="summary.json of every seed of every recipe (required)")
    p.add_argument("--recipes-json", required=True, help="JSON object of the recipes' definitions (required)")
    p.add_argument("--table", required=True, help="CSV to write, e.g. results/variance_sources.csv (required)")
    p.add_argument("--figure", required=True, help="figure to write, e.g. results/variance_sources.png (required)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    recipes, runs = replicates.recipes_and_runs(a.recipes_json, a.summaries)
    rows = [row for m in replicates.METRICS
            for row in variance_sources.variance_sources(recipes, {r: runs[r]["values"][m] for r in runs}, m)]
    write_csv(a.table, [replicates.cells(r) for r in rows], variance_sources.FIELDS)
    top1 = {r: runs[r]["values"]["top1"] for r in runs}
    study_plots.save(study_plots.variance_sources(rows, top1, "top1"), a.figure)
    for r in rows:
        if r["metric"] == "top1":
            share = (f", share of {r['share_of']}'s variance {r['share']:.3g} "
                     f"[{r['share_ci_low']:.3g}, {r['share_ci_high']:.3g}]"
                     if r["share"] == r["share"] and r["recipe"] != r["share_of"] else "")
            print(f"{r['recipe']} (vary {r['vary']}): top-1 sd {r['sd']:.4f} over {r['n_seeds']} seeds{share}")
    if not rows:
        print("no recipes that differ only in vary: nothing to split")
    print(f"wrote {a.table} and {a.figure}")


if __name__ == "__main__":
    run_cli(main)
