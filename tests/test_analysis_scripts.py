"""The analysis scripts (samples, curves, confusion, errors, report) and the figures they draw.

Scripts run in-process through ``main(argv)`` (fast), and a few times as a user runs them
(``python scripts/x.py``) to prove they work standalone and fail with one line.
"""

import csv
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.image import AxesImage
from sklearn import metrics as skm

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))

from cifar100 import data, metrics, plots, predictions  # noqa: E402
from cifar100.cli import run_cli  # noqa: E402
from cifar100.files import write_csv, write_json, write_npz  # noqa: E402
from helpers import load_script  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = ["samples", "curves", "confusion", "errors", "report"]
# Each script writes exactly the paths it is given (the rule is the contract). These names differ on
# purpose from the workflow's, so a script that invented its own file names would fail here.
OUTPUTS = {
    "samples": {"--figure": "grid.png"},
    "curves": {"--figure": "curves.png"},
    "confusion": {"--matrix": "cm.png", "--per-class": "per_class.csv", "--class-extremes": "extremes.png",
                  "--superclass": "coarse.png", "--summary": "confusion.json"},
    "errors": {"--gallery": "gallery.png", "--pairs": "pairs.csv", "--histogram": "hist.png",
               "--summary": "errors.json"},
    "report": {"--report-csv": "report.csv", "--report-json": "report.json", "--report-txt": "report.txt",
               "--reliability": "reliability.png", "--summary": "summary.json"},
}
HISTORY_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc",
                  "seconds", "images_per_s"]



@pytest.fixture(scope="module")
def scripts():
    return {name: load_script(name) for name in NAMES}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def make_run(root: Path, coarse: bool = True, n_test: int = 60, seed: int = 0) -> dict:
    """A 10-class dataset (5 superclasses unless ``coarse`` is False) and a run folder with
    predictions.npz (some signal, so there are right and wrong answers), metrics.json, history.csv."""
    data_dir = root / "data"
    data.write_synthetic(data_dir, train_size=100, test_size=n_test, num_classes=10, num_coarse=5, seed=seed)
    if not coarse:  # a dataset whose meta has no superclasses
        meta = data.dataset_dir(data_dir) / "meta"
        meta.write_bytes(pickle.dumps({"fine_label_names": [f"class{c:02d}" for c in range(10)]}))
    test = data.load(data_dir).test
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n_test, 10)).astype(np.float32)
    logits[np.arange(n_test), test.labels] += 1.5
    run = root / "run"
    write_npz(run / "predictions.npz", logits=logits, labels=test.labels)
    write_json(run / "metrics.json", {"top1": metrics.topk_accuracy(logits, test.labels, 1),
                                      "top5": metrics.topk_accuracy(logits, test.labels, 5),
                                      "loss": 1.0, "recipe": "baseline", "seed": seed, "n": n_test,
                                      "num_classes": 10, "selection": "best_test", "selected_epoch": 3})
    rows = [{"epoch": e, "lr": 0.1 / e, "train_loss": 2 / e, "train_acc": 0.2 * e, "test_loss": 2.5 / e,
             "test_acc": 0.15 * e, "val_loss": "", "val_acc": "", "seconds": 1.0, "images_per_s": 100}
            for e in (1, 2, 3)]
    write_csv(run / "history.csv", rows, HISTORY_FIELDS)
    return {"data": data_dir, "run": run, "predictions": run / "predictions.npz", "logits": logits,
            "labels": test.labels}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("analysis"))


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("analysis_flat"), coarse=False)


def argv(name, r, out=None):
    """The command line the Snakefile gives ``name``, pointed at the run ``r``."""
    out = Path(out or r["run"])
    common = ["--predictions", r["predictions"], "--data-dir", r["data"]]
    inputs = {
        "samples": [*common, "--n", 8],
        "curves": ["--history", r["run"] / "history.csv"],
        "confusion": common,
        "errors": [*common, "--gallery-size", 6, "--top-pairs", 5],
        "report": [*common, "--metrics", r["run"] / "metrics.json", "--ece-bins", 15],
    }[name]
    outputs = [x for flag, file in OUTPUTS[name].items() for x in (flag, out / file)]
    return [str(x) for x in [*inputs, *outputs]]


def written(name):
    return list(OUTPUTS[name].values())


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


# --- command lines ---------------------------------------------------------------------------


def snakefile_flags(name):
    """Flags the Snakefile's shell line passes to scripts/<name>.py."""
    text = (REPO / "Snakefile").read_text()
    rule = r"\nrule " + name + r':\n.*?script=script\("' + name + r'\.py"\)'
    m = re.search(rule + r".*?shell:(.*?)> \{log(?::q)?\}", text, re.S)
    assert m, f"no shell line for {name}.py in the Snakefile"
    return set(re.findall(r"--[a-z][a-z-]*", m.group(1)))


