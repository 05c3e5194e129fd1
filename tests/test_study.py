"""Reproducibility-study numbers (cifar100.intervals, seed_agreement, variance_sources,
recipe_differences), each checked against an independent computation (scipy.stats tests and
distributions, plain numpy loops, simulations with known truth), and the study figures' artists."""

import csv
import itertools
import json
import math

import numpy as np
import pytest
from scipy import special, stats

from cifar100 import intervals, plan, study_plots
from cifar100 import recipe_differences as rd
from cifar100 import seed_agreement as agreement
from cifar100 import variance_sources as sources
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
    rows = agreement.churn_rows(preds, labels, seeds)
    pairs = [r for r in rows if r["row"] == "pair"]
    assert [(r["seed_a"], r["seed_b"]) for r in pairs] == list(itertools.combinations(seeds, 2))
    matrix = agreement.churn_matrix(preds)
    for r, (i, j) in zip(pairs, itertools.combinations(range(S), 2)):
        differ = sum(int(preds[i, k] != preds[j, k]) for k in range(N)) / N
        both = sum(int(preds[i, k] == labels[k] == preds[j, k]) for k in range(N)) / N
        only_a = sum(int(preds[i, k] == labels[k] != preds[j, k]) for k in range(N)) / N
        assert r["churn"] == pytest.approx(differ) and matrix[i, j] == matrix[j, i] == pytest.approx(differ)
        assert r["both_correct"] == pytest.approx(both) and r["only_a_correct"] == pytest.approx(only_a)
        parts = r["both_correct"] + r["only_a_correct"] + r["only_b_correct"] + r["both_wrong"]
        assert parts == pytest.approx(1.0)
        assert r["churn"] >= r["only_a_correct"] + r["only_b_correct"] - 1e-12
    assert np.all(np.diag(matrix) == 0)
    assert 0 < np.mean([r["churn"] for r in pairs]) < 0.5  # the fixture's seeds mostly agree


def test_mean_churn_has_a_jackknife_interval_over_seeds(runs):
    """The "mean" row: mean over pairs, and the jackknife over seeds written out with numpy: leave
    seed k out, average the pairs left, se^2 = (n-1)/n sum (theta_k - mean)^2, t with n-1 df."""
    logits, labels = runs
    preds = logits.argmax(axis=2)
    rows = agreement.churn_rows(preds, labels, [0, 1, 2, 3])
    (mean,) = [r for r in rows if r["row"] == "mean"]
    churn = {(i, j): np.mean(preds[i] != preds[j]) for i, j in itertools.combinations(range(S), 2)}
    est = np.mean(list(churn.values()))
    loo = np.array([np.mean([c for (i, j), c in churn.items() if k not in (i, j)]) for k in range(S)])
    se = math.sqrt((S - 1) / S * np.sum((loo - loo.mean()) ** 2))
    half = stats.t.ppf(0.975, S - 1) * se
    assert mean["churn"] == pytest.approx(est) and (mean["n_seeds"], mean["n_pairs"]) == (4, 6)
    assert mean["churn_ci95_low"] == pytest.approx(max(0.0, est - half))
    assert mean["churn_ci95_high"] == pytest.approx(est + half)
    assert mean["both_wrong"] == pytest.approx(np.mean([r["both_wrong"] for r in rows if r["row"] == "pair"]))
    # Two seeds: one pair, its churn, no interval; one seed: no rows at all.
    (pair, two) = agreement.churn_rows(preds[:2], labels, [0, 1])
    assert two["churn"] == pytest.approx(pair["churn"]) and math.isnan(two["churn_ci95_low"])
    assert agreement.churn_rows(preds[:1], labels, [0]) == []


def test_jackknife_of_a_mean_is_the_t_interval():
    """For a plain mean the jackknife se is the usual s / sqrt(n): the interval is scipy's t interval."""
    x = np.array([0.2, 0.35, 0.31, 0.4, 0.28])
    loo = [np.delete(x, k).mean() for k in range(5)]
    ji = intervals.jackknife_interval(x.mean(), loo)
    low, high = stats.t.interval(0.95, 4, loc=x.mean(), scale=stats.sem(x))
    assert (ji["low"], ji["high"]) == pytest.approx((low, high))


