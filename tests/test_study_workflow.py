"""The tiny reproducibility study (tests/study.yaml: recipes a and b x 3 seeds, plus a_init and
a_data, and the recipes other features add) run once through Snakemake; every number of its tables
recomputed here from the runs' predictions.npz, history.csv and summary.json with numpy/scipy, and
every interval of a bounded quantity checked to lie in its range, in every file."""

import csv
import functools
import json
import math
import os
import re
import shutil
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import special, stats

from helpers import REPO, results_root, workflow_outputs
from helpers import snakemake as run_snakemake

from cifar100 import files

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
# a, b, a_init, a_data and whatever else the study config runs (every table is checked for each)
RECIPES = tuple(yaml.safe_load((REPO / "tests" / "study.yaml").read_text())["runs"])
PER_RECIPE = ("churn.csv", "churn_per_class.csv", "ensemble.csv", "test_set_noise.csv", "selection_optimism.csv",
              "seeds_agreement.png", "seeds_summary.csv")
ACROSS = ("recipe_differences.csv", "recipe_differences.png", "variance_sources.csv", "variance_sources.png",
          "recipes_summary.csv", "headline.rst")
# Every rule that reads the statistics code (cifar100/intervals.py): CPU analysis only.
STUDY_RULES = {"aggregate", "compare", "headline", "seeds_study", "differences", "variance"}


@functools.cache
def targets(workflow: Path, workdir: Path) -> list[str]:
    """The study's files among the workflow's outputs, as Snakemake lists them (under the results
    root of the synthetic data: results/synthetic-<key>/)."""
    every = workflow_outputs(workflow / "Snakefile", workdir, workflow / "tests" / "study.yaml")
    names = {f"{r}/{n}" for r in RECIPES for n in PER_RECIPE} | set(ACROSS)
    wanted = [f for f in every if any(f.endswith("/" + n) and f.count("/") == n.count("/") + 2 for n in names)]
    assert len(wanted) == len(names), sorted(set(names) - {f.split("/", 2)[-1] for f in wanted})
    return wanted


def snakemake(workflow: Path, workdir: Path, *args):
    # --configfile takes several files: the targets go before it.
    p = run_snakemake("-s", workflow / "Snakefile", "-d", workdir, *args, "--configfile",
                      workflow / "tests" / "study.yaml", env={**os.environ, "OMP_NUM_THREADS": "1"})
    if p.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    return p


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """A private copy of the workflow and one run of the study's outputs (and what they need)."""
    root = tmp_path_factory.mktemp("study")
    workflow, workdir = root / "workflow", root / "run"
    shutil.copytree(REPO, workflow, ignore=shutil.ignore_patterns(
        ".git", "results", "data", ".snakemake", "__pycache__", "*.egg-info", ".pytest_cache"))
    # Deterministic CPU training uses one thread: two trainings at once on two cores.
    snakemake(workflow, workdir, *targets(workflow, workdir), "--cores", "2", "--set-threads", "train=1",
              "evaluate=1")
    return workflow, workdir


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(cell) -> float:
    return math.nan if cell == "" else float(cell)


def close(cell, expected, tol=1e-9):
    if isinstance(expected, float) and math.isnan(expected):
        return cell == ""
    return math.isclose(num(cell), expected, rel_tol=1e-9, abs_tol=tol)


def predictions(wd, recipe):
    files = [np.load(results_root(wd) / f"{recipe}/seed{s}/predictions.npz") for s in SEEDS]
    return np.stack([f["logits"].astype(np.float64) for f in files]), files[0]["labels"]


def top1(wd, recipe) -> list[float]:
    return [json.loads((results_root(wd) / f"{recipe}/seed{s}/summary.json").read_text())["top1"] for s in SEEDS]


def test_every_study_output_exists(study_run):
    workflow, wd = study_run
    for name in targets(workflow, wd):
        assert (wd / name).is_file(), name
    assert not [p for p in wd.rglob(f"*{files.TEMP_MARKER}*") if files.is_temp_name(p.name)], "temp files left behind"


