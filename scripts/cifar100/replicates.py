"""Replicates: one recipe trained with several seeds, summarised as mean, spread and a t interval.

The interval for the mean of n seeds is mean +- t_{n-1, (1+level)/2} * std / sqrt(n), with the
sample standard deviation (ddof=1), cut to the range the metric can take ([0, 1] for all four), as
``intervals`` states for every bounded quantity; ``ci95_halfwidth`` stays the uncut t half-width.
One seed gives a mean but no spread and no interval: those fields are left empty (NaN in memory, ""
in CSV) and a note says so.

Readers for the per-seed files (summary.json, history.csv, per_class_accuracy.csv) and for the
per-recipe tables (seeds_summary.csv, churn.csv, ensemble.csv) live here too, so every script
validates input the same way. Pure numpy/scipy: runs in the analysis env, which has no PyTorch.
"""

import json
import math
from pathlib import Path

import numpy as np

from . import readers
from .exceptions import DataError
from .intervals import LEVEL, UNIT, t_interval  # noqa: F401  (t_interval: the one used for a mean over seeds)
from .intervals import method as interval_method

METRICS = ("top1", "top5", "macro_f1", "ece")
RANGE = {m: UNIT for m in METRICS}  # every metric is a share (ECE too): its interval stays inside
ONE_SEED_NOTE = "one seed: no standard deviation or confidence interval can be given"
STAT_ROWS = ("mean", "std", "ci95_low", "ci95_high", "ci95_halfwidth")
SUMMARY_FIELDS = ["row", "recipe", "seed", "n_seeds", *METRICS, "note"]
# recipes_summary.csv's columns from each recipe's churn.csv ("mean" row) and ensemble.csv.
AGREEMENT_FIELDS = ["churn_mean", "churn_ci95_low", "churn_ci95_high", "churn_n_pairs", "ensemble_top1_gain",
                    "ensemble_top1_gain_ci95_low", "ensemble_top1_gain_ci95_high", "ensemble_n_images"]


def interval_note(n: int, truncated: list[str], level: float = LEVEL) -> str:
    """The note beside an interval: method, number of seeds, and which metrics hit the range."""
    if n < 2:
        return ONE_SEED_NOTE
    note = f"{interval_method(level)}, over {n} seeds"
    if truncated:
        note += f"; truncated for {', '.join(truncated)}"
    return note


def _cell(v) -> str | float:
    """CSV cell: NaN and None become empty, numpy scalars plain numbers, floats stay floats."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


def cells(row: dict) -> dict:
    """A row for CSV: NaN becomes an empty cell (as in seeds_summary.csv), numpy scalars plain numbers."""
    return {k: _cell(v) for k, v in row.items()}


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
    obj = readers.read_object(path)  # a folder, random bytes, a list: one line
    missing = [k for k in ("recipe", "seed", *METRICS) if k not in obj]
    if missing:
        raise DataError(f"{path}: missing key {missing[0]!r}")
    seed = _number(obj["seed"], path, "seed")
    if seed != int(seed):
        raise DataError(f"{path}: seed must be an integer, found {obj['seed']!r}")
    epoch = obj.get("selected_epoch")  # optional: marks the evaluated epoch on the seeds' curves
    readers.check_fractions(obj, path)  # top1, top5, macro F1, ECE: finite, in [0, 1]
    return {"recipe": str(obj["recipe"]), "seed": int(seed),
            **{m: _number(obj[m], path, m) for m in METRICS},
            "selected_epoch": None if epoch is None else int(_number(epoch, path, "selected_epoch")),
            "selection": obj.get("selection")}


def _read_csv(path, required, allow_empty: bool = False) -> list[dict]:
    # Checked whole (readers.read_csv): a file cut short or a row missing fields is refused.
    return readers.read_csv(path, required, allow_empty)[1]


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


def seeds_summary(summaries: list[dict], level: float = LEVEL) -> list[dict]:
    """Rows of seeds_summary.csv: one per seed (by seed), then mean, std and the interval."""
    recipe = check_replicates(summaries, [f"seed {s['seed']}" for s in summaries])
    seeds = sorted(summaries, key=lambda s: s["seed"])
    rows = [{"row": "seed", "recipe": recipe, "seed": s["seed"], "n_seeds": "",
             **{m: s[m] for m in METRICS}, "note": ""} for s in seeds]
    ti = {m: t_interval([s[m] for s in seeds], level, RANGE[m]) for m in METRICS}
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


def _optional(row: dict, key: str, path) -> float:
    v = row.get(key, "")
    return math.nan if v in ("", None) else _number(v, path, key)


def read_agreement(churn_path, ensemble_path) -> dict:
    """One recipe's mean churn (churn.csv's "mean" row; NaN with one seed, which has no pair) and
    ensemble top-1 gain (ensemble.csv), with their intervals and n, as recipes_summary.csv's columns."""
    churn = _read_csv(churn_path, ["row", "churn", "churn_ci95_low", "churn_ci95_high", "n_pairs"], allow_empty=True)
    (ens,) = _read_csv(ensemble_path, ["top1_gain", "top1_gain_ci95_low", "top1_gain_ci95_high", "n_images"])[:1]
    mean = next((r for r in churn if r["row"] == "mean"), {})
    return {"recipe": ens.get("recipe", ""), "churn_mean": _optional(mean, "churn", churn_path),
            "churn_ci95_low": _optional(mean, "churn_ci95_low", churn_path),
            "churn_ci95_high": _optional(mean, "churn_ci95_high", churn_path),
            "churn_n_pairs": int(_optional(mean, "n_pairs", churn_path)) if mean else 0,
            "ensemble_top1_gain": _number(ens["top1_gain"], ensemble_path, "top1_gain"),
            "ensemble_top1_gain_ci95_low": _optional(ens, "top1_gain_ci95_low", ensemble_path),
            "ensemble_top1_gain_ci95_high": _optional(ens, "top1_gain_ci95_high", ensemble_path),
            "ensemble_n_images": int(_number(ens["n_images"], ensemble_path, "n_images"))}


