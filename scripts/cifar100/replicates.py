"""Replicates: one recipe trained with several seeds, summarised as mean, spread and a t interval.

The interval for the mean of n seeds is mean +- t_{n-1, (1+level)/2} * std / sqrt(n), with the
sample standard deviation (ddof=1), truncated to the range the metric can take (RANGE: [0, 1] for
all four). Truncation keeps the coverage of the t interval (the true mean lies in the range, so it
is inside the truncated interval exactly when it is inside the untruncated one) and stops two
seeds from claiming a top-1 of 1.68; ``ci95_halfwidth`` stays the untruncated t half-width. One
seed gives a mean but no spread and no interval: those fields are left empty (NaN in memory, ""
in CSV) and a note says so.

Readers for the per-seed files (summary.json, history.csv, per_class_accuracy.csv) and for
seeds_summary.csv live here too, so both aggregate.py and compare.py validate input the same way.
Pure numpy/scipy: runs in the analysis env, which has no PyTorch.
"""

import csv
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from .exceptions import DataError

METRICS = ("top1", "top5", "macro_f1", "ece")
LEVEL = 0.95
RANGE = {m: (0.0, 1.0) for m in METRICS}  # every metric is a share (ECE too): its interval stays inside
ONE_SEED_NOTE = "one seed: no standard deviation or confidence interval can be given"
STAT_ROWS = ("mean", "std", "ci95_low", "ci95_high", "ci95_halfwidth")
# best_test selection's optimism: the selected (best) epoch's test accuracy minus the last epoch's.
OPTIMISM = "best_minus_last_test_acc"
SUMMARY_FIELDS = ["row", "recipe", "seed", "n_seeds", *METRICS, OPTIMISM, "note"]


def t_interval(values, level: float = LEVEL, bounds: tuple[float, float] | None = None) -> dict:
    """n, mean, sample std and the t interval of the mean of ``values`` (NaN where undefined).

    With ``bounds`` (lowest, highest value the metric can take) ``low``/``high`` are truncated to
    them and ``truncated`` says whether that changed either; ``half`` is always the t half-width.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": math.nan, "low": math.nan, "high": math.nan, "half": math.nan,
                "truncated": False}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, df=n - 1) * std / math.sqrt(n))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"n": n, "mean": mean, "std": std, "low": low, "high": high, "half": half,
            "truncated": (low, high) != (mean - half, mean + half)}


def interval_method(level: float = LEVEL) -> str:
    """How the intervals are made, in words, for notes, captions and figure titles."""
    return f"{round(100 * level)}% t interval truncated to [0, 1]"


def interval_note(n: int, truncated: list[str], level: float = LEVEL) -> str:
    """The note beside an interval: method, number of seeds, and which metrics hit the range."""
    if n < 2:
        return ONE_SEED_NOTE
    note = f"{interval_method(level)}, over {n} seeds"
    if truncated:
        note += f"; truncated for {', '.join(truncated)}"
    return note


def _cell(v) -> str | float:
    """CSV cell: NaN and None become empty, floats stay floats."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


# --- reading per-seed files ---------------------------------------------------------------------


def _number(value, path, key) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {key} must be a number, found {value!r}") from None
    if not math.isfinite(x):
        raise DataError(f"{path}: {key} is {x}")
    return x