@pytest.mark.parametrize("name", NAMES)
def test_help_documents_every_snakefile_flag_with_defaults(scripts, name, capsys):
    with pytest.raises(SystemExit) as e:
        scripts[name].main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in snakefile_flags(name):
        assert flag in text
    entries = re.split(r"\n  (?=-)", text.split("options:")[1])[1:]
    assert len(entries) > 1
    for entry in entries:  # every flag but --help says its default or that it is required
        assert entry.startswith("-h") or "default" in entry or "required" in entry, entry


@pytest.mark.parametrize("name", NAMES)
def test_snakefile_lines_parse(scripts, tiny_run, name):
    a = scripts[name].parse_args(argv(name, tiny_run))
    assert a is not None


# --- smoke runs and numbers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def outputs(scripts, tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    for name in NAMES:
        scripts[name].main(argv(name, tiny_run, out))
    return out


def test_every_declared_output_is_written(outputs):
    expected = {file for name in NAMES for file in written(name)}
    for file in expected:
        path = outputs / file
        assert path.is_file() and path.stat().st_size > 0, file
    assert {p.name for p in outputs.iterdir()} == expected, "a script wrote a file it was not given"


def test_per_class_accuracy_csv(outputs, tiny_run):
    header, rows = read_csv(outputs / "per_class.csv")
    assert header == ["class_index", "class_name", "superclass", "accuracy", "support"]
    labels, preds = tiny_run["labels"], tiny_run["logits"].argmax(1)
    recall = skm.recall_score(labels, preds, labels=np.arange(10), average=None, zero_division=0)
    assert [int(r["class_index"]) for r in rows] == list(range(10))
    np.testing.assert_allclose([float(r["accuracy"]) for r in rows], recall)
    assert [int(r["support"]) for r in rows] == np.bincount(labels, minlength=10).tolist()
    assert rows[0]["class_name"] == "class00" and rows[7]["superclass"] == "group2"  # synthetic: c % 5


def test_confusion_summary(outputs, tiny_run):
    s = json.loads((outputs / "confusion.json").read_text())
    labels, logits = tiny_run["labels"], tiny_run["logits"]
    preds = logits.argmax(1)
    f2c = np.arange(10) % 5
    wrong = preds != labels
    assert s["num_superclasses"] == 5 and s["n_errors"] == int(wrong.sum())
    assert not {"top1", "top5", "superclass_top1", "semantic_share"} & set(s)  # report.py's summary.json has them
    recall = skm.recall_score(labels, preds, labels=np.arange(10), average=None, zero_division=np.nan)
    figure = metrics.extreme_classes(recall, 10)  # the class_extremes figure's lists, also the summary's
    assert s["best_classes"] == [f"class{i:02d}" for i in figure["best"]]
    assert s["worst_classes"] == [f"class{i:02d}" for i in figure["worst"]]
    assert not set(s["best_classes"]) & set(s["worst_classes"])
    assert s["max_class_accuracy"] == pytest.approx(recall.max())
    assert s["min_class_accuracy"] == pytest.approx(recall.min())
    r = json.loads((outputs / "summary.json").read_text())
    assert r["top1"] == pytest.approx((preds == labels).mean())
    assert r["top5"] == pytest.approx(skm.top_k_accuracy_score(labels, logits, k=5, labels=np.arange(10)))
    assert r["semantic_share"] == pytest.approx((f2c[preds[wrong]] == f2c[labels[wrong]]).mean())


def test_confusion_pairs_csv(outputs, tiny_run):
    header, rows = read_csv(outputs / "pairs.csv")
    assert header == ["true_index", "true_name", "pred_index", "pred_name", "count"]
    labels, preds = tiny_run["labels"], tiny_run["logits"].argmax(1)
    cm = skm.confusion_matrix(labels, preds, labels=np.arange(10))
    assert 0 < len(rows) <= 5
    counts = [int(r["count"]) for r in rows]
    assert counts == sorted(counts, reverse=True)
    off = cm - np.diag(np.diag(cm))
    assert counts[0] == off.max()
    for r in rows:
        assert cm[int(r["true_index"]), int(r["pred_index"])] == int(r["count"])
        assert r["true_name"] == f"class{int(r['true_index']):02d}"


def test_errors_summary(outputs, tiny_run):
    s = json.loads((outputs / "errors.json").read_text())
    p = predictions.softmax(tiny_run["logits"])
    conf, correct = p.max(1), p.argmax(1) == tiny_run["labels"]
    assert s["mean_confidence_correct"] == pytest.approx(conf[correct].mean(), rel=1e-5)
    assert s["mean_confidence_wrong"] == pytest.approx(conf[~correct].mean(), rel=1e-5)
    assert s["overconfidence_gap"] == pytest.approx(conf.mean() - correct.mean(), rel=1e-5)


