"""Reproducibility-study numbers (cifar100.study), each checked against an independent computation
(scipy.stats tests and distributions, plain numpy loops), and the study figures' artists."""

import csv
import itertools
import json
import math

import numpy as np
import pytest
from scipy import special, stats

from cifar100 import study, study_plots
from cifar100.exceptions import DataError
from cifar100.files import write_npz

S, N, C = 4, 300, 10


@pytest.fixture(scope="module")
def runs():
    """Logits of S seeds on N test images that share a signal (so seeds mostly agree) plus noise."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, N)
    labels[labels == 9] = 8  # class 9 has no test images
    signal = 2.0 * rng.normal(size=(N, C)) + 2.0 * np.eye(C)[labels]
    logits = np.stack([signal + rng.normal(scale=0.7, size=(N, C)) for _ in range(S)]).astype(np.float32)
    return logits, labels


# --- churn ---------------------------------------------------------------------------------------


def test_churn_pairs_match_a_loop_over_images(runs):
    logits, labels = runs
    preds = logits.argmax(axis=2)
    seeds = [3, 5, 7, 11]
    rows = study.churn_pairs(preds, labels, seeds)
    assert [(r["seed_a"], r["seed_b"]) for r in rows] == list(itertools.combinations(seeds, 2))
    matrix = study.churn_matrix(preds)
    for r, (i, j) in zip(rows, itertools.combinations(range(S), 2)):
        differ = sum(int(preds[i, k] != preds[j, k]) for k in range(N)) / N
        both = sum(int(preds[i, k] == labels[k] == preds[j, k]) for k in range(N)) / N
        only_a = sum(int(preds[i, k] == labels[k] != preds[j, k]) for k in range(N)) / N
        assert r["churn"] == pytest.approx(differ) and matrix[i, j] == matrix[j, i] == pytest.approx(differ)
        assert r["both_correct"] == pytest.approx(both) and r["only_a_correct"] == pytest.approx(only_a)
        parts = r["both_correct"] + r["only_a_correct"] + r["only_b_correct"] + r["both_wrong"]
        assert parts == pytest.approx(1.0)
        assert r["churn"] >= r["only_a_correct"] + r["only_b_correct"] - 1e-12
    assert np.all(np.diag(matrix) == 0)
    assert 0 < np.mean([r["churn"] for r in rows]) < 0.5  # the fixture's seeds mostly agree


def test_churn_per_class_matches_a_loop_and_leaves_empty_classes_blank(runs):
    logits, labels = runs
    preds = logits.argmax(axis=2)
    rows = study.churn_per_class(preds, labels, C)
    assert len(rows) == C
    for c in range(C - 1):
        idx = [k for k in range(N) if labels[k] == c]
        if not idx:
            continue
        per_pair = [np.mean([preds[i, k] != preds[j, k] for k in idx]) for i, j in itertools.combinations(range(S), 2)]
        assert rows[c]["n_images"] == len(idx)
        assert rows[c]["churn_mean"] == pytest.approx(np.mean(per_pair))
        assert rows[c]["churn_max"] == pytest.approx(max(per_pair))
        assert rows[c]["accuracy_mean"] == pytest.approx(np.mean([preds[s, k] == c for s in range(S) for k in idx]))
    assert rows[9]["n_images"] == 0 and math.isnan(rows[9]["churn_mean"])


# --- ensemble ------------------------------------------------------------------------------------


def ece_by_loop(conf, correct, n_bins):
    """Expected calibration error written out bin by bin (bins (lo, hi], the first also takes 0)."""
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = [(c, ok) for c, ok in zip(conf, correct) if (lo < c <= hi) or (b == 0 and c == 0)]
        if inside:
            total += len(inside) / len(conf) * abs(np.mean([ok for _, ok in inside]) - np.mean([c for c, _ in inside]))
    return total


def test_ensemble_matches_scipy_softmax_and_a_binwise_ece(runs):
    logits, labels = runs
    row = study.ensemble(logits, labels, n_bins=10)
    probs = special.softmax(logits.astype(np.float64), axis=2)
    mean = probs.mean(axis=0)
    assert row["ensemble_top1"] == pytest.approx(np.mean(mean.argmax(1) == labels))
    top5 = np.argsort(-mean, axis=1)[:, :5]
    assert row["ensemble_top5"] == pytest.approx(np.mean([labels[k] in top5[k] for k in range(N)]))
    assert row["ensemble_ece"] == pytest.approx(ece_by_loop(mean.max(1), mean.argmax(1) == labels, 10), abs=1e-9)
    assert row["ensemble_nll"] == pytest.approx(-np.mean(np.log(mean[np.arange(N), labels])))
    seeds_top1 = [np.mean(p.argmax(1) == labels) for p in probs]
    assert row["seeds_mean_top1"] == pytest.approx(np.mean(seeds_top1))
    assert row["top1_gain"] == pytest.approx(row["ensemble_top1"] - np.mean(seeds_top1))
    seeds_nll = [-np.mean(special.log_softmax(lg.astype(np.float64), axis=1)[np.arange(N), labels]) for lg in logits]
    assert row["seeds_mean_nll"] == pytest.approx(np.mean(seeds_nll))
    assert row["nll_gain"] < 0  # averaging softmax never raises the mean NLL (Jensen)
    assert row["n_seeds"] == S and row["ece_bins"] == 10


def test_stack_predictions_refuses_seeds_on_other_images(tmp_path, runs):
    logits, labels = runs
    write_npz(tmp_path / "a.npz", logits=logits[0], labels=labels)
    write_npz(tmp_path / "b.npz", logits=logits[1], labels=np.roll(labels, 1))
    stacked, lab = study.stack_predictions([tmp_path / "a.npz", tmp_path / "a.npz"])
    assert stacked.shape == (2, N, C) and np.array_equal(lab, labels)
    with pytest.raises(DataError, match="b.npz: labels differ"):
        study.stack_predictions([tmp_path / "a.npz", tmp_path / "b.npz"])


# --- variance and its sources --------------------------------------------------------------------


def test_variance_interval_is_the_chi_square_interval():
    x = [0.61, 0.64, 0.59, 0.655, 0.62]
    v = study.variance_interval(x)
    s2 = np.var(x, ddof=1)
    assert v["var"] == pytest.approx(s2) and v["sd"] == pytest.approx(np.std(x, ddof=1))
    # chi2.isf(a) is chi2.ppf(1 - a): the upper quantile bounds the variance from below.
    assert v["var_low"] == pytest.approx(4 * s2 / stats.chi2.isf(0.025, 4))
    assert v["var_high"] == pytest.approx(4 * s2 / stats.chi2.isf(0.975, 4))
    assert v["var_high"] / v["var_low"] > 10  # five seeds pin a variance down to a factor of ~13 only
    assert math.isnan(study.variance_interval([0.6])["var"])


def test_chi_square_interval_covers_the_true_variance_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = [(v["var_low"] <= 4.0 <= v["var_high"])
            for v in (study.variance_interval(rng.normal(0, 2.0, 3)) for _ in range(2000))]
    assert np.mean(hits) == pytest.approx(0.95, abs=0.02)


def test_variance_ratio_interval_uses_the_f_distribution():
    ratio, low, high = study.variance_ratio_interval(2.0, 4, 5.0, 6)
    assert ratio == pytest.approx(0.4)
    assert low == pytest.approx(0.4 / stats.f.ppf(0.975, 3, 5))
    assert high == pytest.approx(0.4 * stats.f.ppf(0.975, 5, 3))  # 1 / F(a; d1, d2) = F(1-a; d2, d1)
    assert all(math.isnan(v) for v in study.variance_ratio_interval(1.0, 3, 0.0, 3))


RECIPE = {"epochs": 2, "lr": 0.1, "width": 8}


def recipes_study():
    return {"base": {**RECIPE, "vary": "all"}, "other": {**RECIPE, "lr": 0.2, "vary": "all"},
            "base_data": {**RECIPE, "vary": "data"}, "base_init": {**RECIPE, "vary": "init"},
            "base_none": {**RECIPE, "vary": "none"}}


def test_families_group_recipes_that_differ_only_in_vary():
    fams = study.families(recipes_study())
    assert fams == [["base", "base_init", "base_data", "base_none"]]  # "other" alone is no family
    twins = {**recipes_study(), "base_again": {**RECIPE, "vary": "all"}}
    with pytest.raises(DataError, match="base, base_again are identical"):
        study.families(twins)
    # vary missing counts as its default, all
    assert study.families({"a": dict(RECIPE), "b": {**RECIPE, "vary": "init"}}) == [["a", "b"]]


def test_variance_sources_shares_are_variance_ratios_with_f_intervals():
    values = {"base": [0.60, 0.64, 0.62, 0.67], "base_init": [0.61, 0.63, 0.62, 0.625],
              "base_data": [0.60, 0.66, 0.63, 0.61], "base_none": [0.62, 0.62, 0.62, 0.62], "other": [0.5, 0.6]}
    rows = study.variance_sources(recipes_study(), values, "top1")
    by = {r["recipe"]: r for r in rows}
    assert set(by) == {"base", "base_init", "base_data", "base_none"}
    total = np.var(values["base"], ddof=1)
    assert by["base"]["share"] == 1.0 and by["base"]["var"] == pytest.approx(total)
    for name in ("base_init", "base_data"):
        ratio = np.var(values[name], ddof=1) / total
        assert by[name]["share"] == pytest.approx(ratio)
        assert by[name]["share_ci_low"] == pytest.approx(ratio / stats.f.ppf(0.975, 3, 3))
        assert by[name]["share_ci_high"] == pytest.approx(ratio / stats.f.ppf(0.025, 3, 3))
        assert by[name]["sd_ci_high"] == pytest.approx(math.sqrt(3 * np.var(values[name], ddof=1)
                                                                 / stats.chi2.ppf(0.025, 3)))
        assert by[name]["share_of"] == "base"
    assert by["base_none"]["var"] == 0 and by["base_none"]["share"] == 0  # a deterministic CPU: nothing left


def test_variance_sources_without_a_vary_all_member_give_no_share():
    recipes = {"a": {**RECIPE, "vary": "init"}, "b": {**RECIPE, "vary": "data"}}
    rows = study.variance_sources(recipes, {"a": [0.1, 0.2, 0.3], "b": [0.2, 0.2, 0.25]}, "top1")
    assert all(math.isnan(r["share"]) and "no vary: all" in r["note"] for r in rows)


# --- test-set noise ------------------------------------------------------------------------------


def test_test_set_noise_predicted_and_excess_variance_match_numpy_covariances():
    rng = np.random.default_rng(2)
    correct = (rng.random((5, 200)) < rng.random(200)).astype(int)
    row = study.test_set_noise(correct)
    acc = correct.mean(axis=1)
    assert row["observed_var"] == pytest.approx(np.var(acc, ddof=1))
    cov = np.cov(correct.T)  # [images, images], ddof=1
    assert row["predicted_var"] == pytest.approx(np.trace(cov) / 200**2)
    assert row["excess_var"] == pytest.approx((cov.sum() - np.trace(cov)) / 200**2)
    assert row["predicted_share"] == pytest.approx(np.trace(cov) / cov.sum())
    p = correct.mean(axis=0)
    assert row["always_correct"] == np.sum(p == 1) and row["never_correct"] == np.sum(p == 0)
    assert row["always_correct"] + row["never_correct"] + row["sometimes_correct"] == 200


def test_independent_images_are_all_test_set_noise_and_a_shared_shift_is_not():
    """Seeds whose images are independent coins: the predicted variance is the observed one. Seeds
    that also share a per-seed shift (a better or worse model on the whole distribution): less."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0.2, 0.95, 400)
    coins = (rng.random((3000, 400)) < p).astype(np.int8)
    assert study.test_set_noise(coins)["predicted_share"] == pytest.approx(1.0, abs=0.08)
    shift = rng.normal(0, 0.08, (3000, 1))
    shifted = (rng.random((3000, 400)) < np.clip(p + shift, 0, 1)).astype(np.int8)
    assert study.test_set_noise(shifted)["predicted_share"] < 0.5


