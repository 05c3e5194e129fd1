"""Reproducibility studies: where seed-to-seed variance comes from, and whether recipe A beats B.

Numbers only (numpy/scipy, no plotting, no PyTorch), from files the workflow already writes:
every seed's ``predictions.npz`` (logits and labels of the test set), ``history.csv`` and the
recipe's ``seeds_summary.csv``. Nothing here retrains.

Per recipe (its seeds):
  churn            for each pair of seeds, the share of test images whose top-1 predictions differ
                   (Summers & Dinneen, ICML 2021), overall and per true class
  ensemble         accuracy and calibration of the mean softmax of all seeds, beside the seeds' own
  test-set noise   the seed-to-seed variance of top-1 predicted from per-image correctness rates
                   as if images were independent coins, beside the observed variance (Jordan,
                   ICLR 2024): what is left over is variance shared across images
  selection        per seed, best-epoch minus last-epoch test accuracy from history.csv: how much
                   ``best_test`` selection flatters a run
Across recipes:
  sources          recipes identical apart from ``vary`` form a family; each member's variance
                   with a chi-square interval and its share of the ``vary: all`` member's
                   variance with an F interval (Bouthillier et al., MLSys 2021)
  differences      A - B with a 95% t interval (paired by seed when both recipes have the same
                   seeds, Welch otherwise), p-value, Hedges' g, P(A beats B on a fresh seed) and
                   the seeds needed for an interval of a chosen width

Variances use ddof=1 (n-1). A statistic that needs more seeds than there are is NaN in memory
and an empty CSV cell, with a note that says why. Variance estimates from few seeds are very
uncertain: with 3 seeds the 95% interval of a variance spans a factor of about 40.
"""

import itertools
import math

import numpy as np
from scipy import stats

from . import metrics, replicates
from .exceptions import DataError

LEVEL = 0.95
SOURCES = ("all", "init", "data", "none")  # the values of a recipe's ``vary``
# Which way is better for each headline metric of summary.json: "A beats B" follows it.
HIGHER_IS_BETTER = {"top1": True, "top5": True, "macro_f1": True, "ece": False}
MAX_SEEDS = 100_000  # seeds_needed gives up beyond this (a difference too small to resolve)


def _quantile(level: float) -> float:
    return (1 + level) / 2


# --- loading seeds --------------------------------------------------------------------------------


def stack_predictions(paths, labels: np.ndarray | None = None):
    """(logits [S, N, C] float32, labels [N]) from every seed's predictions.npz.

    Every file must hold the same test images in the same order (same labels row by row);
    with ``labels`` (the dataset's test labels) they are checked against the dataset too."""
    if not paths:
        raise DataError("no predictions given")
    first_logits, first_labels = metrics.load_predictions(paths[0], labels)
    logits = [first_logits]
    for p in paths[1:]:
        logits.append(metrics.load_predictions(p, first_labels, first_logits.shape[1])[0])
    return np.stack(logits), first_labels


def recipes_and_runs(recipes_json: str, summary_paths) -> tuple[dict, dict]:
    """The recipes' definitions (``--recipes-json``) and every seed's summary.json grouped by recipe
    (``by_recipe``); DataError, naming the flag, when the JSON is broken or lacks a recipe."""
    import json

    try:
        recipes = json.loads(recipes_json)
    except json.JSONDecodeError as e:
        raise DataError(f"--recipes-json: not valid JSON ({e})") from None
    runs = by_recipe([replicates.read_summary(p) for p in summary_paths], summary_paths)
    missing = [r for r in runs if r not in recipes]
    if missing:
        raise DataError(f"--recipes-json: no definition of recipe {missing[0]!r} (its summary.json is given)")
    return recipes, runs