def test_churn_per_class_matches_a_loop_and_leaves_empty_classes_blank(runs):
    logits, labels = runs
    preds = logits.argmax(axis=2)
    rows = agreement.churn_per_class(preds, labels, C)
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
    row = agreement.ensemble(logits, labels, n_bins=10)
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
    # top-1 gain per image: ensemble right (0/1) minus the share of seeds right; scipy's t interval
    per_image = (mean.argmax(1) == labels) - np.mean([p.argmax(1) == labels for p in probs], axis=0)
    assert per_image.mean() == pytest.approx(row["top1_gain"])
    ci = stats.ttest_1samp(per_image, 0).confidence_interval(0.95)
    assert (row["top1_gain_ci95_low"], row["top1_gain_ci95_high"]) == pytest.approx((ci.low, ci.high))
    in_top5 = np.array([labels[k] in np.argsort(-mean[k])[:5] for k in range(N)])
    per_image5 = in_top5 - np.mean([[labels[k] in np.argsort(-p[k])[:5] for k in range(N)] for p in probs], axis=0)
    ci5 = stats.ttest_1samp(per_image5, 0).confidence_interval(0.95)
    assert (row["top5_gain_ci95_low"], row["top5_gain_ci95_high"]) == pytest.approx((ci5.low, ci5.high))


def test_stack_predictions_refuses_seeds_on_other_images(tmp_path, runs):
    logits, labels = runs
    write_npz(tmp_path / "a.npz", logits=logits[0], labels=labels)
    write_npz(tmp_path / "b.npz", logits=logits[1], labels=np.roll(labels, 1))
    stacked, lab = agreement.stack_predictions([tmp_path / "a.npz", tmp_path / "a.npz"])
    assert stacked.shape == (2, N, C) and np.array_equal(lab, labels)
    with pytest.raises(DataError, match="b.npz: labels differ"):
        agreement.stack_predictions([tmp_path / "a.npz", tmp_path / "b.npz"])


# --- variance and its sources --------------------------------------------------------------------


def test_variance_interval_is_the_chi_square_interval():
    x = [0.61, 0.64, 0.59, 0.655, 0.62]
    v = intervals.variance_interval(x)
    s2 = np.var(x, ddof=1)
    assert v["var"] == pytest.approx(s2) and v["sd"] == pytest.approx(np.std(x, ddof=1))
    # chi2.isf(a) is chi2.ppf(1 - a): the upper quantile bounds the variance from below.
    assert v["var_low"] == pytest.approx(4 * s2 / stats.chi2.isf(0.025, 4))
    assert v["var_high"] == pytest.approx(4 * s2 / stats.chi2.isf(0.975, 4))
    assert v["var_high"] / v["var_low"] > 10  # five seeds pin a variance down to a factor of ~13 only
    assert math.isnan(intervals.variance_interval([0.6])["var"])


def test_chi_square_interval_covers_the_true_variance_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = [(v["var_low"] <= 4.0 <= v["var_high"])
            for v in (intervals.variance_interval(rng.normal(0, 2.0, 3), bounds=None) for _ in range(2000))]
    assert np.mean(hits) == pytest.approx(0.95, abs=0.02)


@pytest.mark.parametrize(("n", "low", "high"), [(3, 0.27, 39.5), (10, 0.47, 3.33)])
def test_variance_interval_width_in_units_of_the_sample_variance(n, low, high):
    """The README's figures: with 3 seeds sigma^2 lies in [0.27, 39.5] x s^2, with 10 in [0.47, 3.33]."""
    x = np.linspace(0.60, 0.61, n)
    v = intervals.variance_interval(x)
    s2 = np.var(x, ddof=1)
    assert v["var_low"] / s2 == pytest.approx((n - 1) / stats.chi2.ppf(0.975, n - 1)) == pytest.approx(low, abs=0.005)
    assert v["var_high"] / s2 == pytest.approx((n - 1) / stats.chi2.ppf(0.025, n - 1))
    assert v["var_high"] / s2 == pytest.approx(high, abs=0.05)