# --- selection optimism --------------------------------------------------------------------------


def test_selection_optimism_is_best_minus_last_with_a_t_interval():
    hist = [(np.array([1, 2, 3, 4]), np.array([0.3, 0.5, 0.55, 0.52])),
            (np.array([1, 2, 3, 4]), np.array([0.3, 0.6, 0.6, 0.58])),
            (np.array([1, 2, 3, 4]), np.array([0.2, 0.4, 0.5, 0.5]))]
    rows = study.selection_optimism(hist, [0, 1, 2])
    seeds = [r for r in rows if r["row"] == "seed"]
    assert [r["best_epoch"] for r in seeds] == [3, 2, 3]  # the first best epoch, as best_test picks it
    opt = np.array([0.55 - 0.52, 0.6 - 0.58, 0.0])
    assert [r["optimism"] for r in seeds] == pytest.approx(opt)
    stat = {r["row"]: r for r in rows if r["row"] != "seed"}
    half = stats.t.ppf(0.975, 2) * np.std(opt, ddof=1) / math.sqrt(3)
    assert stat["mean"]["optimism"] == pytest.approx(opt.mean())
    assert stat["ci95_low"]["optimism"] == pytest.approx(opt.mean() - half)
    assert stat["ci95_high"]["last_test_acc"] == pytest.approx(
        np.mean([0.52, 0.58, 0.5]) + stats.t.ppf(0.975, 2) * np.std([0.52, 0.58, 0.5], ddof=1) / math.sqrt(3))