def by_recipe(summaries: list[dict], paths) -> dict:
    """Per-seed summary.json contents (replicates.read_summary) grouped as
    {recipe: {"recipe", "seeds", "values": {metric: [...]}}}, seeds ascending; DataError when a
    (recipe, seed) appears twice."""
    seen, out = {}, {}
    for s, p in zip(summaries, paths):
        key = (s["recipe"], s["seed"])
        if key in seen:
            raise DataError(f"{p}: recipe {s['recipe']} seed {s['seed']} appears twice (also in {seen[key]})")
        seen[key] = p
    for s in sorted(summaries, key=lambda s: (s["recipe"], s["seed"])):
        r = out.setdefault(s["recipe"], {"recipe": s["recipe"], "seeds": [], "values": {}})
        r["seeds"].append(s["seed"])
        for m in HIGHER_IS_BETTER:
            r["values"].setdefault(m, []).append(s[m])
    return out


def cells(row: dict) -> dict:
    """A row for CSV: NaN becomes an empty cell (as in seeds_summary.csv), numpy scalars plain numbers."""
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = "" if isinstance(v, float) and math.isnan(v) else v
    return out


# --- churn ---------------------------------------------------------------------------------------


def seed_pairs(n: int) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, of n seeds."""
    return list(itertools.combinations(range(n), 2))


def churn_matrix(preds: np.ndarray) -> np.ndarray:
    """[S, S] share of images on which seed i and seed j predict different classes (0 on the diagonal)."""
    preds = np.asarray(preds)
    return (preds[:, None, :] != preds[None, :, :]).mean(axis=2)


def churn_pairs(preds: np.ndarray, labels: np.ndarray, seeds) -> list[dict]:
    """One row per pair of seeds: churn (predictions differ) and how the pair splits on correctness.

    churn >= only_a_correct + only_b_correct: the rest of the churn is images both get wrong,
    each with a different wrong class."""
    correct = preds == labels
    rows = []
    for i, j in seed_pairs(len(seeds)):
        rows.append({"seed_a": seeds[i], "seed_b": seeds[j],
                     "churn": float((preds[i] != preds[j]).mean()),
                     "both_correct": float((correct[i] & correct[j]).mean()),
                     "only_a_correct": float((correct[i] & ~correct[j]).mean()),
                     "only_b_correct": float((~correct[i] & correct[j]).mean()),
                     "both_wrong": float((~correct[i] & ~correct[j]).mean())})
    return rows


def churn_per_class(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> list[dict]:
    """Per true class: its test images, mean accuracy over seeds and churn over seed pairs (mean,
    min, max). Classes without test images have n_images 0 and NaN elsewhere."""
    pairs = seed_pairs(len(preds))
    rows = []
    for c in range(num_classes):
        mask = labels == c
        row = {"class_index": c, "n_images": int(mask.sum()), "accuracy_mean": math.nan,
               "churn_mean": math.nan, "churn_min": math.nan, "churn_max": math.nan}
        if mask.any():
            row["accuracy_mean"] = float((preds[:, mask] == c).mean())
            if pairs:
                ch = np.array([(preds[i, mask] != preds[j, mask]).mean() for i, j in pairs])
                row.update(churn_mean=float(ch.mean()), churn_min=float(ch.min()), churn_max=float(ch.max()))
        rows.append(row)
    return rows


# --- ensemble ------------------------------------------------------------------------------------


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    # The clip keeps one confidently wrong image from making the mean infinite.
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def ensemble(logits: np.ndarray, labels: np.ndarray, n_bins: int = metrics.ECE_BINS) -> dict:
    """Mean softmax of all seeds scored like one model, beside the seeds' mean scores.

    top1/top5 accuracy, ECE (``n_bins`` equal-width bins, as report.py) and negative
    log-likelihood; ``*_gain`` is ensemble minus the seeds' mean (for ECE and NLL a negative gain
    is an improvement)."""
    probs = np.stack([metrics.softmax(lg.astype(np.float64)) for lg in logits])
    mean_probs = probs.mean(axis=0)

    def scores(p):
        conf, pred = p.max(axis=1), p.argmax(axis=1)
        return {"top1": metrics.topk_accuracy(p, labels, 1), "top5": metrics.topk_accuracy(p, labels, 5),
                "ece": metrics.calibration(conf, pred == labels, n_bins)["ece"], "nll": _nll(p, labels)}

    ens = scores(mean_probs)
    seeds = [scores(p) for p in probs]
    row = {"n_seeds": len(probs), "n_images": len(labels), "ece_bins": n_bins}
    for k in ("top1", "top5", "ece", "nll"):
        seeds_mean = float(np.mean([s[k] for s in seeds]))
        row.update({f"ensemble_{k}": ens[k], f"seeds_mean_{k}": seeds_mean, f"{k}_gain": ens[k] - seeds_mean})
    return row


# --- variance ------------------------------------------------------------------------------------


def variance_interval(values, level: float = LEVEL) -> dict:
    """n, mean, sample variance (ddof=1), sd and the chi-square interval of the variance.

    (n-1) s^2 / sigma^2 ~ chi2(n-1) for normal values, so the interval is
    [(n-1) s^2 / chi2_{(1+level)/2}, (n-1) s^2 / chi2_{(1-level)/2}]. NaN below 2 values."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    out = {"n": n, "mean": float(x.mean()) if n else math.nan, "var": math.nan, "sd": math.nan,
           "var_low": math.nan, "var_high": math.nan}
    if n >= 2:
        var = float(x.var(ddof=1))
        q = _quantile(level)
        out.update(var=var, sd=math.sqrt(var), var_low=float((n - 1) * var / stats.chi2.ppf(q, n - 1)),
                   var_high=float((n - 1) * var / stats.chi2.ppf(1 - q, n - 1)))
    return out


