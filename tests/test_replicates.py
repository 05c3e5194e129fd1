"""Replicates: mean, std and t interval against numpy/scipy, the one-seed case, aggregate.py and
compare.py end to end on hand-made per-seed files."""

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from scipy import stats

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from cifar100 import plots, replicates, seed_agreement  # noqa: E402
from cifar100.cli import run_cli  # noqa: E402
from cifar100.exceptions import DataError  # noqa: E402
from cifar100.files import write_csv  # noqa: E402
from helpers import load_script  # noqa: E402

TOP1 = {0: 0.70, 1: 0.72, 2: 0.74}
CLASSES = ["apple", "bear", "cloud"]



def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_seed(root: Path, recipe: str, seed: int, top1: float, epochs: int = 3) -> dict:
    """summary.json, history.csv and per_class_accuracy.csv of one seed, as report.py, train.py and
    confusion.py write them."""
    d = root / recipe / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({
        "recipe": recipe, "seed": seed, "top1": top1, "top5": top1 + 0.2, "macro_f1": top1 - 0.01,
        "ece": 0.05 + 0.01 * seed, "n": 10000}))
    with open(d / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc",
                    "seconds", "images_per_s"])
        for e in range(1, epochs + 1):
            w.writerow([e, 0.1, 1.0 / e, 0.5, 1.2 / e, top1 * e / epochs, "", "", 1.0, 1000.0])
    with open(d / "per_class_accuracy.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class_index", "class_name", "superclass", "accuracy", "support"])
        for i, name in enumerate(CLASSES):
            w.writerow([i, name, f"group{i % 2}", round(top1 + 0.1 * (i - 1) + 0.01 * seed, 4), 100])
    return {"summary": d / "summary.json", "history": d / "history.csv", "per_class": d / "per_class_accuracy.csv"}


def aggregate_args(files, out):
    return [str(a) for a in ["--summaries", *[f["summary"] for f in files], "--histories",
                             *[f["history"] for f in files], "--per-class", *[f["per_class"] for f in files],
                             "--seeds-summary", Path(out) / "seeds_summary.csv",
                             "--seeds-per-class", Path(out) / "seeds_per_class.csv",
                             "--curves", Path(out) / "seeds_curves.png"]]


@pytest.fixture
def three_seeds(tmp_path):
    return [write_seed(tmp_path, "baseline", s, t) for s, t in TOP1.items()]


# --- numbers ------------------------------------------------------------------------------------


def test_t_interval_against_numpy_and_scipy():
    x = np.array([0.70, 0.72, 0.74])
    r = replicates.t_interval(x)
    sem = x.std(ddof=1) / math.sqrt(3)
    low, high = stats.t.interval(0.95, df=2, loc=x.mean(), scale=sem)
    assert r["n"] == 3 and r["mean"] == pytest.approx(0.72) and r["std"] == pytest.approx(0.02)
    assert (r["low"], r["high"]) == pytest.approx((low, high))
    assert r["half"] == pytest.approx(4.302652729911275 * 0.02 / math.sqrt(3))  # t_{2, 0.975}
    r90 = replicates.t_interval(x, 0.90)
    assert r90["half"] == pytest.approx(stats.t.ppf(0.95, 2) * sem) and r90["half"] < r["half"]


def test_one_value_has_no_spread():
    r = replicates.t_interval([0.7])
    assert r["n"] == 1 and r["mean"] == 0.7
    assert all(math.isnan(r[k]) for k in ("std", "low", "high", "half"))
    with pytest.raises(ValueError):
        replicates.t_interval([])


def summaries(values, recipe="baseline"):
    return [{"recipe": recipe, "seed": s, "top1": v, "top5": v + 0.2, "macro_f1": v, "ece": 0.05}
            for s, v in values.items()]


def test_seeds_summary_rows():
    rows = replicates.seeds_summary(summaries({2: 0.74, 0: 0.70, 1: 0.72}))
    assert [r["row"] for r in rows] == ["seed"] * 3 + list(replicates.STAT_ROWS)
    assert [r["seed"] for r in rows[:3]] == [0, 1, 2]  # sorted by seed
    stat = {r["row"]: r for r in rows[3:]}
    assert stat["mean"]["top1"] == pytest.approx(0.72) and stat["std"]["top1"] == pytest.approx(0.02)
    assert stat["ci95_high"]["top1"] - stat["ci95_low"]["top1"] == pytest.approx(2 * stat["ci95_halfwidth"]["top1"])
    assert stat["std"]["ece"] == pytest.approx(0, abs=1e-12) and stat["mean"]["n_seeds"] == 3