def test_churn_tables_match_the_predictions(study_run):
    _, wd = study_run
    for recipe in RECIPES:
        logits, labels = predictions(wd, recipe)
        preds = logits.argmax(axis=2)
        rows = read_csv(results_root(wd) / f"{recipe}/churn.csv")
        pairs = [r for r in rows if r["row"] == "pair"]
        assert [(int(r["seed_a"]), int(r["seed_b"])) for r in pairs] == list(combinations(SEEDS, 2))
        churn = []
        for r, (i, j) in zip(pairs, combinations(range(len(SEEDS)), 2)):
            churn.append(np.mean(preds[i] != preds[j]))
            assert close(r["churn"], churn[-1])
            assert close(r["only_b_correct"], np.mean((preds[i] != labels) & (preds[j] == labels)))
        # The mean over pairs; with 3 seeds, leaving one out leaves one pair: the jackknife values
        # are the pairs' churns in reverse order (leave seed 2 out: pair (0, 1)).
        (mean,) = [r for r in rows if r["row"] == "mean"]
        loo = np.array(churn[::-1])
        se = math.sqrt(2 / 3 * np.sum((loo - loo.mean()) ** 2))
        half = stats.t.ppf(0.975, 2) * se
        assert close(mean["churn"], float(np.mean(churn))) and mean["n_pairs"] == "3" and mean["n_seeds"] == "3"
        assert close(mean["churn_ci95_low"], max(0.0, float(np.mean(churn) - half)))
        assert close(mean["churn_ci95_high"], min(1.0, float(np.mean(churn) + half)))
        per_class = read_csv(results_root(wd) / f"{recipe}/churn_per_class.csv")
        for r in per_class:
            m = labels == int(r["class_index"])
            assert int(r["n_images"]) == m.sum()
            churns = [np.mean(preds[i, m] != preds[j, m]) for i, j in combinations(range(len(SEEDS)), 2)]
            assert close(r["churn_mean"], float(np.mean(churns)))
            assert close(r["accuracy_mean"], float(np.mean(preds[:, m] == labels[m])))


def ece(conf, correct, n_bins):
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for b in range(n_bins):
        inside = (conf > edges[b]) & (conf <= edges[b + 1]) | ((b == 0) & (conf == 0))
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return total


def test_ensemble_matches_the_mean_softmax(study_run):
    _, wd = study_run
    for recipe in RECIPES:
        logits, labels = predictions(wd, recipe)
        probs = special.softmax(logits, axis=2)
        mean = probs.mean(axis=0)
        (row,) = read_csv(results_root(wd) / f"{recipe}/ensemble.csv")
        bins = int(row["ece_bins"])
        assert close(row["ensemble_top1"], float(np.mean(mean.argmax(1) == labels)))
        assert close(row["ensemble_ece"], ece(mean.max(1), mean.argmax(1) == labels, bins), tol=1e-6)
        assert close(row["ensemble_nll"], float(-np.mean(np.log(mean[np.arange(len(labels)), labels]))), tol=1e-6)
        assert close(row["seeds_mean_top1"], float(np.mean([np.mean(p.argmax(1) == labels) for p in probs])))
        assert np.mean(top1(wd, recipe)) == pytest.approx(num(row["seeds_mean_top1"]))  # same predictions
        gain = (mean.argmax(1) == labels) - np.mean([p.argmax(1) == labels for p in probs], axis=0)
        ci = stats.ttest_1samp(gain, 0).confidence_interval(0.95)
        assert close(row["top1_gain"], float(gain.mean()))
        assert close(row["top1_gain_ci95_low"], float(ci.low), tol=1e-7)
        assert close(row["top1_gain_ci95_high"], float(ci.high), tol=1e-7)