def variance_ratio_interval(var_a: float, n_a: int, var_b: float, n_b: int, level: float = LEVEL):
    """(ratio, low, high): var_a / var_b with the F interval of sigma_a^2 / sigma_b^2.

    (s_a^2 / s_b^2) / (sigma_a^2 / sigma_b^2) ~ F(n_a-1, n_b-1) for two independent normal
    samples. Seeds shared between the two recipes make them dependent, so the interval is then
    approximate. NaN when var_b is 0 or either sample has fewer than 2 values."""
    if n_a < 2 or n_b < 2 or not var_b > 0:
        return math.nan, math.nan, math.nan
    ratio = var_a / var_b
    q = _quantile(level)
    return (float(ratio), float(ratio / stats.f.ppf(q, n_a - 1, n_b - 1)),
            float(ratio / stats.f.ppf(1 - q, n_a - 1, n_b - 1)))


def families(recipes: dict) -> list[list[str]]:
    """Groups of recipe names whose definitions are identical apart from ``vary``, with at least two
    members, in the order the recipes are given; members ordered as SOURCES."""
    groups: dict[str, list[str]] = {}
    for name, r in recipes.items():
        key = repr(sorted((k, v) for k, v in r.items() if k != "vary"))
        groups.setdefault(key, []).append(name)
    order = {s: i for i, s in enumerate(SOURCES)}
    out = []
    for names in groups.values():
        if len(names) < 2:
            continue
        varies = [recipes[n].get("vary", "all") for n in names]
        dup = {v for v in varies if varies.count(v) > 1}
        if dup:
            twins = [n for n, v in zip(names, varies) if v in dup]
            raise DataError(f"recipes {', '.join(twins)} are identical (vary: {min(dup)}): "
                            "a study needs each source once per family")
        out.append(sorted(names, key=lambda n: order[recipes[n].get("vary", "all")]))
    return out