def test_the_sd_of_a_share_is_cut_at_one_half():
    """Two seeds at 0.30 and 0.98: the chi-square upper end of the sd is about 10.7, but a quantity
    in [0, 1] cannot have an sd above 0.5 (variance 0.25)."""
    x = [0.30, 0.98]
    s2 = np.var(x, ddof=1)
    v = intervals.variance_interval(x)
    assert math.sqrt(s2 / stats.chi2.ppf(0.025, 1)) > 10
    assert v["sd_high"] == 0.5 and v["var_high"] == 0.25 and v["truncated"]
    assert v["sd_low"] == pytest.approx(math.sqrt(s2 / stats.chi2.ppf(0.975, 1)))
    assert intervals.variance_interval(x, bounds=(-1.0, 1.0))["sd_high"] == 1.0  # a difference of two shares


def test_variance_ratio_interval_uses_the_f_distribution():
    ratio, low, high = intervals.ratio_interval(2.0, 4, 5.0, 6)
    assert ratio == pytest.approx(0.4)
    assert low == pytest.approx(0.4 / stats.f.ppf(0.975, 3, 5))
    assert high == pytest.approx(0.4 * stats.f.ppf(0.975, 5, 3))  # 1 / F(a; d1, d2) = F(1-a; d2, d1)
    assert all(math.isnan(v) for v in intervals.ratio_interval(1.0, 3, 0.0, 3))


RECIPE = {"epochs": 2, "lr": 0.1, "width": 8}


def recipes_study():
    return {"base": {**RECIPE, "vary": "all"}, "other": {**RECIPE, "lr": 0.2, "vary": "all"},
            "base_data": {**RECIPE, "vary": "data"}, "base_init": {**RECIPE, "vary": "init"},
            "base_order": {**RECIPE, "vary": "order"}, "base_none": {**RECIPE, "vary": "none"}}


def test_families_group_recipes_that_differ_only_in_vary():
    fams = plan.families(recipes_study())
    assert fams == [["base", "base_init", "base_data", "base_order", "base_none"]]  # "other" alone is no family
    assert plan.SOURCES == ("all", "init", "data", "order", "augment", "none")  # the schema's enum
    twins = {**recipes_study(), "base_again": {**RECIPE, "vary": "all"}}
    with pytest.raises(DataError, match="base, base_again are identical"):
        plan.families(twins)
    # vary missing counts as its default, all
    assert plan.families({"a": dict(RECIPE), "b": {**RECIPE, "vary": "init"}}) == [["a", "b"]]


def test_variance_sources_shares_are_variance_ratios_with_f_intervals():
    values = {"base": [0.60, 0.64, 0.62, 0.67], "base_init": [0.61, 0.63, 0.62, 0.625],
              "base_data": [0.60, 0.66, 0.63, 0.61], "base_none": [0.62, 0.62, 0.62, 0.62], "other": [0.5, 0.6]}
    rows = sources.variance_sources(recipes_study(), values, "top1")
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


def test_variance_sources_recover_known_init_and_data_variance_at_the_stated_rate():
    """Simulated per-seed top-1 with known sources: initialisation I (sd 0.02) and data order and
    augmentation D (sd 0.01), additive. vary: all draws both per seed; vary: init draws I per seed
    and keeps D at the fixed seed's draw; vary: data the reverse. Every recipe's seeds are fresh
    draws (the fixed seed is never a varied one), so the three samples are independent. Each
    variance's chi-square interval and each share's F interval cover the truth in about 95% of
    studies."""
    rng = np.random.default_rng(7)
    sd_init, sd_data, n, studies = 0.02, 0.01, 5, 600
    truth = {"base": sd_init**2 + sd_data**2, "base_init": sd_init**2, "base_data": sd_data**2}
    recipes = {k: v for k, v in recipes_study().items() if k in truth}
    var_hits, share_hits = {k: [] for k in truth}, {k: [] for k in ("base_init", "base_data")}
    for _ in range(studies):
        fixed_init, fixed_data = rng.normal(0, sd_init), rng.normal(0, sd_data)
        values = {"base": 0.6 + rng.normal(0, sd_init, n) + rng.normal(0, sd_data, n),
                  "base_init": 0.6 + rng.normal(0, sd_init, n) + fixed_data,
                  "base_data": 0.6 + fixed_init + rng.normal(0, sd_data, n)}
        for r in sources.variance_sources(recipes, values, "top1"):
            var_hits[r["recipe"]].append(r["var_ci_low"] <= truth[r["recipe"]] <= r["var_ci_high"])
            if r["recipe"] in share_hits:
                share_hits[r["recipe"]].append(
                    r["share_ci_low"] <= truth[r["recipe"]] / truth["base"] <= r["share_ci_high"])
    se = math.sqrt(0.95 * 0.05 / studies)  # about 0.009: allow four of them
    for hits in (*var_hits.values(), *share_hits.values()):
        assert np.mean(hits) == pytest.approx(0.95, abs=4 * se)