# --- A vs B --------------------------------------------------------------------------------------

A = {"recipe": "a", "seeds": [0, 1, 2, 3], "values": [0.640, 0.652, 0.631, 0.660]}
B = {"recipe": "b", "seeds": [3, 2, 1, 0], "values": [0.650, 0.625, 0.641, 0.628]}  # seed order differs


def test_paired_comparison_matches_scipy_ttest_rel():
    row = study.compare(A, B, "top1", width=0.01)
    xa = np.array(A["values"])
    xb = np.array(B["values"])[::-1]  # B by seed 0..3
    ref = stats.ttest_rel(xa, xb)
    ci = ref.confidence_interval(0.95)
    assert row["test"] == "paired"
    assert row["difference"] == pytest.approx(np.mean(xa - xb))
    assert row["t"] == pytest.approx(ref.statistic) and row["p_value"] == pytest.approx(ref.pvalue)
    assert row["df"] == ref.df
    assert row["ci95_low"] == pytest.approx(ci.low) and row["ci95_high"] == pytest.approx(ci.high)
    d = xa - xb
    assert row["p_a_beats_b"] == pytest.approx(stats.norm.sf(0, loc=d.mean(), scale=d.std(ddof=1)))
    assert row["p_a_beats_b_observed"] == pytest.approx(np.mean(d > 0))