def variance_sources(recipes: dict, values: dict, metric: str, level: float = LEVEL) -> list[dict]:
    """Rows of variance_sources.csv for one metric: per family, per member recipe.

    ``recipes`` maps name -> recipe dict (with ``vary``), ``values`` maps name -> per-seed values of
    ``metric``. A member's share is its variance divided by the variance of the family's
    ``vary: all`` member (the total seed-to-seed variance), with an F interval; shares of init and
    data need not sum to 1 (the sources interact, and each variance is estimated with noise)."""
    rows = []
    for fam in families({n: recipes[n] for n in values}):
        total = next((n for n in fam if recipes[n].get("vary", "all") == "all"), None)
        ref = variance_interval(values[total], level) if total else None
        for name in fam:
            v = variance_interval(values[name], level)
            row = {"family": fam[0], "recipe": name, "vary": recipes[name].get("vary", "all"), "metric": metric,
                   "n_seeds": v["n"], "mean": v["mean"], "var": v["var"], "sd": v["sd"],
                   "var_ci_low": v["var_low"], "var_ci_high": v["var_high"],
                   "sd_ci_low": math.sqrt(v["var_low"]) if v["n"] >= 2 else math.nan,
                   "sd_ci_high": math.sqrt(v["var_high"]) if v["n"] >= 2 else math.nan,
                   "share_of": total or "", "share": math.nan, "share_ci_low": math.nan,
                   "share_ci_high": math.nan, "note": ""}
            if v["n"] < 2:
                row["note"] = "one seed: no variance"
            elif total is None:
                row["note"] = "no vary: all recipe in this family: no total to take a share of"
            elif name == total:
                row["share"] = 1.0
            else:
                ratio, low, high = variance_ratio_interval(v["var"], v["n"], ref["var"], ref["n"], level)
                row.update(share=ratio, share_ci_low=low, share_ci_high=high)
                if math.isnan(ratio):
                    row["note"] = f"{total} has no variance to take a share of"
            rows.append(row)
    return rows


# --- test-set noise (Jordan 2024) ----------------------------------------------------------------


def test_set_noise(correct: np.ndarray, level: float = LEVEL) -> dict:
    """Observed seed-to-seed variance of top-1 beside the variance predicted from per-image rates.

    ``correct`` is [S seeds, N images] of 0/1. With p_i the share of seeds that get image i right,
    predicted_var = sum_i p_i (1 - p_i) * S/(S-1) / N^2: the variance top-1 would have if every
    image were an independent coin with its own p_i (the S/(S-1) makes it unbiased, like ddof=1).
    excess_var = observed_var - predicted_var is exactly the sum, over pairs of different images,
    of their covariance across seeds, divided by N^2 (with these estimators): the part of the
    spread that images share, which Jordan (ICLR 2024) finds small. A predicted share near 1 means
    the spread between seeds is mostly the noise of a finite test set, not a difference between
    the models on the distribution."""
    c = np.asarray(correct, dtype=float)
    s, n = c.shape
    rate = c.mean(axis=0)
    obs = variance_interval(c.mean(axis=1), level)
    row = {"n_seeds": s, "n_images": n, "top1_mean": obs["mean"],
           "always_correct": int((rate == 1).sum()), "never_correct": int((rate == 0).sum()),
           "sometimes_correct": int(((rate > 0) & (rate < 1)).sum()),
           "observed_var": obs["var"], "observed_var_ci_low": obs["var_low"], "observed_var_ci_high": obs["var_high"],
           "predicted_var": math.nan, "excess_var": math.nan, "predicted_share": math.nan,
           "observed_sd": obs["sd"], "predicted_sd": math.nan, "note": ""}
    if s < 2:
        row["note"] = "one seed: no variance"
        return row
    pred = float((rate * (1 - rate)).sum() * s / (s - 1) / n**2)
    row.update(predicted_var=pred, predicted_sd=math.sqrt(pred), excess_var=obs["var"] - pred,
               predicted_share=pred / obs["var"] if obs["var"] > 0 else math.nan)
    if not obs["var"] > 0:
        row["note"] = "every seed has the same top-1: no share"
    return row


def correctness_rates(correct: np.ndarray) -> np.ndarray:
    """Per image, the share of seeds that get it right."""
    return np.asarray(correct, dtype=float).mean(axis=0)


# --- selection optimism --------------------------------------------------------------------------

OPTIMISM_FIELDS = ["row", "seed", "best_epoch", "best_test_acc", "last_epoch", "last_test_acc", "optimism", "note"]