def test_variance_sources_without_a_vary_all_member_give_no_share():
    recipes = {"a": {**RECIPE, "vary": "init"}, "b": {**RECIPE, "vary": "data"}}
    rows = sources.variance_sources(recipes, {"a": [0.1, 0.2, 0.3], "b": [0.2, 0.2, 0.25]}, "top1")
    assert all(math.isnan(r["share"]) and "no vary: all" in r["note"] for r in rows)


# --- test-set noise ------------------------------------------------------------------------------


def test_test_set_noise_predicted_and_excess_variance_match_numpy_covariances():
    rng = np.random.default_rng(2)
    correct = (rng.random((5, 200)) < rng.random(200)).astype(int)
    row = agreement.test_set_noise(correct)
    acc = correct.mean(axis=1)
    assert row["observed_var"] == pytest.approx(np.var(acc, ddof=1))
    cov = np.cov(correct.T)  # [images, images], ddof=1
    assert row["predicted_var"] == pytest.approx(np.trace(cov) / 200**2)
    assert row["excess_var"] == pytest.approx((cov.sum() - np.trace(cov)) / 200**2)
    assert row["predicted_share"] == pytest.approx(np.trace(cov) / cov.sum())
    # predicted_var = sum p(1-p) / N^2 times the stated unbiasing factor S/(S-1) = 5/4
    assert row["unbiasing_factor"] == 1.25 and "5/4" in row["note"]
    assert row["predicted_var"] == pytest.approx(np.sum(correct.mean(0) * (1 - correct.mean(0))) * 1.25 / 200**2)
    # the share's interval: predicted over the observed variance's chi-square interval
    s2 = np.var(acc, ddof=1)
    assert row["predicted_share_ci_low"] == pytest.approx(row["predicted_var"] / (4 * s2 / stats.chi2.ppf(0.025, 4)))
    assert row["predicted_share_ci_high"] == pytest.approx(row["predicted_var"] / (4 * s2 / stats.chi2.ppf(0.975, 4)))
    p = correct.mean(axis=0)
    assert row["always_correct"] == np.sum(p == 1) and row["never_correct"] == np.sum(p == 0)
    assert row["always_correct"] + row["never_correct"] + row["sometimes_correct"] == 200


