"""Recipe A vs recipe B over seeds, as a reviewer wants it stated (numpy/scipy; intervals follow
``intervals``).

Per pair and metric:
  test              paired t test on the per-seed differences when both recipes ran the same seeds
                    (seed s of A and of B share their seeded components, which pairing cancels),
                    Welch's t test otherwise: scipy.stats.ttest_rel / ttest_ind(equal_var=False),
                    the difference's interval from their confidence_interval(), cut to [-1, 1]
  p_holm            Holm's step-down adjustment across the four metrics of the pair (the policy:
                    family-wise error at alpha per compared pair; pairs are not adjusted together)
  hedges_g          the difference in pooled seed-to-seed sds, small-sample corrected
  P(A beats B)      under a normal model, two quantities named apart: ``same_seed``, the chance A's
                    run beats B's run with the same seed (paired: Phi(mean_d / sd_d)), and
                    ``fresh_seeds``, the chance A's run beats B's on independent fresh seeds
                    (Phi(delta / (sigma sqrt 2)), one pooled sigma). Each interval inverts the
                    noncentral t of its t statistic: exact for normal values. The observed shares
                    (of seeds; of all seed pairs, Mann-Whitney U / (n_a n_b)) stand beside them.
  precision_seeds   seeds per recipe for a 95% interval of the difference at most precision_width
                    wide at today's sd (a precision calculation, not a power one)
  power_seeds       seeds per recipe for a two-sided test at power_alpha to detect a true
                    difference of power_effect with probability power_target (noncentral t)
Both seed counts plug in today's sd, itself uncertain with few seeds: ``*_low``/``*_high`` give
them at the ends of the sd's 95% chi-square interval (both sds at the same end for Welch).
"""

import math

import numpy as np
from scipy import stats

from . import intervals

LEVEL = intervals.LEVEL
# Which way is better for each headline metric of summary.json: "A beats B" follows it.
HIGHER_IS_BETTER = {"top1": True, "top5": True, "macro_f1": True, "ece": False}
MAX_SEEDS = 10_000_000  # seed counts give up beyond this (a difference too small to resolve)
FIELDS = ["recipe_a", "recipe_b", "metric", "test", "n_a", "n_b", "mean_a", "mean_b", "difference", "ci95_low",
          "ci95_high", "t", "df", "p_value", "p_holm", "hedges_g", "p_a_beats_b_same_seed",
          "p_a_beats_b_same_seed_ci95_low", "p_a_beats_b_same_seed_ci95_high", "p_a_beats_b_fresh_seeds",
          "p_a_beats_b_fresh_seeds_ci95_low", "p_a_beats_b_fresh_seeds_ci95_high", "share_a_beats_b_same_seed",
          "share_a_beats_b_all_seed_pairs", "precision_width", "precision_seeds", "precision_seeds_low",
          "precision_seeds_high", "power_effect", "power_alpha", "power_target", "power_seeds", "power_seeds_low",
          "power_seeds_high", "note"]