def read_summary(path) -> dict:
    """One seed's summary.json: recipe, seed and every metric in METRICS."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object")
    missing = [k for k in ("recipe", "seed", *METRICS) if k not in obj]
    if missing:
        raise DataError(f"{path}: missing key {missing[0]!r}")
    seed = _number(obj["seed"], path, "seed")
    if seed != int(seed):
        raise DataError(f"{path}: seed must be an integer, found {obj['seed']!r}")
    epoch = obj.get("selected_epoch")  # optional: marks the evaluated epoch on the seeds' curves
    return {"recipe": str(obj["recipe"]), "seed": int(seed),
            **{m: _number(obj[m], path, m) for m in METRICS},
            "selected_epoch": None if epoch is None else int(_number(epoch, path, "selected_epoch")),
            "selection": obj.get("selection")}


def _read_csv(path, required) -> list[dict]:
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fields = reader.fieldnames or []
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    missing = [c for c in required if c not in fields]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (columns: {', '.join(fields) or 'none'})")
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def read_history(path, column: str = "test_acc") -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values of ``column``) from one seed's history.csv."""
    rows = _read_csv(path, ["epoch", column])
    epochs = np.array([_number(r["epoch"], path, "epoch") for r in rows])
    values = np.array([_number(r[column], path, column) for r in rows])
    return epochs, values


def read_per_class(path) -> list[dict]:
    """Rows of one seed's per_class_accuracy.csv, accuracy as float (NaN for a class without test
    images, written as "nan" or empty), sorted by class_index."""
    rows = _read_csv(path, ["class_index", "class_name", "superclass", "accuracy"])
    out = []
    for r in rows:
        acc = r["accuracy"]
        acc = math.nan if acc.strip().lower() in ("", "nan") else _number(acc, path, "accuracy")
        out.append({"class_index": int(_number(r["class_index"], path, "class_index")),
                    "class_name": r["class_name"], "superclass": r["superclass"], "accuracy": acc})
    return sorted(out, key=lambda r: r["class_index"])


# --- aggregating one recipe ---------------------------------------------------------------------


def check_replicates(summaries: list[dict], paths) -> str:
    """The recipe shared by all ``summaries``; DataError on mixed recipes or repeated seeds."""
    recipes = {s["recipe"] for s in summaries}
    if len(recipes) != 1:
        raise DataError(f"summaries mix recipes {sorted(recipes)}: aggregate one recipe at a time")
    seen = {}
    for s, p in zip(summaries, paths):
        if s["seed"] in seen:
            raise DataError(f"{p}: seed {s['seed']} appears twice (also in {seen[s['seed']]})")
        seen[s["seed"]] = p
    return recipes.pop()


def selection_optimism(test_acc) -> float:
    """How much better the best epoch's test accuracy is than the last epoch's (>= 0): what
    best_test selection adds to the reported number."""
    return float(np.max(test_acc) - test_acc[-1])


def seeds_summary(summaries: list[dict], level: float = LEVEL, optimism: dict | None = None) -> list[dict]:
    """Rows of seeds_summary.csv: one per seed (by seed), then mean, std and the interval.
    ``optimism`` ({seed: best minus last test accuracy}) fills the OPTIMISM column."""
    recipe = check_replicates(summaries, [f"seed {s['seed']}" for s in summaries])
    seeds = sorted(summaries, key=lambda s: s["seed"])
    optimism = optimism or {}
    rows = [{"row": "seed", "recipe": recipe, "seed": s["seed"], "n_seeds": "",
             **{m: s[m] for m in METRICS}, OPTIMISM: optimism.get(s["seed"], ""), "note": ""} for s in seeds]
    ti = {m: t_interval([s[m] for s in seeds], level, RANGE[m]) for m in METRICS}
    if optimism:
        ti[OPTIMISM] = t_interval([optimism[s["seed"]] for s in seeds], level, (0.0, 1.0))
    note = interval_note(len(seeds), [m for m in METRICS if ti[m]["truncated"]], level)
    for name, key in zip(STAT_ROWS, ("mean", "std", "low", "high", "half")):
        rows.append({"row": name, "recipe": recipe, "seed": "", "n_seeds": len(seeds),
                     **{m: _cell(ti[m][key]) for m in ti}, "note": note})
    return rows


