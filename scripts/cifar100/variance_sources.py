"""Where seed-to-seed variance comes from (Bouthillier et al., MLSys 2021), from recipes that differ
only in ``vary`` (numpy/scipy; intervals follow ``intervals``).

Recipes identical apart from ``vary`` form a family. ``vary`` names the randomness the run seed
drives: all (initialisation, data order and augmentation), init, data (order and augmentation),
order, augment, or none (nothing: on a GPU without ``deterministic: true`` what is left is
non-deterministic kernels). A component the seed does not drive uses engine.FIXED_SEED (2**32),
outside the seeds' range, so no run of one member is a run of another: the members' seeds are
independent samples, as the F interval of a share assumes.

Per member: the variance over seeds and its sd with chi-square intervals (the sd cut at 0.5, the
most a share can spread), and its share of the ``vary: all`` member's variance with an F interval
(not cut: a ratio has no upper bound). Shares need not sum to 1: sources interact, and each
variance is estimated with noise (with 3 seeds a variance's interval is [0.27, 39.5] x s^2).
"""

import math

from . import intervals
from .plan import families

LEVEL = intervals.LEVEL
FIELDS = ["family", "recipe", "vary", "metric", "n_seeds", "mean", "var", "var_ci_low", "var_ci_high", "sd",
          "sd_ci_low", "sd_ci_high", "share_of", "share", "share_ci_low", "share_ci_high", "note"]


def variance_sources(recipes: dict, values: dict, metric: str, level: float = LEVEL) -> list[dict]:
    """Rows of variance_sources.csv for one metric: per family, per member recipe.

    ``recipes`` maps name -> recipe dict (with ``vary``), ``values`` maps name -> per-seed values of
    ``metric`` (a share in [0, 1]). A member's share is its variance divided by the variance of the
    family's ``vary: all`` member (the total seed-to-seed variance), with an F interval."""
    rows = []
    for fam in families({n: recipes[n] for n in values}):
        total = next((n for n in fam if recipes[n].get("vary", "all") == "all"), None)
        ref = intervals.variance_interval(values[total], level) if total else None
        for name in fam:
            v = intervals.variance_interval(values[name], level)
            row = {"family": fam[0], "recipe": name, "vary": recipes[name].get("vary", "all"), "metric": metric,
                   "n_seeds": v["n"], "mean": v["mean"], "var": v["var"], "sd": v["sd"],
                   "var_ci_low": v["var_low"], "var_ci_high": v["var_high"],
                   "sd_ci_low": v["sd_low"], "sd_ci_high": v["sd_high"],
                   "share_of": total or "", "share": math.nan, "share_ci_low": math.nan,
                   "share_ci_high": math.nan, "note": "sd interval cut at 0.5" if v["truncated"] else ""}
            if v["n"] < 2:
                row["note"] = "one seed: no variance"
            elif total is None:
                row["note"] = "no vary: all recipe in this family: no total to take a share of"
            elif name == total:
                row["share"] = 1.0
            else:
                ratio, low, high = intervals.ratio_interval(v["var"], v["n"], ref["var"], ref["n"], level)
                row.update(share=ratio, share_ci_low=low, share_ci_high=high)
                if math.isnan(ratio):
                    row["note"] = f"{total} has no variance to take a share of"
            rows.append(row)
    return rows