def hedges_g(a, b) -> float:
    """(mean_a - mean_b) / pooled sd, times Hedges' small-sample correction 1 - 3 / (4 (n_a + n_b) - 9).

    The same standardiser whether or not the seeds are paired (with equal n it is Lakens' g_av):
    it measures the difference in units of seed-to-seed spread, which is what a fresh seed faces."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = len(a), len(b)
    if na + nb < 3:
        return math.nan
    pooled = _pooled_sd(a, b)
    if pooled == 0:
        return math.nan
    return float((a.mean() - b.mean()) / pooled * (1 - 3 / (4 * (na + nb) - 9)))


def _pooled_sd(a, b) -> float:
    na, nb = len(a), len(b)
    return math.sqrt(((na - 1) * a.var(ddof=1 if na > 1 else 0) + (nb - 1) * b.var(ddof=1 if nb > 1 else 0))
                     / (na + nb - 2))


# --- how many seeds ------------------------------------------------------------------------------


def _smallest_n(ok) -> float:
    """The smallest n in 2..MAX_SEEDS with ok(n), for ok monotone in n (False, ..., True); NaN if none."""
    if ok(2):
        return 2.0
    lo, hi = 2, 4
    while not ok(hi):
        if hi >= MAX_SEEDS:
            return math.nan
        lo, hi = hi, min(2 * hi, MAX_SEEDS)
    while hi - lo > 1:  # ok(lo) is False, ok(hi) True
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return float(hi)


def _df_and_se(n: int, sd_a: float, sd_b: float | None) -> tuple[float, float]:
    """Degrees of freedom and standard error of the difference with n seeds per recipe: paired
    (``sd_b`` None, ``sd_a`` the sd of the per-seed differences) or Welch-Satterthwaite."""
    if sd_b is None:
        return n - 1, sd_a / math.sqrt(n)
    va, vb = sd_a**2, sd_b**2
    return (va + vb) ** 2 * (n - 1) / (va**2 + vb**2), math.sqrt((va + vb) / n)


def precision_seeds(width: float, sd_a: float, sd_b: float | None = None, level: float = LEVEL) -> float:
    """Smallest n >= 2 (seeds per recipe) whose interval of the difference is at most ``width``
    wide (full width): 2 t_df se(n). A precision calculation: it says nothing about detecting a
    difference. NaN beyond MAX_SEEDS or for NaN sds."""
    if not all(math.isfinite(s) for s in (sd_a, sd_a if sd_b is None else sd_b)):
        return math.nan
    if sd_a == 0 and not sd_b:
        return 2.0

    def ok(n):
        df, se = _df_and_se(n, sd_a, sd_b)
        return 2 * stats.t.ppf(intervals.quantile(level), df) * se <= width

    return _smallest_n(ok)


def power_of(n: int, effect: float, sd_a: float, sd_b: float | None = None, alpha: float = 0.05) -> float:
    """Power of the two-sided t test (paired, or Welch with n seeds per recipe) at ``alpha`` when the
    true difference is ``effect``: P(|T| > t_{1-alpha/2}) with T ~ noncentral t(df, effect / se)."""
    df, se = _df_and_se(n, sd_a, sd_b)
    nc = effect / se
    tc = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(tc, df, nc) + stats.nct.cdf(-tc, df, nc))


def power_seeds(effect: float, sd_a: float, sd_b: float | None = None, alpha: float = 0.05,
                power: float = 0.8) -> float:
    """Smallest n >= 2 (seeds per recipe) at which the two-sided t test at ``alpha`` detects a true
    difference of ``effect`` with probability at least ``power`` (power_of). NaN beyond MAX_SEEDS
    or for NaN sds."""
    if not all(math.isfinite(s) for s in (sd_a, sd_a if sd_b is None else sd_b)):
        return math.nan
    if sd_a == 0 and not sd_b:
        return 2.0
    return _smallest_n(lambda n: power_of(n, abs(effect), sd_a, sd_b, alpha) >= power)


# --- P(A beats B) --------------------------------------------------------------------------------


def p_beats_same_seed(d, level: float = LEVEL) -> tuple[float, float, float]:
    """(P, low, high): the chance A beats B on a seed, d the per-seed differences oriented so that
    positive is better for A. Normal model: P = Phi(mu_d / sigma_d), estimated Phi(mean / sd); the
    interval inverts t = sqrt(n) mean / sd ~ noncentral t(n-1, sqrt(n) mu_d / sigma_d)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n < 2 or not d.std(ddof=1) > 0:
        return math.nan, math.nan, math.nan
    theta = d.mean() / d.std(ddof=1)
    low, high = intervals.noncentrality_interval(math.sqrt(n) * theta, n - 1, level)
    return float(stats.norm.cdf(theta)), float(stats.norm.cdf(low / math.sqrt(n))), float(
        stats.norm.cdf(high / math.sqrt(n)))