def test_independent_images_are_all_test_set_noise_and_a_shared_shift_is_not():
    """Seeds whose images are independent coins: the predicted variance is the observed one. Seeds
    that also share a per-seed shift (a better or worse model on the whole distribution): less."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0.2, 0.95, 400)
    coins = (rng.random((3000, 400)) < p).astype(np.int8)
    assert agreement.test_set_noise(coins)["predicted_share"] == pytest.approx(1.0, abs=0.08)
    shift = rng.normal(0, 0.08, (3000, 1))
    shifted = (rng.random((3000, 400)) < np.clip(p + shift, 0, 1)).astype(np.int8)
    assert agreement.test_set_noise(shifted)["predicted_share"] < 0.5


# --- selection optimism --------------------------------------------------------------------------


def test_selection_optimism_is_best_minus_last_with_a_t_interval():
    hist = [(np.array([1, 2, 3, 4]), np.array([0.3, 0.5, 0.55, 0.52])),
            (np.array([1, 2, 3, 4]), np.array([0.3, 0.6, 0.6, 0.58])),
            (np.array([1, 2, 3, 4]), np.array([0.2, 0.4, 0.5, 0.5]))]
    rows = agreement.selection_optimism(hist, [0, 1, 2])
    seeds = [r for r in rows if r["row"] == "seed"]
    assert [r["best_epoch"] for r in seeds] == [3, 2, 3]  # the first best epoch, as best_test picks it
    opt = np.array([0.55 - 0.52, 0.6 - 0.58, 0.0])
    assert [r["optimism"] for r in seeds] == pytest.approx(opt)
    stat = {r["row"]: r for r in rows if r["row"] != "seed"}
    half = stats.t.ppf(0.975, 2) * np.std(opt, ddof=1) / math.sqrt(3)
    assert stat["mean"]["optimism"] == pytest.approx(opt.mean())
    assert opt.mean() - half < 0 and stat["ci95_low"]["optimism"] == 0.0  # cut to [0, 1], like every accuracy
    assert stat["ci95_high"]["optimism"] == pytest.approx(opt.mean() + half)
    assert stat["ci95_high"]["last_test_acc"] == pytest.approx(
        np.mean([0.52, 0.58, 0.5]) + stats.t.ppf(0.975, 2) * np.std([0.52, 0.58, 0.5], ddof=1) / math.sqrt(3))


# --- A vs B --------------------------------------------------------------------------------------

A = {"recipe": "a", "seeds": [0, 1, 2, 3], "values": [0.640, 0.652, 0.631, 0.660]}
B = {"recipe": "b", "seeds": [3, 2, 1, 0], "values": [0.650, 0.625, 0.641, 0.628]}  # seed order differs
PLAN = {"width": 0.01, "effect": 0.01}


def every_metric(r: dict) -> dict:
    """The same per-seed values for every headline metric, as compare_pair takes them."""
    return {**r, "values": {m: r["values"] for m in rd.HIGHER_IS_BETTER}}


def test_paired_comparison_matches_scipy_ttest_rel():
    row = rd.compare(A, B, "top1", **PLAN)
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
    assert row["p_a_beats_b_same_seed"] == pytest.approx(stats.norm.sf(0, loc=d.mean(), scale=d.std(ddof=1)))
    assert row["share_a_beats_b_same_seed"] == pytest.approx(np.mean(d > 0))


def test_welch_comparison_matches_scipy_ttest_ind():
    b = {**B, "seeds": [4, 5, 6], "values": B["values"][:3]}
    row = rd.compare(A, b, "top1", **PLAN)
    ref = stats.ttest_ind(A["values"], b["values"], equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert row["test"] == "welch" and "different seeds" in row["note"]
    assert row["t"] == pytest.approx(ref.statistic) and row["p_value"] == pytest.approx(ref.pvalue)
    assert row["df"] == pytest.approx(ref.df)
    assert row["ci95_low"] == pytest.approx(ci.low) and row["ci95_high"] == pytest.approx(ci.high)
    u = stats.mannwhitneyu(A["values"], b["values"]).statistic
    assert row["share_a_beats_b_all_seed_pairs"] == pytest.approx(u / (4 * 3))
    assert math.isnan(row["p_a_beats_b_same_seed"]) and math.isnan(row["share_a_beats_b_same_seed"])
    xa, xb = np.array(A["values"]), np.array(b["values"])
    pooled = math.sqrt((3 * xa.var(ddof=1) + 2 * xb.var(ddof=1)) / 5)
    assert row["p_a_beats_b_fresh_seeds"] == pytest.approx(stats.norm.cdf((xa.mean() - xb.mean()) / pooled
                                                                          / math.sqrt(2)))


def test_a_difference_interval_stays_within_minus_one_and_one():
    a = {"recipe": "a", "seeds": [0, 1], "values": [0.05, 0.95]}
    b = {"recipe": "b", "seeds": [0, 1], "values": [0.9, 0.1]}
    row = rd.compare(a, b, "top1", **PLAN)
    ci = stats.ttest_rel(a["values"], b["values"]).confidence_interval(0.95)
    assert ci.low < -1 and ci.high > 1
    assert (row["ci95_low"], row["ci95_high"]) == (-1.0, 1.0)


def test_p_beats_intervals_invert_the_noncentral_t():
    """At each end of the interval the observed t sits at the 97.5% / 2.5% point of the noncentral t."""
    d = np.array([0.012, -0.004, 0.02, 0.009, 0.015])
    p, low, high = rd.p_beats_same_seed(d)
    n, t = len(d), math.sqrt(len(d)) * d.mean() / d.std(ddof=1)
    assert p == pytest.approx(stats.norm.cdf(d.mean() / d.std(ddof=1)))
    nc_low, nc_high = math.sqrt(n) * stats.norm.ppf(low), math.sqrt(n) * stats.norm.ppf(high)
    assert stats.nct.cdf(t, n - 1, nc_low) == pytest.approx(0.975, abs=1e-7)
    assert stats.nct.cdf(t, n - 1, nc_high) == pytest.approx(0.025, abs=1e-7)
    xa, xb = np.array([0.64, 0.65, 0.63, 0.66]), np.array([0.62, 0.63, 0.64])
    p, low, high = rd.p_beats_fresh_seeds(xa, xb)
    scale = math.sqrt(1 / 4 + 1 / 3)
    t = stats.ttest_ind(xa, xb, equal_var=True).statistic
    for end, q in ((low, 0.975), (high, 0.025)):
        nc = math.sqrt(2) * stats.norm.ppf(end) / scale
        assert stats.nct.cdf(t, 5, nc) == pytest.approx(q, abs=1e-7)


def test_p_beats_intervals_cover_the_truth_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    mu, sd = 0.004, 0.01  # true P(A beats B on a seed) = Phi(0.4)
    truth = stats.norm.cdf(mu / sd)
    hits = []
    for _ in range(300):
        _, low, high = rd.p_beats_same_seed(rng.normal(mu, sd, 4))
        hits.append(low <= truth <= high)
    assert np.mean(hits) == pytest.approx(0.95, abs=0.035)
    truth = stats.norm.cdf(mu / (sd * math.sqrt(2)))
    hits = []
    for _ in range(300):
        _, low, high = rd.p_beats_fresh_seeds(rng.normal(mu, sd, 3), rng.normal(0, sd, 5))
        hits.append(low <= truth <= high)
    assert np.mean(hits) == pytest.approx(0.95, abs=0.035)


def test_hedges_g_from_the_pooled_t_statistic():
    xa, xb = A["values"], B["values"][:3]
    t = stats.ttest_ind(xa, xb, equal_var=True).statistic
    d = t * math.sqrt(1 / 4 + 1 / 3)  # Cohen's d with the pooled sd
    assert rd.hedges_g(xa, xb) == pytest.approx(d * (1 - 3 / (4 * 7 - 9)))


def test_lower_ece_beats_higher():
    a = {"recipe": "a", "seeds": [0, 1, 2], "values": [0.02, 0.03, 0.025]}
    b = {"recipe": "b", "seeds": [0, 1, 2], "values": [0.05, 0.06, 0.04]}
    row = rd.compare(a, b, "ece", **PLAN)
    assert row["difference"] < 0 and row["p_a_beats_b_same_seed"] > 0.9 and row["share_a_beats_b_same_seed"] == 1.0
    assert row["p_a_beats_b_fresh_seeds"] > 0.9 and row["share_a_beats_b_all_seed_pairs"] == 1.0


def test_holm_matches_a_direct_step_down():
    p = [0.01, 0.04, 0.03, math.nan, 0.005]
    adj = rd.holm(p)
    finite = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m, expected, running = len(finite), {}, 0.0
    for k, (v, i) in enumerate(finite):
        running = max(running, min(1.0, (m - k) * v))
        expected[i] = running
    assert math.isnan(adj[3]) and all(adj[i] == pytest.approx(v) for i, v in expected.items())
    assert adj == pytest.approx([0.03, 0.06, 0.06, math.nan, 0.02], nan_ok=True)
    rows = rd.compare_pair(every_metric(A), every_metric(B), **PLAN)
    assert [r["metric"] for r in rows] == list(rd.HIGHER_IS_BETTER)
    assert [r["p_holm"] for r in rows] == pytest.approx(rd.holm([r["p_value"] for r in rows]))


@pytest.mark.parametrize("paired", [True, False])
def test_precision_seeds_is_the_smallest_n_whose_interval_fits(paired):
    width = 0.004
    if paired:
        sd = 0.006
        n = int(rd.precision_seeds(width, sd))
        full = [2 * stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k) for k in (n - 1, n)]
    else:
        sa, sb = 0.006, 0.009
        n = int(rd.precision_seeds(width, sa, sb))

        def full_at(k):
            va, vb = sa**2 / k, sb**2 / k
            df = (va + vb) ** 2 / (va**2 / (k - 1) + vb**2 / (k - 1))
            return 2 * stats.t.ppf(0.975, df) * math.sqrt(va + vb)

        full = [full_at(n - 1), full_at(n)]
    assert n > 2 and full[1] <= width < full[0]
    assert math.isnan(rd.precision_seeds(1e-12, 0.5))  # past MAX_SEEDS


def test_power_seeds_is_the_smallest_n_with_the_power_and_a_simulation_agrees():
    effect, sd = 0.01, 0.012

    def power(n):  # written out with scipy's noncentral t: P(|T| > t_crit)
        tc, nc = stats.t.ppf(0.975, n - 1), effect * math.sqrt(n) / sd
        return stats.nct.sf(tc, n - 1, nc) + stats.nct.cdf(-tc, n - 1, nc)

    n = int(rd.power_seeds(effect, sd, alpha=0.05, power=0.8))
    assert power(n) >= 0.8 > power(n - 1)
    # A paired t test on simulated seeds rejects at that rate.
    rng = np.random.default_rng(6)
    d = rng.normal(effect, sd, (4000, n))
    assert np.mean(stats.ttest_1samp(d, 0, axis=1).pvalue < 0.05) == pytest.approx(power(n), abs=0.025)
    # Welch with n per recipe, sds 0.01 and 0.015: the same check.
    sa, sb = 0.01, 0.015
    m = int(rd.power_seeds(effect, sa, sb))
    sims = stats.ttest_ind(rng.normal(effect, sa, (4000, m)), rng.normal(0, sb, (4000, m)), axis=1,
                           equal_var=False).pvalue
    assert np.mean(sims < 0.05) == pytest.approx(0.8, abs=0.04)
    assert rd.power_seeds(effect, sa, sb) > rd.power_seeds(effect, sa)  # unpaired needs more


def test_seed_counts_range_over_the_sd_interval():
    """The tiny study's numbers in issue 22: 3 seeds with per-seed differences of top-1 d."""
    a, b = [0.705, 0.845, 0.71], [0.72, 0.79, 0.265]
    row = rd.compare({"recipe": "a", "seeds": [0, 1, 2], "values": a}, {"recipe": "b", "seeds": [0, 1, 2], "values": b},
                     "top1", width=0.02, effect=0.02)
    d = np.subtract(a, b)
    s2 = np.var(d, ddof=1)
    sd_low = math.sqrt(2 * s2 / stats.chi2.ppf(0.975, 2))
    sd_high = min(1.0, math.sqrt(2 * s2 / stats.chi2.ppf(0.025, 2)))  # a difference's sd is at most 1
    assert row["precision_seeds"] == 2363 and row["precision_seeds_low"] == rd.precision_seeds(0.02, sd_low) == 643
    assert row["precision_seeds_high"] == rd.precision_seeds(0.02, sd_high)
    assert row["power_seeds_low"] == rd.power_seeds(0.02, sd_low) < row["power_seeds"] < row["power_seeds_high"]
    assert rd.power_seeds(d.mean(), d.std(ddof=1)) == 21  # the observed difference, as the issue computed