def test_test_set_noise_matches_covariances_of_per_image_correctness(study_run):
    _, wd = study_run
    for recipe in RECIPES:
        logits, labels = predictions(wd, recipe)
        correct = (logits.argmax(axis=2) == labels).astype(float)
        cov = np.cov(correct.T)
        n = correct.shape[1]
        (row,) = read_csv(results_root(wd) / f"{recipe}/test_set_noise.csv")
        assert close(row["observed_var"], float(np.var(correct.mean(axis=1), ddof=1)))
        assert close(row["predicted_var"], float(np.trace(cov) / n**2))
        assert close(row["excess_var"], float((cov.sum() - np.trace(cov)) / n**2))
        assert close(row["unbiasing_factor"], 1.5)  # S/(S-1), stated in the table
        s2 = np.var(correct.mean(axis=1), ddof=1)
        high = min(0.25, float(2 * s2 / stats.chi2.ppf(0.025, 2)))  # a share's variance is at most 0.25
        assert close(row["observed_var_ci_high"], high)
        assert close(row["predicted_share_ci_low"], float(np.trace(cov) / n**2 / high))


def test_selection_optimism_matches_history(study_run):
    _, wd = study_run
    for recipe in RECIPES:
        acc = [np.array([float(r["test_acc"]) for r in read_csv(results_root(wd) / f"{recipe}/seed{s}/history.csv")])
               for s in SEEDS]
        opt = np.array([a.max() - a[-1] for a in acc])
        rows = read_csv(results_root(wd) / f"{recipe}/selection_optimism.csv")
        seeds = [r for r in rows if r["row"] == "seed"]
        assert [close(r["optimism"], float(o)) for r, o in zip(seeds, opt)] == [True] * len(SEEDS)
        stat = {r["row"]: r for r in rows}
        half = stats.t.ppf(0.975, 2) * np.std(opt, ddof=1) / math.sqrt(3)
        assert close(stat["mean"]["optimism"], float(opt.mean()))
        assert close(stat["ci95_high"]["optimism"], min(1.0, float(opt.mean() + half)))
        last = np.array([a[-1] for a in acc])
        half = stats.t.ppf(0.975, 2) * np.std(last, ddof=1) / math.sqrt(3)
        assert close(stat["ci95_high"]["last_test_acc"], min(1.0, float(last.mean() + half)))
        # computed in this one rule: seeds_summary.csv has no column for it
        assert "best_minus_last_test_acc" not in read_csv(results_root(wd) / f"{recipe}/seeds_summary.csv")[0]


