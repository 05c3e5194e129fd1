#!/usr/bin/env python
r"""How far one recipe's seeds agree: churn, the ensemble of seeds, test-set noise, selection optimism.

    python scripts/seeds_study.py --recipe baseline \
        --predictions results/baseline/seed{0,1,2}/predictions.npz \
        --histories results/baseline/seed{0,1,2}/history.csv --seeds 0 1 2 --data-dir data --ece-bins 15 \
        --churn results/baseline/churn.csv --churn-per-class results/baseline/churn_per_class.csv \
        --ensemble results/baseline/ensemble.csv --test-set-noise results/baseline/test_set_noise.csv \
        --selection-optimism results/baseline/selection_optimism.csv --figure results/baseline/seeds_agreement.png

Give --predictions, --histories and --seeds in the same seed order. Reads only files the workflow
already wrote: nothing retrains. Writes the six files it is given:
  churn               per pair of seeds: share of test images whose top-1 predictions differ (churn),
                      and the shares both right, only A right, only B right, both wrong; then a
                      "mean" row: mean churn over pairs with a 95% jackknife-over-seeds interval
  churn_per_class     per true class: test images, mean accuracy over seeds, churn over seed pairs
                      (mean, min, max)
  ensemble            the mean softmax of all seeds scored as one model (top-1, top-5, ECE, NLL)
                      beside the seeds' mean scores, and the gain (top-1, top-5: with a paired
                      95% t interval over test images)
  test_set_noise      observed seed-to-seed variance of top-1 (chi-square 95% interval) beside the
                      variance predicted from per-image correctness rates as independent coins
                      (with the unbiasing factor S/(S-1) it includes), and the predicted share
  selection_optimism  per seed, best-epoch minus last-epoch test accuracy (history.csv), then mean,
                      std and 95% t interval in [0, 1] (the one place this is computed)
  figure              churn heatmap, per-image correctness counts, optimism per seed
"""

import argparse

from cifar100 import config, data, seed_agreement, study_plots
from cifar100.cli import one_file_per_seed, positive_int, run_cli
from cifar100.exceptions import DataError
from cifar100.files import write_csv
from cifar100.replicates import cells, read_history


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, help="recipe name, for titles (required)")
    p.add_argument("--predictions", nargs="+", required=True, help="predictions.npz of every seed (required)")
    p.add_argument("--histories", nargs="+", required=True, help="history.csv of every seed, same order (required)")
    p.add_argument("--seeds", nargs="+", type=int, required=True, help="the seeds, same order (required)")
    p.add_argument("--data-dir", default=config.default("data_dir"),
                   help="folder holding the dataset, for class names and test labels (default: %(default)s)")
    p.add_argument("--ece-bins", type=positive_int, default=config.default("analysis", "ece_bins"),
                   help="equal-width confidence bins for the ensemble's ECE (default: %(default)s)")
    p.add_argument("--churn", required=True, help="per-pair churn CSV to write (required)")
    p.add_argument("--churn-per-class", required=True, help="per-class churn CSV to write (required)")
    p.add_argument("--ensemble", required=True, help="ensemble CSV to write (required)")
    p.add_argument("--test-set-noise", required=True, help="test-set noise CSV to write (required)")
    p.add_argument("--selection-optimism", required=True, help="selection optimism CSV to write (required)")
    p.add_argument("--figure", required=True, help="figure to write (required)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    one_file_per_seed(predictions=a.predictions, histories=a.histories, seeds=a.seeds)
    if len(set(a.seeds)) != len(a.seeds):
        raise DataError(f"--seeds repeats a seed: {a.seeds}")
    test, fine_names, coarse_names, fine_to_coarse = data.load_test(a.data_dir)
    logits, labels = seed_agreement.stack_predictions(a.predictions, test.labels)
    preds = logits.argmax(axis=2)
    correct = preds == labels

    churn = seed_agreement.churn_rows(preds, labels, a.seeds)
    write_csv(a.churn, [cells({**r, "recipe": a.recipe}) for r in churn], seed_agreement.CHURN_FIELDS)
    per_class = seed_agreement.churn_per_class(preds, labels, len(fine_names))
    for r in per_class:
        r["class_name"] = fine_names[r["class_index"]]
        r["superclass"] = coarse_names[fine_to_coarse[r["class_index"]]] if fine_to_coarse is not None else ""
    write_csv(a.churn_per_class, [cells(r) for r in per_class],
              ["class_index", "class_name", "superclass", "n_images", "accuracy_mean", "churn_mean", "churn_min",
               "churn_max"])
    ens = seed_agreement.ensemble(logits, labels, a.ece_bins)
    write_csv(a.ensemble, [cells({"recipe": a.recipe, **ens})])
    noise = seed_agreement.test_set_noise(correct)
    write_csv(a.test_set_noise, [cells({"recipe": a.recipe, **noise})])
    histories = [read_history(p) for p in a.histories]
    optimism = seed_agreement.selection_optimism(histories, a.seeds)
    write_csv(a.selection_optimism, [cells({"recipe": a.recipe, **r}) for r in optimism],
              ["recipe", *seed_agreement.OPTIMISM_FIELDS])

    mean_churn = next((r for r in churn if r["row"] == "mean"), None)
    stat = {r["row"]: r for r in optimism}
    fig = study_plots.seeds_agreement(seed_agreement.churn_matrix(preds), a.seeds,
                                      seed_agreement.correctness_rates(correct), noise,
                                      [r["optimism"] for r in optimism if r["row"] == "seed"], a.recipe,
                                      churn=mean_churn, optimism_interval=(stat["ci95_low"]["optimism"],
                                                                           stat["ci95_high"]["optimism"]))
    study_plots.save(fig, a.figure)
    if mean_churn:
        print(f"{a.recipe}: mean churn {mean_churn['churn']:.4f} [{mean_churn['churn_ci95_low']:.4f}, "
              f"{mean_churn['churn_ci95_high']:.4f}] over {mean_churn['n_pairs']} seed pairs")
    print(f"{a.recipe}: ensemble of {len(a.seeds)} seeds top-1 {ens['ensemble_top1']:.4f} "
          f"(seeds' mean {ens['seeds_mean_top1']:.4f}, gain {ens['top1_gain']:+.4f} "
          f"[{ens['top1_gain_ci95_low']:.4f}, {ens['top1_gain_ci95_high']:.4f}] over {ens['n_images']} images)")
    print(f"{a.recipe}: best_test optimism {stat['mean']['optimism']:.4f} (mean over seeds)")

if __name__ == "__main__":
    run_cli(main)