def test_one_seed_each_gives_no_test_but_no_crash():
    row = rd.compare({"recipe": "a", "seeds": [0], "values": [0.6]}, {"recipe": "b", "seeds": [0], "values": [0.5]},
                     "top1", **PLAN)
    assert row["difference"] == pytest.approx(0.1) and math.isnan(row["p_value"]) and row["note"]


def test_default_pairs_leave_out_one_source_variants():
    recipes = recipes_study()
    assert plan.default_pairs(["base", "base_init", "other", "base_data"], recipes) == [("base", "other")]


# --- figures -------------------------------------------------------------------------------------


def test_agreement_figure_shows_the_numbers(runs):
    logits, labels = runs
    preds = logits.argmax(axis=2)
    correct = preds == labels
    matrix = agreement.churn_matrix(preds)
    noise = agreement.test_set_noise(correct)
    rates = agreement.correctness_rates(correct)
    (mean,) = [r for r in agreement.churn_rows(preds, labels, [0, 1, 2, 3]) if r["row"] == "mean"]
    fig = study_plots.seeds_agreement(matrix, [0, 1, 2, 3], rates, noise, [0.01, 0.0, 0.02, 0.005], "base",
                                      churn=mean, optimism_interval=(0.0, 0.02))
    heat, bars, strip = fig.axes[:3]
    title = heat.get_title()
    assert (f"mean {100 * mean['churn']:.1f}% [{100 * mean['churn_ci95_low']:.1f}, "
            f"{100 * mean['churn_ci95_high']:.1f}], 6 pairs") in title
    assert "[0.00, 2.00]" in strip.get_legend().get_texts()[0].get_text()
    shown = sorted(float(t.get_text()) for t in heat.texts)
    expected = sorted(round(100 * matrix[i, j], 1) for i in range(S) for j in range(S) if i != j)
    assert shown == pytest.approx(expected, abs=0.051)
    heights = [p.get_height() for p in bars.patches]
    assert heights == list(np.bincount(correct.sum(axis=0), minlength=S + 1))
    text = bars.texts[0].get_text()
    assert "observed" in text and f"share of the variance {noise['predicted_share']:.2f} [" in text
    assert len(strip.collections[0].get_offsets()) == 4
    study_plots.plt.close(fig)