def p_beats_fresh_seeds(a, b, level: float = LEVEL) -> tuple[float, float, float]:
    """(P, low, high): the chance A's run beats B's run on independent fresh seeds, values oriented
    so that higher is better. Normal model with one sd sigma in both recipes: P = Phi(delta /
    (sigma sqrt 2)); the interval inverts the pooled two-sample t ~ noncentral t(n_a + n_b - 2,
    (delta / sigma) / sqrt(1/n_a + 1/n_b))."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = len(a), len(b)
    if na + nb < 3 or not _pooled_sd(a, b) > 0:
        return math.nan, math.nan, math.nan
    scale = math.sqrt(1 / na + 1 / nb)
    d = (a.mean() - b.mean()) / _pooled_sd(a, b)
    low, high = intervals.noncentrality_interval(d / scale, na + nb - 2, level)
    root2 = math.sqrt(2)
    return (float(stats.norm.cdf(d / root2)), float(stats.norm.cdf(low * scale / root2)),
            float(stats.norm.cdf(high * scale / root2)))


# --- multiple comparisons ------------------------------------------------------------------------


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control); NaN stays NaN and does not
    count towards the family's size. Sorted ascending, the k-th of m is max over j <= k of
    min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), math.nan)
    idx = [i for i in np.argsort(p, kind="stable") if math.isfinite(p[i])]
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


# --- comparing -----------------------------------------------------------------------------------


def compare(a: dict, b: dict, metric: str, width: float, effect: float, alpha: float = 0.05,
            power: float = 0.8, level: float = LEVEL) -> dict:
    """A vs B on one metric (a row of recipe_differences.csv without p_holm). ``a`` and ``b`` are
    {"recipe", "seeds", "values"} (per-seed values of ``metric``)."""
    sign = 1 if HIGHER_IS_BETTER.get(metric, True) else -1
    xa = np.asarray(a["values"], dtype=float)
    xb = np.asarray(b["values"], dtype=float)
    paired = sorted(a["seeds"]) == sorted(b["seeds"]) and len(xa) >= 2
    if paired:
        ib = {s: i for i, s in enumerate(b["seeds"])}
        xb = xb[[ib[s] for s in a["seeds"]]]  # align B's seeds to A's
    row = {k: math.nan for k in FIELDS}
    row.update(recipe_a=a["recipe"], recipe_b=b["recipe"], metric=metric, test="paired" if paired else "welch",
               n_a=len(xa), n_b=len(xb), mean_a=float(xa.mean()), mean_b=float(xb.mean()),
               difference=float(xa.mean() - xb.mean()), hedges_g=hedges_g(xa, xb), precision_width=width,
               power_effect=effect, power_alpha=alpha, power_target=power, note="")
    p, lo, hi = p_beats_fresh_seeds(sign * xa, sign * xb, level)
    row.update(p_a_beats_b_fresh_seeds=p, p_a_beats_b_fresh_seeds_ci95_low=lo, p_a_beats_b_fresh_seeds_ci95_high=hi,
               share_a_beats_b_all_seed_pairs=float(np.mean(np.sign(sign * (xa[:, None] - xb[None, :])) + 1) / 2))
    if paired:
        d = xa - xb
        sd = intervals.variance_interval(d, level, intervals.DIFFERENCE)
        sds = [(sd["sd"], None), (sd["sd_low"], None), (sd["sd_high"], None)]
        p, lo, hi = p_beats_same_seed(sign * d, level)
        row.update(p_a_beats_b_same_seed=p, p_a_beats_b_same_seed_ci95_low=lo, p_a_beats_b_same_seed_ci95_high=hi,
                   share_a_beats_b_same_seed=float(np.mean(np.sign(sign * d) + 1) / 2))
        if not sd["sd"] > 0:
            row["note"] = "the same difference on every seed: no spread, no test"
            res = None
        else:
            res = stats.ttest_rel(xa, xb)
    else:
        if len(xa) < 2 or len(xb) < 2:
            row["note"] = "Welch needs at least 2 seeds per recipe"
            return row
        va, vb = (intervals.variance_interval(x, level) for x in (xa, xb))
        sds = [(va["sd"], vb["sd"]), (va["sd_low"], vb["sd_low"]), (va["sd_high"], vb["sd_high"])]
        res = stats.ttest_ind(xa, xb, equal_var=False) if va["sd"] > 0 or vb["sd"] > 0 else None
        if res is None:
            row["note"] = "no seed-to-seed spread in either recipe: no test"
        else:
            row["note"] = "different seeds: unpaired (Welch)"
    if res is not None:
        ci = res.confidence_interval(level)
        low, high = max(float(ci.low), intervals.DIFFERENCE[0]), min(float(ci.high), intervals.DIFFERENCE[1])
        row.update(t=float(res.statistic), df=float(res.df), p_value=float(res.pvalue), ci95_low=low, ci95_high=high)
    for suffix, (s_a, s_b) in zip(("", "_low", "_high"), sds):
        row[f"precision_seeds{suffix}"] = precision_seeds(width, s_a, s_b, level)
        row[f"power_seeds{suffix}"] = power_seeds(effect, s_a, s_b, alpha, power)
    return row


def compare_pair(a: dict, b: dict, width: float, effect: float, alpha: float = 0.05, power: float = 0.8,
                 level: float = LEVEL) -> list[dict]:
    """Rows of every headline metric for one pair, p_holm adjusted across them. ``a`` and ``b`` are
    {"recipe", "seeds", "values": {metric: per-seed values}}."""
    rows = [compare(a | {"values": a["values"][m]}, b | {"values": b["values"][m]}, m, width, effect, alpha, power,
                    level) for m in HIGHER_IS_BETTER]
    for r, p in zip(rows, holm([r["p_value"] for r in rows])):
        r["p_holm"] = p
    return rows
