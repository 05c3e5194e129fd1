"""The tiny reproducibility study (tests/study.yaml: recipes a and b x 3 seeds, plus a_init) run once
through Snakemake; every number of its tables recomputed here from the runs' predictions.npz,
history.csv and summary.json with numpy/scipy."""

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from scipy import special, stats

from helpers import REPO

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
RECIPES = ("a", "b", "a_init")
PER_RECIPE = ("churn.csv", "churn_per_class.csv", "ensemble.csv", "test_set_noise.csv", "selection_optimism.csv",
              "seeds_agreement.png")
ACROSS = ("results/recipe_differences.csv", "results/recipe_differences.png", "results/variance_sources.csv",
          "results/variance_sources.png")
STUDY_RULES = {"seeds_study", "differences", "variance"}


def targets():
    return [f"results/{r}/{name}" for r in RECIPES for name in PER_RECIPE] + list(ACROSS)


def snakemake(workflow: Path, workdir: Path, *args):
    # --configfile takes several files: the targets go before it.
    cmd = [sys.executable, "-m", "snakemake", "-s", str(workflow / "Snakefile"), "-d", str(workdir),
           *map(str, args), "--configfile", str(workflow / "tests" / "study.yaml")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"})
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
    snakemake(workflow, workdir, *targets(), "--cores", "2", "--set-threads", "train=1", "evaluate=1")
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
    files = [np.load(wd / f"results/{recipe}/seed{s}/predictions.npz") for s in SEEDS]
    return np.stack([f["logits"].astype(np.float64) for f in files]), files[0]["labels"]


def top1(wd, recipe) -> list[float]:
    return [json.loads((wd / f"results/{recipe}/seed{s}/summary.json").read_text())["top1"] for s in SEEDS]


def test_every_study_output_exists(study_run):
    _, wd = study_run
    for name in targets():
        assert (wd / name).is_file(), name
    assert not list(wd.rglob("*.tmp*")), "temp files left behind"


def test_churn_tables_match_the_predictions(study_run):
    _, wd = study_run
    for recipe in RECIPES:
        logits, labels = predictions(wd, recipe)
        preds = logits.argmax(axis=2)
        rows = read_csv(wd / f"results/{recipe}/churn.csv")
        assert [(int(r["seed_a"]), int(r["seed_b"])) for r in rows] == list(combinations(SEEDS, 2))
        for r, (i, j) in zip(rows, combinations(range(len(SEEDS)), 2)):
            assert close(r["churn"], np.mean(preds[i] != preds[j]))
            assert close(r["only_b_correct"], np.mean((preds[i] != labels) & (preds[j] == labels)))
        per_class = read_csv(wd / f"results/{recipe}/churn_per_class.csv")
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
        (row,) = read_csv(wd / f"results/{recipe}/ensemble.csv")
        bins = int(row["ece_bins"])
        assert close(row["ensemble_top1"], float(np.mean(mean.argmax(1) == labels)))
        assert close(row["ensemble_ece"], ece(mean.max(1), mean.argmax(1) == labels, bins), tol=1e-6)
        assert close(row["ensemble_nll"], float(-np.mean(np.log(mean[np.arange(len(labels)), labels]))), tol=1e-6)
        assert close(row["seeds_mean_top1"], float(np.mean([np.mean(p.argmax(1) == labels) for p in probs])))
        assert np.mean(top1(wd, recipe)) == pytest.approx(num(row["seeds_mean_top1"]))  # same predictions


def test_test_set_noise_matches_covariances_of_per_image_correctness(study_run):
    _, wd = study_run
    for recipe in RECIPES:
        logits, labels = predictions(wd, recipe)
        correct = (logits.argmax(axis=2) == labels).astype(float)
        cov = np.cov(correct.T)
        n = correct.shape[1]
        (row,) = read_csv(wd / f"results/{recipe}/test_set_noise.csv")
        assert close(row["observed_var"], float(np.var(correct.mean(axis=1), ddof=1)))
        assert close(row["predicted_var"], float(np.trace(cov) / n**2))
        assert close(row["excess_var"], float((cov.sum() - np.trace(cov)) / n**2))
        s2 = np.var(correct.mean(axis=1), ddof=1)
        assert close(row["observed_var_ci_high"], float(2 * s2 / stats.chi2.ppf(0.025, 2)))


def test_selection_optimism_matches_history(study_run):
    _, wd = study_run
    for recipe in RECIPES:
        acc = [np.array([float(r["test_acc"]) for r in read_csv(wd / f"results/{recipe}/seed{s}/history.csv")])
               for s in SEEDS]
        opt = np.array([a.max() - a[-1] for a in acc])
        rows = read_csv(wd / f"results/{recipe}/selection_optimism.csv")
        seeds = [r for r in rows if r["row"] == "seed"]
        assert [close(r["optimism"], float(o)) for r, o in zip(seeds, opt)] == [True] * len(SEEDS)
        stat = {r["row"]: r for r in rows}
        half = stats.t.ppf(0.975, 2) * np.std(opt, ddof=1) / math.sqrt(3)
        assert close(stat["mean"]["optimism"], float(opt.mean()))
        assert close(stat["ci95_high"]["optimism"], float(opt.mean() + half))


def test_differences_match_scipy(study_run):
    _, wd = study_run
    rows = {r["metric"]: r for r in read_csv(wd / "results/recipe_differences.csv")
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
    assert close(r["ci95_low"], float(ci.low)) and close(r["ci95_high"], float(ci.high))
    assert close(r["p_a_beats_b"], float(stats.norm.sf(0, d.mean(), d.std(ddof=1))))
    width = float(r["interval_width"])
    assert width == 0.02  # from tests/study.yaml
    n = int(float(r["seeds_needed"]))
    full = [2 * stats.t.ppf(0.975, k - 1) * d.std(ddof=1) / math.sqrt(k) for k in (n - 1, n)]
    assert full[1] <= width and (n == 2 or full[0] > width)
    pooled = math.sqrt((np.var(xa, ddof=1) + np.var(xb, ddof=1)) / 2)
    assert close(r["hedges_g"], float((xa.mean() - xb.mean()) / pooled * (1 - 3 / (4 * 6 - 9))))


def test_variance_sources_match_numpy_and_scipy(study_run):
    _, wd = study_run
    rows = {r["recipe"]: r for r in read_csv(wd / "results/variance_sources.csv") if r["metric"] == "top1"}
    assert set(rows) == {"a", "a_init"}  # b differs from a in lr: no family
    assert rows["a"]["vary"] == "all" and rows["a_init"]["vary"] == "init" and rows["a_init"]["share_of"] == "a"
    va, vi = np.var(top1(wd, "a"), ddof=1), np.var(top1(wd, "a_init"), ddof=1)
    assert close(rows["a"]["var"], float(va)) and close(rows["a_init"]["var"], float(vi))
    assert close(rows["a_init"]["var_ci_low"], float(2 * vi / stats.chi2.ppf(0.975, 2)))
    assert va > 0
    assert close(rows["a_init"]["share"], float(vi / va))
    assert close(rows["a_init"]["share_ci_high"], float(vi / va / stats.f.ppf(0.025, 2, 2)))


def planned(workflow, workdir) -> dict:
    out = snakemake(workflow, workdir, "-n", *targets()).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_editing_the_study_code_never_retrains(study_run):
    workflow, wd = study_run
    assert planned(workflow, wd) == {}
    path = workflow / "scripts/cifar100/study.py"
    original = path.read_text()
    path.write_text(original + f"\n# edited at {time.time()}\n")
    t = time.time() + 5
    os.utime(path, (t, t))
    try:
        jobs = planned(workflow, wd)
    finally:
        path.write_text(original)
    assert set(jobs) == STUDY_RULES and jobs["seeds_study"] == len(RECIPES)