def test_welch_comparison_matches_scipy_ttest_ind():
    b = {**B, "seeds": [4, 5, 6], "values": B["values"][:3]}
    row = study.compare(A, b, "top1", width=0.01)
    ref = stats.ttest_ind(A["values"], b["values"], equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert row["test"] == "welch" and "different seeds" in row["note"]
    assert row["t"] == pytest.approx(ref.statistic) and row["p_value"] == pytest.approx(ref.pvalue)
    assert row["df"] == pytest.approx(ref.df)
    assert row["ci95_low"] == pytest.approx(ci.low) and row["ci95_high"] == pytest.approx(ci.high)
    u = stats.mannwhitneyu(A["values"], b["values"]).statistic
    assert row["p_a_beats_b_observed"] == pytest.approx(u / (4 * 3))
    sd = math.sqrt(np.var(A["values"], ddof=1) + np.var(b["values"], ddof=1))
    assert row["p_a_beats_b"] == pytest.approx(stats.norm.sf(0, loc=row["difference"], scale=sd))


def test_hedges_g_from_the_pooled_t_statistic():
    xa, xb = A["values"], B["values"][:3]
    t = stats.ttest_ind(xa, xb, equal_var=True).statistic
    d = t * math.sqrt(1 / 4 + 1 / 3)  # Cohen's d with the pooled sd
    assert study.hedges_g(xa, xb) == pytest.approx(d * (1 - 3 / (4 * 7 - 9)))


def test_lower_ece_beats_higher():
    a = {"recipe": "a", "seeds": [0, 1, 2], "values": [0.02, 0.03, 0.025]}
    b = {"recipe": "b", "seeds": [0, 1, 2], "values": [0.05, 0.06, 0.04]}
    row = study.compare(a, b, "ece", width=0.01)
    assert row["difference"] < 0 and row["p_a_beats_b"] > 0.9 and row["p_a_beats_b_observed"] == 1.0


@pytest.mark.parametrize("paired", [True, False])
def test_seeds_needed_is_the_smallest_n_whose_interval_fits(paired):
    width = 0.004
    if paired:
        sd = 0.006
        n = study.seeds_needed(width, sd)
        full = [2 * stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k) for k in (n - 1, n)]
    else:
        sa, sb = 0.006, 0.009
        n = study.seeds_needed(width, sa, sb)

        def full_at(k):
            va, vb = sa**2 / k, sb**2 / k
            df = (va + vb) ** 2 / (va**2 / (k - 1) + vb**2 / (k - 1))
            return 2 * stats.t.ppf(0.975, df) * math.sqrt(va + vb)

        full = [full_at(n - 1), full_at(n)]
    assert n > 2 and full[1] <= width < full[0]
    assert math.isnan(study.seeds_needed(1e-9, 0.01))  # past MAX_SEEDS


