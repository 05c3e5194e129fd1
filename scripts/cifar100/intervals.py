"""The one interval convention of every table, figure and the headline (numpy/scipy only).

Every interval is 95% (LEVEL) and two-sided:
  mean over seeds          t interval, n-1 degrees of freedom (sample sd, ddof=1)
  variance or sd over seeds  chi-square interval, n-1 degrees of freedom (normal values)
  ratio of two variances   F interval (two independent samples)
  mean over seed pairs     (churn) jackknife over seeds, t with n-1 degrees of freedom
  mean / sd                (a standardised effect) the noncentral t inverted: exact for normal values
Bounded quantities: each interval is cut to what the quantity can take: a metric's mean to [0, 1]
(every metric is a share, ECE too), a difference of two metrics to [-1, 1], the sd of a metric to
half its range (0.5; variance 0.25: a share cannot spread more). The truth lies inside the range, so
the cut interval covers it exactly when the uncut one does: coverage stays 95%. Half-widths stay
uncut. Ratios of variances (shares) have no upper bound and are not cut.
"""

import math

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95
UNIT = (0.0, 1.0)  # the range of every headline metric
DIFFERENCE = (-1.0, 1.0)  # the range of a difference of two metrics
CONVENTION = ("95% intervals: t for a mean over seeds, chi-square for a variance or sd, F for a ratio of "
              "variances, each cut to what the quantity can take (a metric's mean to [0, 1], its sd to at most "
              "0.5), which keeps the coverage at 95%")


def quantile(level: float = LEVEL) -> float:
    """The upper quantile of a two-sided interval: 0.975 for 95%."""
    return (1 + level) / 2


def method(level: float = LEVEL) -> str:
    """How the interval of a metric's mean is made, in words, for notes, captions and figure titles."""
    return f"{round(100 * level)}% t interval truncated to [0, 1]"


def _cut(low: float, high: float, bounds) -> tuple[float, float]:
    if bounds is None:
        return low, high
    return max(low, bounds[0]), min(high, bounds[1])


def t_interval(values, level: float = LEVEL, bounds: tuple[float, float] | None = None) -> dict:
    """n, mean, sample std and the t interval of the mean of ``values`` (NaN where undefined).

    With ``bounds`` (lowest, highest value the quantity can take) ``low``/``high`` are cut to
    them and ``truncated`` says whether that changed either; ``half`` is always the t half-width."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": math.nan, "low": math.nan, "high": math.nan, "half": math.nan,
                "truncated": False}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(quantile(level), df=n - 1) * std / math.sqrt(n))
    low, high = _cut(mean - half, mean + half, bounds)
    return {"n": n, "mean": mean, "std": std, "low": low, "high": high, "half": half,
            "truncated": (low, high) != (mean - half, mean + half)}


def variance_interval(values, level: float = LEVEL, bounds: tuple[float, float] | None = UNIT) -> dict:
    """n, mean, sample variance (ddof=1), sd and the chi-square interval of the variance and sd.

    (n-1) s^2 / sigma^2 ~ chi2(n-1) for normal values: [(n-1) s^2 / chi2_{(1+level)/2},
    (n-1) s^2 / chi2_{(1-level)/2}]. A quantity within ``bounds`` has sigma at most half their
    width, so the upper end is cut there (``truncated`` says when). NaN below 2 values."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    out = {"n": n, "mean": float(x.mean()) if n else math.nan, "var": math.nan, "sd": math.nan,
           "var_low": math.nan, "var_high": math.nan, "sd_low": math.nan, "sd_high": math.nan, "truncated": False}
    if n < 2:
        return out
    var = float(x.var(ddof=1))
    q = quantile(level)
    low, high = (n - 1) * var / stats.chi2.ppf(q, n - 1), (n - 1) * var / stats.chi2.ppf(1 - q, n - 1)
    top = math.inf if bounds is None else ((bounds[1] - bounds[0]) / 2) ** 2
    out.update(var=var, sd=math.sqrt(var), var_low=float(low), var_high=float(min(high, top)),
               sd_low=math.sqrt(low), sd_high=math.sqrt(min(high, top)), truncated=bool(high > top))
    return out


def ratio_interval(var_a: float, n_a: int, var_b: float, n_b: int, level: float = LEVEL):
    """(ratio, low, high): var_a / var_b with the F interval of sigma_a^2 / sigma_b^2.

    (s_a^2 / s_b^2) / (sigma_a^2 / sigma_b^2) ~ F(n_a-1, n_b-1) for two independent normal
    samples. NaN when var_b is 0 or either sample has fewer than 2 values."""
    if n_a < 2 or n_b < 2 or not var_b > 0:
        return math.nan, math.nan, math.nan
    ratio = var_a / var_b
    q = quantile(level)
    return (float(ratio), float(ratio / stats.f.ppf(q, n_a - 1, n_b - 1)),
            float(ratio / stats.f.ppf(1 - q, n_a - 1, n_b - 1)))


def jackknife_interval(estimate: float, leave_one_out, level: float = LEVEL, bounds=None) -> dict:
    """Jackknife t interval of a statistic of n seeds from its n leave-one-seed-out values.

    se^2 = (n-1)/n sum_i (theta_(i) - mean theta_(.))^2 (Tukey), interval estimate +- t_{n-1} se,
    cut to ``bounds``. Used for a mean over seed pairs (churn), a U-statistic whose pairs share
    seeds, so a t interval over the pairs would count each seed more than once. NaN below 3 seeds
    (two seeds leave no pair out)."""
    loo = np.asarray(leave_one_out, dtype=float)
    n = len(loo)
    out = {"n": n, "estimate": float(estimate), "se": math.nan, "low": math.nan, "high": math.nan}
    if n < 3 or not np.all(np.isfinite(loo)):
        return out
    se = math.sqrt((n - 1) / n * float(((loo - loo.mean()) ** 2).sum()))
    half = stats.t.ppf(quantile(level), n - 1) * se
    low, high = _cut(estimate - half, estimate + half, bounds)
    return {**out, "se": se, "low": float(low), "high": float(high)}


def noncentrality_interval(t_obs: float, df: float, level: float = LEVEL) -> tuple[float, float]:
    """The interval of the noncentrality parameter of a noncentral t from one observed t.

    The ends solve nct.cdf(t_obs, df, nc) = (1+level)/2 and (1-level)/2 (the cdf falls as nc
    rises): exact for normal values. Dividing by the t statistic's scale (sqrt(n) for a paired
    mean) turns it into an interval of mean / sd."""
    if not (math.isfinite(t_obs) and df > 0):
        return math.nan, math.nan

    def solve(p):
        f = lambda nc: stats.nct.cdf(t_obs, df, nc) - p  # noqa: E731
        lo, hi = t_obs - 10.0, t_obs + 10.0
        for _ in range(60):  # widen the bracket until the cdf crosses p on both sides
            if not f(lo) < 0:
                break
            lo -= 2 * (hi - lo)
        for _ in range(60):
            if not f(hi) > 0:
                break
            hi += 2 * (hi - lo)
        try:
            return float(optimize.brentq(f, lo, hi, xtol=1e-10))
        except (ValueError, RuntimeError):  # the cdf is NaN or flat out there: a t too large to invert
            return math.nan

    q = quantile(level)
    return solve(q), solve(1 - q)