def test_report_outputs_and_summary(outputs, tiny_run):
    labels, preds = tiny_run["labels"], tiny_run["logits"].argmax(1)
    s = json.loads((outputs / "summary.json").read_text())
    assert {"top1", "top5", "macro_f1", "ece", "macro_precision", "macro_recall", "weighted_f1"} <= set(s)
    assert s["recipe"] == "baseline" and s["seed"] == 0 and s["loss"] == 1.0  # metrics.json carried over
    assert s["macro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro", zero_division=0))
    assert s["weighted_f1"] == pytest.approx(skm.f1_score(labels, preds, average="weighted", zero_division=0))
    assert s["macro_recall"] == pytest.approx(skm.recall_score(labels, preds, average="macro", zero_division=0))
    assert s["ece_bins"] == 15 and 0 <= s["ece"] <= 1
    header, rows = read_csv(outputs / "report.csv")
    assert header == ["class_index", "class_name", "precision", "recall", "f1", "support"]
    assert len(rows) == 12 and [r["class_name"] for r in rows[-2:]] == ["macro avg", "weighted avg"]
    j = json.loads((outputs / "report.json").read_text())
    assert len(j["classes"]) == 10 and j["macro avg"]["f1"] == pytest.approx(s["macro_f1"])
    text = (outputs / "report.txt").read_text()
    assert "macro avg" in text and "expected calibration error" in text


def test_dataset_without_superclasses_still_writes_everything(scripts, flat_run, tmp_path):
    for name in ("confusion", "errors", "report"):
        scripts[name].main(argv(name, flat_run, tmp_path))
        for out in written(name):
            assert (tmp_path / out).is_file(), out
    s = json.loads((tmp_path / "confusion.json").read_text())
    assert s["num_superclasses"] is None
    assert json.loads((tmp_path / "summary.json").read_text())["semantic_share"] is None
    _, rows = read_csv(tmp_path / "per_class.csv")
    assert all(r["superclass"] == "" for r in rows)


def test_samples_n_larger_than_the_test_set(scripts, tmp_path, capsys):
    r = make_run(tmp_path, n_test=12)
    args = argv("samples", r, tmp_path)
    args[args.index("--n") + 1] = "1000"
    scripts["samples"].main(args)
    assert (tmp_path / "grid.png").is_file() and ": 12 test images" in capsys.readouterr().out


# --- bad input: one line, exit 2 -------------------------------------------------------------


def run_cli_inprocess(module, args, monkeypatch, capsys, prog):
    monkeypatch.setattr(sys, "argv", [f"scripts/{prog}"])
    with pytest.raises(SystemExit) as e:
        run_cli(module.main, args)
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("name", ["samples", "confusion", "errors", "report"])
def test_bad_predictions_give_one_line(scripts, tiny_run, tmp_path, monkeypatch, capsys, name):
    bad = tmp_path / "predictions.npz"
    write_npz(bad, logits=tiny_run["logits"][:, :7], labels=tiny_run["labels"])
    r = {**tiny_run, "predictions": bad}
    code, err = run_cli_inprocess(scripts[name], argv(name, r, tmp_path), monkeypatch, capsys, f"{name}.py")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"{name}.py: error: ")
    assert "7 classes but the dataset has 10" in err


def test_bad_history_gives_one_line(scripts, tmp_path, monkeypatch, capsys):
    (tmp_path / "history.csv").write_text("epoch,lr,train_loss\n1,0.1,2.0\n")
    code, err = run_cli_inprocess(scripts["curves"], ["--history", str(tmp_path / "history.csv"), "--figure",
                                                      str(tmp_path / "c.png")], monkeypatch, capsys, "curves.py")
    assert code == 2 and err.count("\n") == 1 and "missing column 'train_acc'" in err