def recipes_table(recipes: list[dict], agreement: list[dict] | None = None) -> list[dict]:
    """One row per recipe: n seeds, then mean, std and interval of every metric, then mean churn
    and the ensemble's top-1 gain with their intervals and n (``agreement``: read_agreement, same
    order; without it those cells stay empty)."""
    names = [r["recipe"] for r in recipes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataError(f"recipe {sorted(dup)[0]!r} appears in more than one summary")
    rows = []
    for r, agree in zip(recipes, agreement or [{k: math.nan for k in AGREEMENT_FIELDS}] * len(recipes), strict=True):
        if agree.get("recipe") not in ("", None, r["recipe"]):
            raise DataError(f"recipe {r['recipe']!r}: its churn and ensemble files are of {agree['recipe']!r} "
                            "(give them in the order of the summaries)")
        row = {"recipe": r["recipe"], "n_seeds": r["n_seeds"]}
        for m in METRICS:
            s = r["stats"]
            row.update({f"{m}_mean": s["mean"][m], f"{m}_std": _cell(s["std"][m]),
                        f"{m}_ci95_low": _cell(s["ci95_low"][m]), f"{m}_ci95_high": _cell(s["ci95_high"][m]),
                        f"{m}_ci95_halfwidth": _cell(s["ci95_halfwidth"][m])})
        row.update(cells({k: agree[k] for k in AGREEMENT_FIELDS}))
        # seeds_summary.csv's note names the method and any truncation; recomputed if it is absent.
        truncated = [m for m in METRICS if r["stats"]["ci95_halfwidth"][m] > 0 and (
            r["stats"]["ci95_high"][m] - r["stats"]["ci95_low"][m] < 2 * r["stats"]["ci95_halfwidth"][m] - 1e-12)]
        row["note"] = r.get("note") or interval_note(r["n_seeds"], truncated)
        rows.append(row)
    return rows


def read_recipes_summary(path) -> list[dict]:
    """recipes_summary.csv (recipes_table) as written, numbers as floats (NaN for an empty cell)."""
    fields = [f"{m}_{k}" for m in METRICS for k in ("mean", "ci95_low", "ci95_high")] + AGREEMENT_FIELDS
    rows = _read_csv(path, ["recipe", "n_seeds", *fields])
    return [{"recipe": r["recipe"], "n_seeds": int(_number(r["n_seeds"], path, "n_seeds")), "note": r.get("note", ""),
             **{k: _optional(r, k, path) for k in fields}} for r in rows]


# --- every seed of every recipe, for the study's comparisons --------------------------------------


def by_recipe(summaries: list[dict], paths) -> dict:
    """Per-seed summary.json contents (read_summary) grouped as {recipe: {"recipe", "seeds",
    "values": {metric: [...]}}}, seeds ascending; DataError when a (recipe, seed) appears twice."""
    seen, out = {}, {}
    for s, p in zip(summaries, paths):
        key = (s["recipe"], s["seed"])
        if key in seen:
            raise DataError(f"{p}: recipe {s['recipe']} seed {s['seed']} appears twice (also in {seen[key]})")
        seen[key] = p
    for s in sorted(summaries, key=lambda s: (s["recipe"], s["seed"])):
        r = out.setdefault(s["recipe"], {"recipe": s["recipe"], "seeds": [], "values": {}})
        r["seeds"].append(s["seed"])
        for m in METRICS:
            r["values"].setdefault(m, []).append(s[m])
    return out


def recipes_and_runs(recipes_json: str, summary_paths) -> tuple[dict, dict]:
    """The recipes' definitions (``--recipes-json``) and every seed's summary.json grouped by recipe
    (``by_recipe``); DataError, naming the flag, when the JSON is broken or lacks a recipe."""
    try:
        recipes = json.loads(recipes_json)
    except json.JSONDecodeError as e:
        raise DataError(f"--recipes-json: not valid JSON ({e})") from None
    runs = by_recipe([read_summary(p) for p in summary_paths], summary_paths)
    missing = [r for r in runs if r not in recipes]
    if missing:
        raise DataError(f"--recipes-json: no definition of recipe {missing[0]!r} (its summary.json is given)")
    return recipes, runs