def selection_optimism(histories, seeds, level: float = LEVEL) -> list[dict]:
    """Per seed, best-epoch minus last-epoch test accuracy (history.csv), then mean, std and the t
    interval of each column over seeds (empty with one seed).

    ``histories`` holds (epochs, test_acc) per seed. The best epoch is the first with the highest
    test accuracy, as ``best_test`` selection picks it."""
    rows = []
    for seed, (epochs, acc) in zip(seeds, histories):
        b = int(np.argmax(acc))
        rows.append({"row": "seed", "seed": seed, "best_epoch": int(epochs[b]), "best_test_acc": float(acc[b]),
                     "last_epoch": int(epochs[-1]), "last_test_acc": float(acc[-1]),
                     "optimism": replicates.selection_optimism(acc), "note": ""})
    cols = ["best_test_acc", "last_test_acc", "optimism"]
    n = len(rows)
    ti = {c: replicates.t_interval([r[c] for r in rows], level) for c in cols}
    note = f"{round(100 * level)}% t interval over {n} seeds" if n > 1 else "one seed: no spread or interval"
    for name, key in (("mean", "mean"), ("std", "std"), ("ci95_low", "low"), ("ci95_high", "high")):
        rows.append({"row": name, "seed": "", "best_epoch": "", "last_epoch": "",
                     **{c: ti[c][key] for c in cols}, "note": note})
    return rows


# --- recipe A vs recipe B ------------------------------------------------------------------------

DIFFERENCE_FIELDS = ["recipe_a", "recipe_b", "metric", "test", "n_a", "n_b", "mean_a", "mean_b", "difference",
                     "ci95_low", "ci95_high", "t", "df", "p_value", "hedges_g", "p_a_beats_b",
                     "p_a_beats_b_observed", "interval_width", "seeds_needed", "note"]


def hedges_g(a, b) -> float:
    """(mean_a - mean_b) / pooled sd, times Hedges' small-sample correction 1 - 3 / (4 (n_a + n_b) - 9).

    The same standardiser whether or not the seeds are paired (with equal n it is Lakens' g_av):
    it measures the difference in units of seed-to-seed spread, which is what a fresh seed faces."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = len(a), len(b)
    if na + nb < 3:
        return math.nan
    pooled = math.sqrt(((na - 1) * a.var(ddof=1 if na > 1 else 0) + (nb - 1) * b.var(ddof=1 if nb > 1 else 0))
                       / (na + nb - 2))
    if pooled == 0:
        return math.nan
    return (a.mean() - b.mean()) / pooled * (1 - 3 / (4 * (na + nb) - 9))


def seeds_needed(width: float, sd_a: float, sd_b: float | None = None, level: float = LEVEL) -> float:
    """Smallest n >= 2 whose interval of the difference is at most ``width`` wide (full width).

    Paired (``sd_b`` None, ``sd_a`` the sd of the per-seed differences): 2 t_{n-1} sd / sqrt(n).
    Welch, n seeds per recipe: 2 t_df sqrt((sd_a^2 + sd_b^2) / n), df by Welch-Satterthwaite.
    Plugs in today's sds, themselves uncertain with few seeds. NaN beyond MAX_SEEDS or for NaN sds."""
    n = np.arange(2, MAX_SEEDS + 1, dtype=float)
    if sd_b is None:
        if not math.isfinite(sd_a):
            return math.nan
        full = 2 * stats.t.ppf(_quantile(level), n - 1) * sd_a / np.sqrt(n)
    else:
        va, vb = sd_a**2, sd_b**2
        if not (math.isfinite(va) and math.isfinite(vb)):
            return math.nan
        if va + vb == 0:
            return 2.0
        df = (va + vb) ** 2 * (n - 1) / (va**2 + vb**2)
        full = 2 * stats.t.ppf(_quantile(level), df) * np.sqrt((va + vb) / n)
    ok = np.flatnonzero(full <= width)
    return float(n[ok[0]]) if len(ok) else math.nan


