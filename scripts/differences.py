#!/usr/bin/env python
r"""Recipe A vs recipe B, as a researcher must state it: difference, interval, p, effect size, odds.

    python scripts/differences.py --summaries results/*/seed*/summary.json \
        --recipes-json '{"baseline": {...}, "cosine": {...}}' --pairs baseline:cosine --interval-width 0.01 \
        --table results/recipe_differences.csv --figure results/recipe_differences.png

Reads every seed's summary.json (recipe and seed come from the file). For each pair A:B and each
headline metric (top1, top5, macro_f1, ece) one row of the table (cifar100.recipe_differences):
  difference, ci95_*  mean_a - mean_b, with its 95% t interval cut to [-1, 1]
  test               paired (scipy ttest_rel on per-seed differences) when A and B ran the same
                     seeds, whose shared randomness pairing cancels; welch (ttest_ind, unequal
                     variances) otherwise
  t, df, p_value     the test's statistic, degrees of freedom and two-sided p-value
  p_holm             Holm-adjusted across the four metrics of the pair (the multiple-comparison
                     policy: family-wise error per pair)
  hedges_g           the difference in pooled seed-to-seed sds, small-sample corrected
  p_a_beats_b_same_seed, p_a_beats_b_fresh_seeds
                     chance that A's run beats B's run with the same seed (paired only) / on
                     independent fresh seeds, under a normal model, each with an exact 95%
                     interval (noncentral t); share_a_beats_b_* how often it did (for ECE,
                     beating means lower)
  precision_seeds    seeds per recipe for a 95% interval of the difference at most
                     --interval-width wide, at today's sd (a precision calculation)
  power_seeds        seeds per recipe for a two-sided test at --alpha to detect a true difference
                     of --effect with probability --power (a power calculation)
                     (*_low, *_high: the same at the ends of the sd's 95% interval)
Without --pairs: every pair of recipes whose vary is all, in --recipes-json order.
"""

import argparse

from cifar100 import config, plan, recipe_differences, replicates, study_plots
from cifar100.cli import run_cli
from cifar100.exceptions import DataError
from cifar100.files import write_csv


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--summaries", nargs="+", required=True,
                   help="summary.json of every seed of every recipe (required)")
    p.add_argument("--recipes-json", required=True,
                   help="JSON object of the compared recipes' definitions, in runs order (required)")
    p.add_argument("--pairs", nargs="*", default=[],
                   help="recipe pairs A:B to compare (default: every pair of vary: all recipes)")
    p.add_argument("--interval-width", type=positive_float, default=config.default("study", "interval_width"),
                   help="full width of the 95%% interval that precision_seeds aims at (default: %(default)s)")
    p.add_argument("--effect", type=positive_float, default=config.default("study", "effect"),
                   help="true difference that power_seeds should detect, in the metric's units (default: %(default)s)")
    p.add_argument("--alpha", type=probability, default=config.default("study", "alpha"),
                   help="two-sided significance level of power_seeds' test (default: %(default)s)")
    p.add_argument("--power", type=probability, default=config.default("study", "power"),
                   help="chance of detecting --effect that power_seeds aims at (default: %(default)s)")
    p.add_argument("--table", required=True, help="CSV to write, e.g. results/recipe_differences.csv (required)")
    p.add_argument("--figure", required=True, help="figure to write, e.g. results/recipe_differences.png (required)")
    return p.parse_args(argv)


def parse_pairs(pairs: list[str], known) -> list[tuple[str, str]]:
    out = []
    for text in pairs:
        a, sep, b = text.partition(":")
        if not sep or not a or not b:
            raise DataError(f"--pairs: expected RECIPE_A:RECIPE_B, got {text!r}")
        for name in (a, b):
            if name not in known:
                raise DataError(f"--pairs {text}: no summary.json of recipe {name!r} given "
                                f"(recipes: {', '.join(sorted(known))})")
        out.append((a, b))
    return out


def main(argv=None):
    a = parse_args(argv)
    recipes, runs = replicates.recipes_and_runs(a.recipes_json, a.summaries)
    pairs = (parse_pairs(a.pairs, runs) if a.pairs
             else plan.default_pairs([r for r in recipes if r in runs], recipes))
    rows = [row for x, y in pairs
            for row in recipe_differences.compare_pair(runs[x], runs[y], a.interval_width, a.effect, a.alpha, a.power)]
    write_csv(a.table, [replicates.cells(r) for r in rows], recipe_differences.FIELDS)
    study_plots.save(study_plots.differences(rows, "top1"), a.figure)
    for r in rows:
        if r["metric"] == "top1":
            print(f"{r['recipe_a']} - {r['recipe_b']}: top-1 {r['difference']:+.4f} "
                  f"[{r['ci95_low']:.4f}, {r['ci95_high']:.4f}] {r['test']}, p={r['p_value']:.3g} "
                  f"(Holm {r['p_holm']:.3g}); {r['precision_seeds']:.0f} seeds for a {a.interval_width} wide "
                  f"interval, {r['power_seeds']:.0f} [{r['power_seeds_low']:.0f}, {r['power_seeds_high']:.0f}] "
                  f"to detect {a.effect} at alpha {a.alpha} with power {a.power}")
    print(f"wrote {a.table} and {a.figure} ({len(pairs)} pair{'s' * (len(pairs) != 1)})")

if __name__ == "__main__":
    run_cli(main)
