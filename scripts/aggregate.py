#!/usr/bin/env python
r"""Summarise one recipe's seeds: mean, spread and a 95% t interval of every headline metric.

    python scripts/aggregate.py --summaries results/baseline/seed{0,1,2}/summary.json \
        --histories results/baseline/seed{0,1,2}/history.csv \
        --per-class results/baseline/seed{0,1,2}/per_class_accuracy.csv \
        --seeds-summary results/baseline/seeds_summary.csv --seeds-per-class results/baseline/seeds_per_class.csv \
        --curves results/baseline/seeds_curves.png

Give the three lists in the same seed order. Writes:
  seeds_summary.csv    one row per seed, then mean, std, ci95_low, ci95_high, ci95_halfwidth of
                       top1, top5, macro_f1 and ece (t distribution, n-1 degrees of freedom, the
                       interval cut to [0, 1]; how optimistic best_test selection is, is
                       seeds_study.py's selection_optimism.csv)
  seeds_per_class.csv  per class: mean, std, min and max accuracy across seeds
  seeds_curves.png     test accuracy per epoch, one line per seed (and their mean)
With one seed the std and interval cells are empty and the note column says why.
"""

import argparse

from cifar100 import plots, replicates, run_arithmetic
from cifar100.cli import one_file_per_seed, run_cli
from cifar100.files import write_csv


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--summaries", nargs="+", required=True, help="summary.json of every seed (required)")
    p.add_argument("--histories", nargs="+", required=True, help="history.csv of every seed, same order (required)")
    p.add_argument("--per-class", nargs="+", required=True,
                   help="per_class_accuracy.csv of every seed, same order (required)")
    p.add_argument("--seeds-summary", required=True, help="seeds_summary.csv to write (required)")
    p.add_argument("--seeds-per-class", required=True, help="seeds_per_class.csv to write (required)")
    p.add_argument("--curves", required=True, help="seeds_curves.png to write (required)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    one_file_per_seed(summaries=a.summaries, histories=a.histories, **{"per-class tables": a.per_class})
    summaries = [replicates.read_summary(p) for p in a.summaries]
    recipe = replicates.check_replicates(summaries, a.summaries)
    curves = [replicates.read_history(p) for p in a.histories]
    rows = replicates.seeds_summary(summaries)
    differs = run_arithmetic.note_of_files(a.summaries)  # seeds on different node types: said in the note
    for r in rows if differs else []:
        r["note"] = f"{r['note']}; {differs}" if r["note"] else r["note"]
    write_csv(a.seeds_summary, rows, replicates.SUMMARY_FIELDS)

    tables = [replicates.read_per_class(p) for p in a.per_class]
    write_csv(a.seeds_per_class, replicates.per_class_summary(tables, a.per_class))

    labels = [f"seed {s['seed']}" for s in summaries]
    selected = {label: s["selected_epoch"] for label, s in zip(labels, summaries) if s["selected_epoch"] is not None}
    fig = plots.seeds_curves(dict(zip(labels, curves)), replicates.mean_curve(curves),
                             title=f"{recipe}: test accuracy of {len(curves)} seed{'s' * (len(curves) > 1)}",
                             selected=selected)
    plots.save(fig, a.curves)

    mean = {r["row"]: r for r in rows}
    for m in replicates.METRICS:
        line = f"{recipe} {m}: mean {mean['mean'][m]:.4f}"
        if len(summaries) > 1:
            line += (f" std {mean['std'][m]:.4f} 95% CI "
                     f"[{mean['ci95_low'][m]:.4f}, {mean['ci95_high'][m]:.4f}] (t, truncated to [0, 1])")
        print(line)
    if len(summaries) == 1:
        print(f"{recipe}: {replicates.ONE_SEED_NOTE}")
    if differs:
        print(f"{recipe}: {differs}")
    print(f"wrote {a.seeds_summary}, {a.seeds_per_class}, {a.curves}")


if __name__ == "__main__":
    run_cli(main)