def test_differences_match_scipy(study_run):
    _, wd = study_run
    rows = {r["metric"]: r for r in read_csv(results_root(wd) / "recipe_differences.csv")
            if (r["recipe_a"], r["recipe_b"]) == ("a", "b")}
    assert set(rows) == {"top1", "top5", "macro_f1", "ece"}
    xa, xb = np.array(top1(wd, "a")), np.array(top1(wd, "b"))
    r = rows["top1"]
    assert r["test"] == "paired"  # both recipes ran seeds 0, 1, 2
    assert close(r["difference"], float(xa.mean() - xb.mean()))
    d = xa - xb
    assert np.std(d) > 0  # else there is no test to check (3 seeds with the same difference: unlikely)
    ref = stats.ttest_rel(xa, xb)
    ci = ref.confidence_interval(0.95)
    assert close(r["p_value"], float(ref.pvalue)) and close(r["t"], float(ref.statistic))
    assert close(r["ci95_low"], max(-1.0, float(ci.low))) and close(r["ci95_high"], min(1.0, float(ci.high)))
    # Holm across the four metrics, written out
    p = sorted((num(rows[m]["p_value"]), m) for m in rows if rows[m]["p_value"] != "")
    running = 0.0
    for k, (pv, m) in enumerate(p):
        running = max(running, min(1.0, (len(p) - k) * pv))
        assert close(rows[m]["p_holm"], running)
    assert close(r["p_a_beats_b_same_seed"], float(stats.norm.sf(0, d.mean(), d.std(ddof=1))))
    t = math.sqrt(3) * d.mean() / d.std(ddof=1)
    for end, q in (("low", 0.975), ("high", 0.025)):  # the interval inverts the noncentral t
        nc = math.sqrt(3) * stats.norm.ppf(num(r[f"p_a_beats_b_same_seed_ci95_{end}"]))
        assert stats.nct.cdf(t, 2, nc) == pytest.approx(q, abs=1e-6)
    width = float(r["precision_width"])
    assert width == 0.02  # from tests/study.yaml
    n = int(float(r["precision_seeds"]))
    full = [2 * stats.t.ppf(0.975, k - 1) * d.std(ddof=1) / math.sqrt(k) for k in (n - 1, n)]
    assert full[1] <= width and (n == 2 or full[0] > width)
    effect = float(r["power_effect"])
    assert (effect, float(r["power_alpha"]), float(r["power_target"])) == (0.02, 0.05, 0.8)

    def power(k, sd):
        tc, nc = stats.t.ppf(0.975, k - 1), effect * math.sqrt(k) / sd
        return stats.nct.sf(tc, k - 1, nc) + stats.nct.cdf(-tc, k - 1, nc)

    n = int(float(r["power_seeds"]))
    assert power(n, d.std(ddof=1)) >= 0.8 and (n == 2 or power(n - 1, d.std(ddof=1)) < 0.8)
    sd_low = math.sqrt(2 * np.var(d, ddof=1) / stats.chi2.ppf(0.975, 2))
    n_low = int(float(r["power_seeds_low"]))
    assert power(n_low, sd_low) >= 0.8 and (n_low == 2 or power(n_low - 1, sd_low) < 0.8)
    pooled = math.sqrt((np.var(xa, ddof=1) + np.var(xb, ddof=1)) / 2)
    assert close(r["hedges_g"], float((xa.mean() - xb.mean()) / pooled * (1 - 3 / (4 * 6 - 9))))


def test_variance_sources_match_numpy_and_scipy(study_run):
    _, wd = study_run
    rows = {r["recipe"]: r for r in read_csv(results_root(wd) / "variance_sources.csv") if r["metric"] == "top1"}
    assert set(rows) == {"a", "a_init", "a_data"}  # b differs from a in lr: no family
    assert [rows[k]["vary"] for k in ("a", "a_init", "a_data")] == ["all", "init", "data"]
    va = np.var(top1(wd, "a"), ddof=1)
    assert va > 0
    for name in ("a_init", "a_data"):
        v = np.var(top1(wd, name), ddof=1)
        assert close(rows[name]["var"], float(v)) and rows[name]["share_of"] == "a"
        assert close(rows[name]["var_ci_low"], float(2 * v / stats.chi2.ppf(0.975, 2)))
        assert close(rows[name]["sd_ci_high"], min(0.5, math.sqrt(2 * v / stats.chi2.ppf(0.025, 2))))
        assert close(rows[name]["share"], float(v / va))
        assert close(rows[name]["share_ci_low"], float(v / va / stats.f.ppf(0.975, 2, 2)))
        assert close(rows[name]["share_ci_high"], float(v / va / stats.f.ppf(0.025, 2, 2)))


def test_no_run_of_a_one_source_recipe_is_a_run_of_the_vary_all_recipe(study_run):
    """The fixed components use a seed no run varies: seed s of a_init or a_data is never the same
    run as seed s of a (before, seed 0 of a_init was bit-identical to seed 0 of a)."""
    _, wd = study_run
    logits_a, _ = predictions(wd, "a")
    for name in ("a_init", "a_data"):
        logits, _ = predictions(wd, name)
        assert not any(np.array_equal(logits_a[i], logits[j]) for i in range(3) for j in range(3))