def test_seeds_summary_one_seed():
    rows = replicates.seeds_summary(summaries({5: 0.7}))
    stat = {r["row"]: r for r in rows}
    assert stat["mean"]["top1"] == 0.7
    assert all(stat[k][m] == "" for k in ("std", "ci95_low", "ci95_high", "ci95_halfwidth") for m in replicates.METRICS)
    assert stat["mean"]["note"] == replicates.ONE_SEED_NOTE


def test_mixed_recipes_and_repeated_seeds_are_refused():
    with pytest.raises(DataError, match="mix recipes"):
        replicates.seeds_summary(summaries({0: 0.7}) + summaries({1: 0.7}, "cosine"))
    with pytest.raises(DataError, match="seed 0 appears twice"):
        replicates.check_replicates(summaries({0: 0.7}) * 2, ["a.json", "b.json"])


def test_per_class_summary_against_numpy():
    acc = np.array([[0.5, 0.9, 0.1], [0.6, 0.8, 0.3], [0.7, 0.7, 0.2]])
    tables = [[{"class_index": j, "class_name": CLASSES[j], "superclass": "g", "accuracy": a}
               for j, a in enumerate(row)] for row in acc]
    rows = replicates.per_class_summary(tables, ["a", "b", "c"])
    np.testing.assert_allclose([r["mean"] for r in rows], acc.mean(0))
    np.testing.assert_allclose([r["std"] for r in rows], acc.std(0, ddof=1))
    np.testing.assert_allclose([r["min"] for r in rows], acc.min(0))
    np.testing.assert_allclose([r["max"] for r in rows], acc.max(0))
    one = replicates.per_class_summary(tables[:1], ["a"])
    assert [r["std"] for r in one] == ["", "", ""] and [r["mean"] for r in one] == list(acc[0])
    tables[0][2]["accuracy"] = math.nan  # a class without test images in one seed
    rows = replicates.per_class_summary(tables, ["a", "b", "c"])
    assert rows[2]["n_seeds"] == 2 and rows[2]["mean"] == pytest.approx(0.25)
    for t in tables:
        t[2]["accuracy"] = math.nan
    assert replicates.per_class_summary(tables, ["a", "b", "c"])[2]["mean"] == ""
    tables[1][0]["class_name"] = "zebra"
    with pytest.raises(DataError, match="b: classes differ"):
        replicates.per_class_summary(tables, ["a", "b", "c"])


def test_read_per_class_accepts_nan(tmp_path):
    p = tmp_path / "per_class_accuracy.csv"
    p.write_text("class_index,class_name,superclass,accuracy,support\n1,b,,0.5,2\n0,a,,nan,0\n")
    rows = replicates.read_per_class(p)
    assert [r["class_name"] for r in rows] == ["a", "b"] and math.isnan(rows[0]["accuracy"])


def test_mean_curve():
    e = np.arange(1, 4)
    epochs, mean = replicates.mean_curve([(e, np.array([1.0, 2, 3])), (e, np.array([3.0, 4, 5]))])
    assert np.array_equal(epochs, e) and np.array_equal(mean, [2, 3, 4])
    assert replicates.mean_curve([(e, e)]) is None
    assert replicates.mean_curve([(e, e), (e[:2], e[:2])]) is None  # different lengths: no mean


@pytest.mark.parametrize("content, pattern", [
    (None, "file not found"), ("{", "not valid JSON"), ('{"recipe": "b", "seed": 0}', "missing key 'top1'"),
    ('{"recipe": "b", "seed": 0, "top1": "x", "top5": 1, "macro_f1": 1, "ece": 0}', "top1 must be a number"),
])
def test_read_summary_errors(tmp_path, content, pattern):
    p = tmp_path / "summary.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(DataError, match=pattern):
        replicates.read_summary(p)


def test_seeds_curves_figure():
    e = np.arange(1, 4)
    curves = {"seed 0": (e, e * 0.1), "seed 1": (e, e * 0.2)}
    fig = plots.seeds_curves(curves, replicates.mean_curve(list(curves.values())), title="baseline")
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and ax.get_xlabel() == "epoch" and ax.get_title() == "baseline"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["seed 0", "seed 1", "mean over seeds"]


# --- aggregate.py -------------------------------------------------------------------------------