def compare(a: dict, b: dict, metric: str, width: float, level: float = LEVEL) -> dict:
    """A vs B on one metric. ``a`` and ``b`` are {"recipe", "seeds", "values"} (per-seed values).

    Paired t test on the per-seed differences when both recipes have the same seeds (seed s of A
    and of B share their randomness, which pairing cancels), Welch's t test otherwise.
    difference = mean_a - mean_b. p_a_beats_b: the chance that A's run beats B's run on a fresh
    seed if the values are normal with today's means and sds (paired: P(d > 0) with d ~
    N(mean_d, sd_d); Welch: P(X_a > X_b) = Phi(diff / sqrt(sd_a^2 + sd_b^2))), "beats" meaning
    lower for ECE. p_a_beats_b_observed: the share of seeds (paired) or of all seed pairs (Welch,
    the Mann-Whitney U / (n_a n_b)) where A beats B, ties counting half."""
    sign = 1 if HIGHER_IS_BETTER.get(metric, True) else -1
    xa = np.asarray(a["values"], dtype=float)
    xb = np.asarray(b["values"], dtype=float)
    paired = sorted(a["seeds"]) == sorted(b["seeds"]) and len(xa) >= 2
    row = {"recipe_a": a["recipe"], "recipe_b": b["recipe"], "metric": metric, "test": "paired" if paired else "welch",
           "n_a": len(xa), "n_b": len(xb), "mean_a": float(xa.mean()), "mean_b": float(xb.mean()),
           "difference": float(xa.mean() - xb.mean()), "interval_width": width, "note": ""}
    for k in ("ci95_low", "ci95_high", "t", "df", "p_value", "hedges_g", "p_a_beats_b", "p_a_beats_b_observed",
              "seeds_needed"):
        row[k] = math.nan
    q = _quantile(level)
    if paired:
        ib = {s: i for i, s in enumerate(b["seeds"])}
        xb = xb[[ib[s] for s in a["seeds"]]]  # align B's seeds to A's
        d = xa - xb
        n = len(d)
        sd = float(d.std(ddof=1))
        se = sd / math.sqrt(n)
        half = stats.t.ppf(q, n - 1) * se
        row.update(df=float(n - 1), ci95_low=row["difference"] - half, ci95_high=row["difference"] + half,
                   p_a_beats_b_observed=float(np.mean(np.sign(sign * d) + 1) / 2),
                   seeds_needed=seeds_needed(width, sd, None, level))
        if se > 0:
            t = row["difference"] / se
            row.update(t=t, p_value=float(2 * stats.t.sf(abs(t), n - 1)),
                       p_a_beats_b=float(stats.norm.cdf(sign * row["difference"] / sd)))
        else:
            row["note"] = "the same difference on every seed: no spread, no test"
    else:
        if len(xa) < 2 or len(xb) < 2:
            row["note"] = "Welch needs at least 2 seeds per recipe"
            row["hedges_g"] = float(hedges_g(xa, xb))
            return row
        va, vb = xa.var(ddof=1), xb.var(ddof=1)
        se = math.sqrt(va / len(xa) + vb / len(xb))
        row["p_a_beats_b_observed"] = float(np.mean(np.sign(sign * (xa[:, None] - xb[None, :])) + 1) / 2)
        row["seeds_needed"] = seeds_needed(width, math.sqrt(va), math.sqrt(vb), level)
        if se > 0:
            df = se**4 / ((va / len(xa)) ** 2 / (len(xa) - 1) + (vb / len(xb)) ** 2 / (len(xb) - 1))
            half = stats.t.ppf(q, df) * se
            t = row["difference"] / se
            row.update(df=float(df), t=t, p_value=float(2 * stats.t.sf(abs(t), df)),
                       ci95_low=row["difference"] - half, ci95_high=row["difference"] + half,
                       p_a_beats_b=float(stats.norm.cdf(sign * row["difference"] / math.sqrt(va + vb))))
        else:
            row["note"] = "no seed-to-seed spread in either recipe: no test"
        if sorted(a["seeds"]) != sorted(b["seeds"]):
            row["note"] = row["note"] or "different seeds: unpaired (Welch)"
    row["hedges_g"] = hedges_g(xa, xb)
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in row.items()}


def default_pairs(runs: list[str], recipes: dict) -> list[tuple[str, str]]:
    """Every pair of recipes in ``runs`` whose ``vary`` is all (in runs order): the recipes a study
    compares, leaving out the one-source variants that only measure variance."""
    main = [r for r in runs if recipes[r].get("vary", "all") == "all"]
    return list(itertools.combinations(main, 2))