def test_recipe_summary_and_headline_give_churn_and_ensemble_gain(study_run):
    _, wd = study_run
    summary = {r["recipe"]: r for r in read_csv(results_root(wd) / "recipes_summary.csv")}
    headline = (results_root(wd) / "headline.rst").read_text()
    for recipe in RECIPES:
        (mean,) = [r for r in read_csv(results_root(wd) / f"{recipe}/churn.csv") if r["row"] == "mean"]
        (ens,) = read_csv(results_root(wd) / f"{recipe}/ensemble.csv")
        row = summary[recipe]
        assert (row["churn_mean"], row["churn_ci95_low"], row["churn_ci95_high"], row["churn_n_pairs"]) == (
            mean["churn"], mean["churn_ci95_low"], mean["churn_ci95_high"], mean["n_pairs"])
        assert (row["ensemble_top1_gain"], row["ensemble_top1_gain_ci95_low"], row["ensemble_n_images"]) == (
            ens["top1_gain"], ens["top1_gain_ci95_low"], ens["n_images"])
        line = next(x for x in headline.splitlines() if x.startswith(f"{recipe} ") and "(3)" in x)
        assert f"{num(mean['churn']):.4f} [{num(mean['churn_ci95_low']):.4f}, " in line
        assert f"{num(ens['top1_gain']):.4f} [{num(ens['top1_gain_ci95_low']):.4f}, " in line and "(200)" in line
    assert "cut to what the quantity can take" in headline  # the convention, stated on the first page


def test_every_interval_of_a_bounded_quantity_lies_in_its_range(study_run):
    """One convention in every file: a metric's mean and its interval in [0, 1], a difference in
    [-1, 1], a metric's sd at most 0.5, a share of images (churn) in [0, 1]."""
    _, wd = study_run
    root = results_root(wd)

    def inside(cells, low, high):
        values = [num(c) for c in cells if c != ""]
        assert values and all(low <= v <= high for v in values), (low, high, values)

    for recipe in RECIPES:
        stat = [r for r in read_csv(root / f"{recipe}/seeds_summary.csv") if r["row"].startswith("ci95_")]
        inside([r[m] for r in stat for m in ("top1", "top5", "macro_f1", "ece")], 0, 1)
        opt = [r for r in read_csv(root / f"{recipe}/selection_optimism.csv") if r["row"].startswith("ci95")]
        inside([r[c] for r in opt for c in ("best_test_acc", "last_test_acc", "optimism")], 0, 1)
        churn = read_csv(root / f"{recipe}/churn.csv")
        inside([r[c] for r in churn for c in ("churn", "churn_ci95_low", "churn_ci95_high")], 0, 1)
        (noise,) = read_csv(root / f"{recipe}/test_set_noise.csv")
        inside([noise["observed_var_ci_low"], noise["observed_var_ci_high"]], 0, 0.25)
    summary = read_csv(root / "recipes_summary.csv")
    inside([r[f"{m}_ci95_{e}"] for r in summary for m in ("top1", "top5", "macro_f1", "ece") for e in ("low", "high")],
           0, 1)
    inside([r[f"ensemble_top1_gain_ci95_{e}"] for r in summary for e in ("low", "high")], -1, 1)
    diffs = read_csv(root / "recipe_differences.csv")
    inside([r[c] for r in diffs for c in ("ci95_low", "ci95_high")], -1, 1)
    inside([r[c] for r in diffs for c in r if c.startswith("p_a_beats_b")], 0, 1)
    sources = read_csv(root / "variance_sources.csv")
    inside([r[c] for r in sources for c in ("sd_ci_low", "sd_ci_high")], 0, 0.5)
    inside([r[c] for r in sources for c in ("var_ci_low", "var_ci_high")], 0, 0.25)


def planned(workflow, workdir) -> dict:
    out = snakemake(workflow, workdir, "-n", *targets(workflow, workdir)).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_editing_the_study_code_never_retrains(study_run):
    workflow, wd = study_run
    assert planned(workflow, wd) == {}
    path = workflow / "scripts/cifar100/intervals.py"
    original = path.read_text()
    path.write_text(original + f"\n# edited at {time.time()}\n")
    t = time.time() + 5
    os.utime(path, (t, t))
    try:
        jobs = planned(workflow, wd)
    finally:
        path.write_text(original)
    assert set(jobs) == STUDY_RULES and jobs["seeds_study"] == jobs["aggregate"] == len(RECIPES)