def test_one_seed_each_gives_no_test_but_no_crash():
    row = study.compare({"recipe": "a", "seeds": [0], "values": [0.6]}, {"recipe": "b", "seeds": [0], "values": [0.5]},
                        "top1", width=0.01)
    assert row["difference"] == pytest.approx(0.1) and math.isnan(row["p_value"]) and row["note"]


def test_default_pairs_leave_out_one_source_variants():
    recipes = recipes_study()
    assert study.default_pairs(["base", "base_init", "other", "base_data"], recipes) == [("base", "other")]


# --- figures -------------------------------------------------------------------------------------


def test_agreement_figure_shows_the_numbers(runs):
    logits, labels = runs
    preds = logits.argmax(axis=2)
    correct = preds == labels
    matrix = study.churn_matrix(preds)
    noise = study.test_set_noise(correct)
    rates = study.correctness_rates(correct)
    fig = study_plots.seeds_agreement(matrix, [0, 1, 2, 3], rates, noise, [0.01, 0.0, 0.02, 0.005], "base")
    heat, bars, strip = fig.axes[:3]
    shown = sorted(float(t.get_text()) for t in heat.texts)
    expected = sorted(round(100 * matrix[i, j], 1) for i in range(S) for j in range(S) if i != j)
    assert shown == pytest.approx(expected, abs=0.051)
    heights = [p.get_height() for p in bars.patches]
    assert heights == list(np.bincount(correct.sum(axis=0), minlength=S + 1))
    assert "observed" in bars.texts[0].get_text()
    assert len(strip.collections[0].get_offsets()) == 4
    study_plots.plt.close(fig)


def test_differences_and_sources_figures_label_every_row():
    rows = [study.compare(A, B, "top1", 0.01), study.compare(B, A, "top1", 0.01)]
    fig = study_plots.differences(rows, "top1")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a - b", "b - a"]
    study_plots.plt.close(fig)
    values = {"base": [0.60, 0.64, 0.62], "base_init": [0.61, 0.63, 0.62], "base_data": [0.60, 0.66, 0.63]}
    srows = study.variance_sources(recipes_study(), values, "top1")
    fig = study_plots.variance_sources(srows, values, "top1")
    left, right = fig.axes[:2]
    assert sum(len(c.get_offsets()) for c in left.collections) == 9
    assert [t.get_text() for t in right.get_xticklabels()] == ["all", "init", "data"]
    assert right.get_ylim()[0] == 0
    study_plots.plt.close(fig)


# --- the scripts, standalone on hand-made files ---------------------------------------------------


@pytest.fixture(scope="module")
def seed_files(tiny_data, tmp_path_factory):
    """predictions.npz, history.csv and summary.json of recipes x and y, seeds 0-2, on tiny_data's test set."""
    from cifar100 import data

    d = tmp_path_factory.mktemp("seed_files")
    test, names, _, _ = data.load_test(tiny_data)
    rng = np.random.default_rng(4)
    signal = rng.normal(size=(len(test.labels), len(names))) + 2.5 * np.eye(len(names))[test.labels]
    for recipe, shift in (("x", 0.0), ("y", -0.3)):
        for seed in range(3):
            run = d / recipe / f"seed{seed}"
            run.mkdir(parents=True)
            logits = (signal + rng.normal(scale=0.8, size=signal.shape) + shift * np.eye(len(names))[test.labels])
            write_npz(run / "predictions.npz", logits=logits.astype(np.float32), labels=test.labels)
            acc = [0.2, 0.5 + 0.01 * seed, 0.48]
            (run / "history.csv").write_text("epoch,test_acc\n" + "".join(f"{e + 1},{a}\n" for e, a in enumerate(acc)))
            top1 = float((logits.argmax(1) == test.labels).mean())
            (run / "summary.json").write_text(json.dumps({"recipe": recipe, "seed": seed, "top1": top1,
                                                          "top5": 0.9, "macro_f1": top1 - 0.01, "ece": 0.05}))
    return d