def test_standalone_run_and_error(tiny_run, tmp_path):
    """As the Snakefile runs it: python scripts/confusion.py from another folder."""
    cmd = [sys.executable, str(SCRIPTS / "confusion.py"), *argv("confusion", tiny_run, tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    assert all((tmp_path / out).is_file() for out in written("confusion"))
    cmd[cmd.index("--predictions") + 1] = str(tmp_path / "missing.npz")
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"confusion.py: error: {tmp_path / 'missing.npz'}: file not found"]


# --- figures, checked on their artists -------------------------------------------------------


def test_confusion_heatmap_100_classes_has_no_cell_values_and_thinned_ticks():
    rng = np.random.default_rng(0)
    labels = np.arange(2000) % 100
    preds = np.where(rng.random(2000) < 0.5, labels, rng.integers(0, 100, 2000))
    cm = metrics.confusion_matrix(labels, preds, 100, normalize=True)
    f2c = np.arange(100) % 20
    names = [f"class{i}" for i in range(100)]
    fig = plots.confusion_heatmap(cm, names, order=metrics.superclass_order(f2c, 100), groups=f2c, max_labels=50)
    ax = fig.axes[0]
    assert len(ax.texts) == 0  # no cell values
    assert len(ax.get_xticklabels()) == 50 and len(ax.get_yticklabels()) == 50
    assert ax.get_xticklabels()[1].get_text() == "class40"  # ordered by superclass: 0, 20, 40, ...
    assert ax.get_title().startswith("Confusion matrix") and ax.get_xlabel() and ax.get_ylabel()
    image = ax.get_images()[0].get_array()
    assert image.shape == (100, 100)
    order = metrics.superclass_order(f2c, 100)
    np.testing.assert_allclose(image, cm[np.ix_(order, order)])


def test_superclass_heatmap_values_and_note():
    m = metrics.normalize_rows(np.eye(20) * 9 + 1)
    fig = plots.superclass_heatmap(m, [f"g{i}" for i in range(20)])
    ax = fig.axes[0]
    assert len(ax.texts) == 400 and ax.texts[0].get_text() == "34"  # 10 of 29 in row 0
    assert ax.get_title() and ax.get_xlabel() == "predicted superclass"
    fig = plots.superclass_heatmap(None, None)
    assert [t.get_text() for t in fig.axes[0].texts] == ["no superclasses in meta"]


def test_class_extremes_bars():
    acc = np.linspace(0, 1, 30)
    ex = metrics.extreme_classes(acc, 10)
    fig = plots.class_extremes(acc, [f"c{i}" for i in range(30)], ex["best"], ex["worst"])
    left, right = fig.axes
    assert len(left.patches) == 10 and len(right.patches) == 10
    assert left.get_yticklabels()[0].get_text() == "c29" and right.get_yticklabels()[0].get_text() == "c0"
    assert "most" in left.get_title() and "least" in right.get_title() and left.get_xlabel()


def _images(fig):
    return [a for ax in fig.axes for a in ax.get_children() if isinstance(a, AxesImage)]


def test_errors_gallery_and_samples_grid():
    images = np.zeros((5, 32, 32, 3), np.uint8)
    fig = plots.errors_gallery(images, ["a"] * 5, ["b"] * 5, np.full(5, 0.9), cols=4)
    assert len(_images(fig)) == 5 and fig._suptitle.get_text()
    assert all("true: a" in ax.get_title() and "0.90" in ax.get_title() for ax in fig.axes[:5])
    assert len(_images(plots.errors_gallery(images[:0], [], [], []))) == 0
    fig = plots.samples_grid(images[:2], ["a", "b"], ["a", "c"], [0.8, 0.6], [True, False])
    colors = [ax.title.get_color() for ax in fig.axes[:2]]
    assert colors == [plots.CORRECT_COLOR, plots.WRONG_COLOR] and len(_images(fig)) == 2


def test_confidence_histogram_marks_means():
    fig = plots.confidence_histogram(np.array([0.9, 0.8]), np.array([0.4, 0.6]))
    ax = fig.axes[0]
    assert sorted(line.get_xdata()[0] for line in ax.lines) == pytest.approx([0.5, 0.85])
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel() == "density"


def test_reliability_diagram():
    conf = np.array([0.2, 0.3, 0.5, 0.9, 0.8, 1.0])
    correct = np.array([False, True, True, True, False, True])
    calib = metrics.calibration(conf, correct, n_bins=3)
    fig = plots.reliability_diagram(calib)
    ax, counts = fig.axes
    assert "ECE 0." in ax.get_title() and ax.get_xlabel() == "" and counts.get_xlabel()
    assert len(ax.patches) == 6 and len(counts.patches) == 3  # accuracy + gap per filled bin
    assert [p.get_height() for p in ax.patches[:3]] == pytest.approx(calib["accuracy"])


def test_training_curves_skip_unrecorded_validation():
    history = {"epoch": np.array([1.0, 2.0]), "lr": np.array([0.1, 0.01]),
               "train_loss": np.array([2.0, 1.0]), "test_loss": np.array([2.2, 1.5]),
               "train_acc": np.array([0.3, 0.6]), "test_acc": np.array([0.2, 0.5]),
               "val_loss": np.array([np.nan, np.nan]), "val_acc": np.array([np.nan, np.nan])}
    fig = plots.training_curves(history)
    loss, acc, lr = fig.axes
    assert [line.get_label() for line in loss.lines] == ["train", "test"]
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["train", "test"]
    assert lr.get_yscale() == "log" and all(ax.get_title() and ax.get_xlabel() == "epoch" for ax in fig.axes)