def test_help(capsys):
    for name, flag in (("aggregate", "--per-class"), ("compare", "--figure")):
        with pytest.raises(SystemExit) as e:
            load_script(name).main(["--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert flag in out and out.count("(required)") + out.count("(default") >= out.count("\n  --")


def test_aggregate_three_seeds(three_seeds, tmp_path, capsys):
    out = tmp_path / "results" / "baseline"
    load_script("aggregate").main(aggregate_args(three_seeds, out))
    assert {"seeds_summary.csv", "seeds_per_class.csv", "seeds_curves.png"} <= {p.name for p in out.iterdir()}
    rows = read_csv(out / "seeds_summary.csv")
    assert [r["row"] for r in rows] == ["seed"] * 3 + list(replicates.STAT_ROWS)
    stat = {r["row"]: r for r in rows}
    x = np.array(list(TOP1.values()))
    assert float(stat["mean"]["top1"]) == pytest.approx(x.mean())
    assert float(stat["std"]["top1"]) == pytest.approx(x.std(ddof=1))
    low, high = stats.t.interval(0.95, 2, loc=x.mean(), scale=stats.sem(x))
    assert (float(stat["ci95_low"]["top1"]), float(stat["ci95_high"]["top1"])) == pytest.approx((low, high))
    per_class = read_csv(out / "seeds_per_class.csv")
    assert [r["class_name"] for r in per_class] == CLASSES
    assert float(per_class[1]["min"]) == pytest.approx(0.70) and float(per_class[1]["max"]) == pytest.approx(0.76)
    assert "95% CI" in capsys.readouterr().out


def test_aggregate_one_seed(tmp_path, capsys):
    files = [write_seed(tmp_path, "baseline", 0, 0.7)]
    load_script("aggregate").main(aggregate_args(files, tmp_path / "out"))
    stat = {r["row"]: r for r in read_csv(tmp_path / "out" / "seeds_summary.csv")}
    assert stat["mean"]["top1"] == "0.7" and stat["std"]["top1"] == "" and stat["ci95_low"]["top1"] == ""
    assert "no standard deviation or confidence interval" in stat["mean"]["note"]
    assert "no standard deviation or confidence interval" in capsys.readouterr().out
    assert read_csv(tmp_path / "out" / "seeds_per_class.csv")[0]["std"] == ""
    assert (tmp_path / "out" / "seeds_curves.png").is_file()


def test_aggregate_bad_input_exits_2(three_seeds, tmp_path, capsys):
    a = aggregate_args(three_seeds, tmp_path / "out")
    a.remove(str(three_seeds[2]["history"]))
    with pytest.raises(SystemExit) as e:
        run_cli(load_script("aggregate").main, a)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "3 summaries, 2 histories" in err
    three_seeds[1]["history"].write_text("epoch,lr\n1,0.1\n")
    with pytest.raises(SystemExit) as e:
        run_cli(load_script("aggregate").main, aggregate_args(three_seeds, tmp_path / "out"))
    assert e.value.code == 2 and "missing column 'test_acc'" in capsys.readouterr().err


# --- compare.py ---------------------------------------------------------------------------------


def make_recipe(root, recipe, top1s):
    """seeds_summary.csv (aggregate.py), churn.csv and ensemble.csv (seeds_study.py's functions, on
    random logits of 40 test images) of one recipe; returns the three paths and the predictions."""
    files = [write_seed(root, recipe, s, t) for s, t in enumerate(top1s)]
    load_script("aggregate").main(aggregate_args(files, root / recipe))
    rng = np.random.default_rng(len(top1s))
    labels = rng.integers(0, 5, 40)
    logits = rng.normal(size=(len(top1s), 40, 5)) + 1.5 * np.eye(5)[labels]
    preds = logits.argmax(axis=2)
    write_csv(root / recipe / "churn.csv", [replicates.cells({**r, "recipe": recipe})
                                            for r in seed_agreement.churn_rows(preds, labels, list(range(len(top1s))))],
              seed_agreement.CHURN_FIELDS)
    write_csv(root / recipe / "ensemble.csv", [replicates.cells({"recipe": recipe,
                                                                 **seed_agreement.ensemble(logits, labels)})])
    return root / recipe / "seeds_summary.csv", root / recipe / "churn.csv", root / recipe / "ensemble.csv", (
        logits, labels)


def compare_args(recipes, table, figure):
    return [str(x) for x in ["--summaries", *[r[0] for r in recipes], "--churn", *[r[1] for r in recipes],
                             "--ensemble", *[r[2] for r in recipes], "--table", table, "--figure", figure]]


def test_compare_two_recipes(tmp_path):
    a = make_recipe(tmp_path, "baseline", [0.70, 0.72, 0.74])
    b = make_recipe(tmp_path, "cosine", [0.75])
    table, figure = tmp_path / "recipes_summary.csv", tmp_path / "recipes_comparison.png"
    load_script("compare").main(compare_args([a, b], table, figure))
    rows = read_csv(table)
    assert [(r["recipe"], r["n_seeds"]) for r in rows] == [("baseline", "3"), ("cosine", "1")]
    assert float(rows[0]["top1_mean"]) == pytest.approx(0.72)
    assert float(rows[0]["top1_ci95_halfwidth"]) == pytest.approx(stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3))
    assert rows[1]["top1_ci95_low"] == "" and rows[1]["note"] == replicates.ONE_SEED_NOTE
    assert figure.is_file()
    # Mean churn over the 3 pairs and the ensemble's top-1 gain, recomputed with numpy.
    logits, labels = a[3]
    preds = logits.argmax(axis=2)
    churn = [np.mean(preds[i] != preds[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert float(rows[0]["churn_mean"]) == pytest.approx(np.mean(churn)) and rows[0]["churn_n_pairs"] == "3"
    assert float(rows[0]["churn_ci95_low"]) <= float(rows[0]["churn_mean"]) <= float(rows[0]["churn_ci95_high"])
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    gain = np.mean(probs.mean(0).argmax(1) == labels) - np.mean(preds == labels)
    assert float(rows[0]["ensemble_top1_gain"]) == pytest.approx(gain) and rows[0]["ensemble_n_images"] == "40"
    assert rows[1]["churn_mean"] == "" and rows[1]["churn_n_pairs"] == "0"  # one seed: no pair
    assert float(rows[1]["ensemble_top1_gain"]) == pytest.approx(0.0)  # an ensemble of one is that seed


def test_comparison_figure_artists():
    summary = {m: {"mean": [0.72, 0.75], "low": [0.67, math.nan], "high": [0.77, math.nan]}
               for m in ("top1", "ece")}
    points = {m: [[0.70, 0.72, 0.74], [0.75]] for m in ("top1", "ece")}
    fig = plots.recipes_comparison(["baseline", "cosine"], summary, points, {"top1": "top-1 accuracy"})
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "top-1 accuracy" and fig.axes[1].get_title() == "ece"
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["baseline", "cosine"]
    bars = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
    assert len(bars) == 1 and len(bars[0].lines[2][0].get_segments()) == 1  # one recipe has an interval
    dots = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))  # scatter
    assert dots == 2 + 4  # two means, four seeds


def test_compare_one_recipe(tmp_path):
    a = make_recipe(tmp_path, "baseline", [0.70])
    table, figure = tmp_path / "t.csv", tmp_path / "f.png"
    load_script("compare").main(compare_args([a], table, figure))
    assert [r["recipe"] for r in read_csv(table)] == ["baseline"] and figure.is_file()


def test_compare_refuses_a_recipe_twice(tmp_path, capsys):
    a = make_recipe(tmp_path, "baseline", [0.70, 0.71])
    with pytest.raises(SystemExit) as e:
        run_cli(load_script("compare").main, compare_args([a, a], tmp_path / "t.csv", tmp_path / "f.png"))
    assert e.value.code == 2 and "more than one summary" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()
    b = make_recipe(tmp_path, "cosine", [0.70, 0.71])
    with pytest.raises(SystemExit) as e:  # churn and ensemble files in another order than the summaries
        run_cli(load_script("compare").main, compare_args([a, (b[0], a[1], a[2])], tmp_path / "t.csv",
                                                          tmp_path / "f.png"))
    assert e.value.code == 2 and "churn and ensemble files are of 'baseline'" in capsys.readouterr().err


def test_selection_optimism_is_not_in_seeds_summary(three_seeds, tmp_path):
    """How optimistic best_test selection is comes from one rule only (seeds_study's
    selection_optimism.csv): seeds_summary.csv does not compute it again."""
    out = tmp_path / "out"
    load_script("aggregate").main(aggregate_args(three_seeds, out))
    header = (out / "seeds_summary.csv").read_text().splitlines()[0].split(",")
    assert header == ["row", "recipe", "seed", "n_seeds", *replicates.METRICS, "note"]