def test_differences_and_sources_figures_label_every_row():
    rows = (rd.compare_pair(every_metric(A), every_metric(B), **PLAN)[:1]
            + rd.compare_pair(every_metric(B), every_metric(A), **PLAN)[:1])
    fig = study_plots.differences(rows, "top1")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a - b", "b - a"]
    note = fig.axes[0].texts[0].get_text()
    r = rows[0]
    assert f"(Holm {r['p_holm']:.3f})" in note
    assert (f"P(A beats B, same seed) {r['p_a_beats_b_same_seed']:.2f} [{r['p_a_beats_b_same_seed_ci95_low']:.2f}, "
            f"{r['p_a_beats_b_same_seed_ci95_high']:.2f}]") in note
    study_plots.plt.close(fig)
    values = {"base": [0.60, 0.64, 0.62], "base_init": [0.61, 0.63, 0.62], "base_data": [0.60, 0.66, 0.63]}
    srows = sources.variance_sources(recipes_study(), values, "top1")
    fig = study_plots.variance_sources(srows, values, "top1")
    left, right = fig.axes[:2]
    assert sum(len(c.get_offsets()) for c in left.collections) == 9
    assert [t.get_text() for t in right.get_xticklabels()] == ["all", "init", "data"]
    assert right.get_ylim()[0] == 0
    init = next(r for r in srows if r["recipe"] == "base_init")
    shares = [t.get_text() for t in right.texts]
    assert f"share {init['share']:.3g} [{init['share_ci_low']:.3g}, {init['share_ci_high']:.3g}]" in shares
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
    assert [r["row"] for r in churn] == ["pair"] * 3 + ["mean"] and churn[3]["n_pairs"] == "3"
    assert float(churn[3]["churn"]) == pytest.approx(np.mean([float(r["churn"]) for r in churn[:3]]))
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