def per_class_summary(tables: list[list[dict]], paths) -> list[dict]:
    """Per class: mean, std (empty with one seed), min and max accuracy across seeds.

    Seeds where a class has no accuracy (no test images) are left out of its numbers; n_seeds
    says how many were used, and a class without any has empty cells."""
    ref = [(r["class_index"], r["class_name"]) for r in tables[0]]
    for t, p in zip(tables[1:], paths[1:]):
        if [(r["class_index"], r["class_name"]) for r in t] != ref:
            raise DataError(f"{p}: classes differ from those in {paths[0]}")
    acc = np.array([[r["accuracy"] for r in t] for t in tables])  # [seeds, classes]
    rows = []
    for j, r in enumerate(tables[0]):
        a = acc[:, j][np.isfinite(acc[:, j])]
        row = {"class_index": r["class_index"], "class_name": r["class_name"], "superclass": r["superclass"],
               "n_seeds": len(a), "mean": "", "std": "", "min": "", "max": ""}
        if len(a):
            row.update(mean=float(a.mean()), std=_cell(float(a.std(ddof=1)) if len(a) > 1 else math.nan),
                       min=float(a.min()), max=float(a.max()))
        rows.append(row)
    return rows


def mean_curve(curves: list[tuple[np.ndarray, np.ndarray]]):
    """(epochs, mean values) over seeds that share the same epochs, else None."""
    if len(curves) < 2 or any(not np.array_equal(e, curves[0][0]) for e, _ in curves[1:]):
        return None
    return curves[0][0], np.mean([v for _, v in curves], axis=0)


# --- comparing recipes --------------------------------------------------------------------------


def read_seeds_summary(path) -> dict:
    """One recipe's seeds_summary.csv as {recipe, n_seeds, seeds, values{m: [...]}, stats{row: {m: x}}}."""
    rows = _read_csv(path, ["row", "recipe", "seed", *METRICS])
    recipes = {r["recipe"] for r in rows}
    if len(recipes) != 1:
        raise DataError(f"{path}: expected one recipe, found {sorted(recipes)}")
    seed_rows = [r for r in rows if r["row"] == "seed"]
    if not seed_rows:
        raise DataError(f"{path}: no per-seed rows")
    stat = {r["row"]: r for r in rows if r["row"] in STAT_ROWS}
    if "mean" not in stat:
        raise DataError(f"{path}: no 'mean' row")

    def opt(row, m):
        v = stat.get(row, {}).get(m, "")
        return math.nan if v in ("", None) else _number(v, path, f"{row} {m}")

    return {"recipe": recipes.pop(), "n_seeds": len(seed_rows),
            "seeds": [int(_number(r["seed"], path, "seed")) for r in seed_rows],
            "values": {m: [_number(r[m], path, m) for r in seed_rows] for m in METRICS},
            "stats": {row: {m: opt(row, m) for m in METRICS} for row in STAT_ROWS},
            "note": stat["mean"].get("note") or ""}


def recipes_table(recipes: list[dict]) -> list[dict]:
    """One row per recipe: n seeds, then mean, std and interval of every metric."""
    names = [r["recipe"] for r in recipes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataError(f"recipe {sorted(dup)[0]!r} appears in more than one summary")
    rows = []
    for r in recipes:
        row = {"recipe": r["recipe"], "n_seeds": r["n_seeds"]}
        for m in METRICS:
            s = r["stats"]
            row.update({f"{m}_mean": s["mean"][m], f"{m}_std": _cell(s["std"][m]),
                        f"{m}_ci95_low": _cell(s["ci95_low"][m]), f"{m}_ci95_high": _cell(s["ci95_high"][m]),
                        f"{m}_ci95_halfwidth": _cell(s["ci95_halfwidth"][m])})
        # seeds_summary.csv's note names the method and any truncation; recomputed if it is absent.
        truncated = [m for m in METRICS if r["stats"]["ci95_halfwidth"][m] > 0 and (
            r["stats"]["ci95_high"][m] - r["stats"]["ci95_low"][m] < 2 * r["stats"]["ci95_halfwidth"][m] - 1e-12)]
        row["note"] = r.get("note") or interval_note(r["n_seeds"], truncated)
        rows.append(row)
    return rows