def test_seeds_study_script_writes_every_table(seed_files, tiny_data, tmp_path):
    from helpers import load_script

    runs = [seed_files / "x" / f"seed{s}" for s in range(3)]
    out = {k: tmp_path / f"{k}.csv" for k in ("churn", "churn-per-class", "ensemble", "test-set-noise",
                                              "selection-optimism")}
    load_script("seeds_study").main(
        ["--recipe", "x", "--predictions", *[str(r / "predictions.npz") for r in runs],
         "--histories", *[str(r / "history.csv") for r in runs], "--seeds", "0", "1", "2", "--data-dir", str(tiny_data),
         *[a for k, p in out.items() for a in (f"--{k}", str(p))], "--figure", str(tmp_path / "fig.png")])
    churn = list(csv.DictReader(open(out["churn"])))
    preds = [np.load(r / "predictions.npz")["logits"].argmax(1) for r in runs]
    assert float(churn[0]["churn"]) == pytest.approx(np.mean(preds[0] != preds[1]))
    opt = [r for r in csv.DictReader(open(out["selection-optimism"])) if r["row"] == "seed"]
    assert [float(r["optimism"]) for r in opt] == pytest.approx([0.02, 0.03, 0.04])
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def test_differences_and_variance_scripts(seed_files, tmp_path):
    from helpers import load_script

    summaries = sorted(str(p) for p in seed_files.glob("*/seed*/summary.json"))
    recipes = json.dumps({"x": {"lr": 0.1}, "y": {"lr": 0.1, "vary": "init"}})
    load_script("differences").main(["--summaries", *summaries, "--recipes-json", recipes, "--pairs", "x:y",
                                     "--table", str(tmp_path / "d.csv"), "--figure", str(tmp_path / "d.png")])
    rows = {r["metric"]: r for r in csv.DictReader(open(tmp_path / "d.csv"))}
    xa = [json.loads((seed_files / f"x/seed{s}/summary.json").read_text())["top1"] for s in range(3)]
    xb = [json.loads((seed_files / f"y/seed{s}/summary.json").read_text())["top1"] for s in range(3)]
    assert float(rows["top1"]["p_value"]) == pytest.approx(stats.ttest_rel(xa, xb).pvalue)
    assert rows["top5"]["p_value"] == ""  # the same top-5 everywhere: no spread, an empty cell
    load_script("variance").main(["--summaries", *summaries, "--recipes-json", recipes,
                                  "--table", str(tmp_path / "v.csv"), "--figure", str(tmp_path / "v.png")])
    share = [r for r in csv.DictReader(open(tmp_path / "v.csv")) if r["metric"] == "top1" and r["recipe"] == "y"]
    assert float(share[0]["share"]) == pytest.approx(np.var(xb, ddof=1) / np.var(xa, ddof=1))
    with pytest.raises(DataError, match="--pairs x:z: no summary.json of recipe 'z'"):
        load_script("differences").main(["--summaries", *summaries, "--recipes-json", recipes, "--pairs", "x:z",
                                         "--table", str(tmp_path / "d.csv"), "--figure", str(tmp_path / "d.png")])


def test_scripts_run_on_one_seed_and_one_recipe(seed_files, tiny_data, tmp_path):
    """config.yaml's default (one seed, one recipe) still gets every file: empty cells and notes."""
    from helpers import load_script

    run = seed_files / "x" / "seed0"
    flags = [a for k in ("churn", "churn-per-class", "ensemble", "test-set-noise", "selection-optimism")
             for a in (f"--{k}", str(tmp_path / f"{k}.csv"))]
    load_script("seeds_study").main(["--recipe", "x", "--predictions", str(run / "predictions.npz"), "--histories",
                                     str(run / "history.csv"), "--seeds", "0", "--data-dir", str(tiny_data), *flags,
                                     "--figure", str(tmp_path / "fig.png")])
    assert list(csv.DictReader(open(tmp_path / "churn.csv"))) == []
    (noise,) = csv.DictReader(open(tmp_path / "test-set-noise.csv"))
    assert noise["observed_var"] == "" and noise["note"] == "one seed: no variance"
    one = str(run / "summary.json")
    load_script("differences").main(["--summaries", one, "--recipes-json", '{"x": {}}',
                                     "--table", str(tmp_path / "d.csv"), "--figure", str(tmp_path / "d.png")])
    assert open(tmp_path / "d.csv").read().startswith("recipe_a,recipe_b,metric,test")
    assert list(csv.DictReader(open(tmp_path / "d.csv"))) == []
    load_script("variance").main(["--summaries", one, "--recipes-json", '{"x": {}}',
                                  "--table", str(tmp_path / "v.csv"), "--figure", str(tmp_path / "v.png")])
    assert list(csv.DictReader(open(tmp_path / "v.csv"))) == [] and (tmp_path / "v.png").is_file()
