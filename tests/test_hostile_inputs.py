"""Hostile and careless inputs, generated here: a user's files beside a run, damaged or foreign
results, crafted dataset pickles, class names holding reST, bad flags. Each one is refused in one
line before any work, or left alone; nothing the user made is deleted."""

import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cifar100 import checkpoint, data, deadline, engine, files, readers, resume
from cifar100.config import validate
from cifar100.exceptions import CheckpointError, ConfigError
from cifar100.model import resnet18
from helpers import REPO, SCRIPTS, TINY_RECIPE, load_script, run_main, run_script, train_args

ONE_EPOCH = {**TINY_RECIPE, "epochs": 1}


def _one_line_error(p, script):
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    return lines[0]


def _tree(path):
    return _snapshot(path) if path.is_dir() else path.read_bytes()


def _snapshot(folder):
    return {p.relative_to(folder): (p.is_dir(), None if p.is_dir() else p.read_bytes()) for p in folder.rglob("*")}


# --- 4. never delete a file the workflow did not write -----------------------------------------

def test_a_run_in_a_folder_of_the_users_files_removes_only_its_own_temps(tiny_data, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in (".notes.tmpl", ".report.tmp", ".todo.tmp.bak", ".model.pt.tmp", ".x.1.deadbeef.tmp.pt"):
        (folder / name).write_text(f"the user's {name}")
    (folder / ".cfg.tmpdir").mkdir()
    (folder / ".cfg.tmpdir" / "settings").write_text("kept")
    users = _snapshot(folder)
    ours = folder / files.temp_name("last.pt")  # what a writer killed while saving leaves
    ours.write_bytes(b"half a checkpoint")
    assert files.is_temp_name(ours.name) and not any(files.is_temp_name(p.name) for p in folder.iterdir()
                                                      if p != ours)
    p = run_main("train.py", *train_args(tiny_data, folder, ONE_EPOCH))
    assert "epoch 1/1" in p.stdout
    assert not ours.exists()
    after = _snapshot(folder)
    assert {k: v for k, v in after.items() if k in users} == users  # every file and folder of the user, as it was


@pytest.mark.parametrize("kind, run", [
    *[(kind, run_main) for kind in ("a user's JSON", "a folder", "random bytes", "a record of another project")],
    pytest.param("a folder", run_script, marks=pytest.mark.slow, id="a folder-python scripts/train.py"),
])
def test_a_diverged_json_that_is_not_ours_is_kept_whole_and_training_runs(tiny_data, tmp_path, kind, run):
    folder = tmp_path / "run"
    folder.mkdir()
    target = folder / "diverged.json"
    rng = np.random.default_rng(len(kind))
    if kind == "a folder":
        target.mkdir()
        (target / "inside").write_text("kept")
    elif kind == "random bytes":
        target.write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    elif kind == "a user's JSON":
        target.write_text(json.dumps({"fingerprint": "my own notes", "message": "keep me"}))
    else:  # shaped like ours, but not marked as written by this project
        target.write_text(json.dumps({"format": "other/1", "fingerprint": {"seed": 0}, "message": "x"}))
    before = _tree(target)
    p = run("train.py", *train_args(tiny_data, folder, ONE_EPOCH))
    (aside,) = folder.glob("diverged.json.unreadable-*")
    assert _tree(aside) == before  # kept whole, under a new name
    assert f"ignoring {target} (moved to {aside.name})" in p.stdout and (folder / "model.pt").is_file()


def test_only_a_record_this_project_wrote_is_deleted(tmp_path):
    fingerprint = {"recipe_name": "baseline", "seed": 0}
    path = tmp_path / resume.DIVERGED
    files.write_json(path, resume.divergence_record({**fingerprint, "seed": 1}, "diverged"))
    logs = []
    resume.refuse_if_diverged(path, fingerprint, logs.append)  # ours, other settings: forgotten
    assert not path.exists() and not logs


def test_history_or_model_that_is_a_folder_stops_before_training(tiny_data, tmp_path):
    folder = tmp_path / "run"
    (folder / "history.csv").mkdir(parents=True)
    (folder / "history.csv" / "inside").write_text("kept")
    p = run_main("train.py", *train_args(tiny_data, folder, ONE_EPOCH), check=False)
    assert "a folder where this run writes a file" in _one_line_error(p, "train.py")
    assert "epoch 1" not in p.stdout and (folder / "history.csv" / "inside").read_text() == "kept"


def _metrics(**over):
    m = {"n": 100, "num_classes": 10, "selection": "best_test", "selected_epoch": 2, "recipe": "baseline",
         "seed": 0, "selection_note": "", "run_spec": {"recipe": {**TINY_RECIPE}}, "training_provenance": {},
         "evaluation_provenance": {}}
    m.update(over)
    return m


@pytest.fixture()
def predictions(tiny_data, tmp_path):
    test, names, _, _ = data.load_test(tiny_data)
    logits = np.random.default_rng(0).normal(size=(len(test), len(names))).astype(np.float32)
    path = tmp_path / "predictions.npz"
    files.write_npz(path, logits=logits, labels=test.labels)
    return path


def _report(tiny_data, tmp_path, predictions, metrics_text):
    (tmp_path / "metrics.json").write_text(metrics_text)
    out = tmp_path / "out"
    return run_main("report.py", "--predictions", predictions, "--metrics", tmp_path / "metrics.json",
                      "--data-dir", tiny_data, "--report-csv", out / "r.csv", "--report-json", out / "r.json",
                      "--report-txt", out / "r.txt", "--reliability", out / "rel.png", "--summary",
                      out / "summary.json", check=False)


@pytest.mark.parametrize("text, message", [
    ('{"top1": 0.5}', "missing key 'n'"),
    (json.dumps(_metrics(top1=math.nan)), "top1 nan is not a finite number in [0, 1]"),
    (json.dumps(_metrics(top5=1.5)), "top5 1.5 is not a finite number in [0, 1]"),
    (json.dumps(_metrics(seed=-1)), "seed -1 is outside 0..4294967295"),
    (json.dumps(_metrics(selected_epoch="2")), "selected_epoch must be an integer, found '2'"),
    (json.dumps(_metrics(selection="best_guess")), "selection 'best_guess' is not one of"),
    (json.dumps(_metrics(n=99)), "describes 99 test images of 10 classes, but"),
    ("[" * 100_000, "not valid JSON"),
])
def test_a_metrics_json_that_does_not_hold_what_evaluate_writes_is_one_line(tiny_data, tmp_path, predictions,
                                                                           text, message):
    p = _report(tiny_data, tmp_path, predictions, text)
    assert message in _one_line_error(p, "report.py")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_whole_metrics_json_makes_a_summary(tiny_data, tmp_path, predictions):
    p = _report(tiny_data, tmp_path, predictions, json.dumps(_metrics()))
    assert p.returncode == 0, p.stderr
    summary = readers.read_run_summary(tmp_path / "out" / "summary.json")
    assert 0 <= summary["top1"] <= 1


def _history(tmp_path, epochs=2):
    rows = [{"epoch": e, "lr": 0.05, "train_loss": 2.0 / e, "train_acc": 0.1 * e, "test_loss": 2.1 / e,
             "test_acc": 0.09 * e, "val_loss": "", "val_acc": "", "seconds": 1.5, "images_per_s": 200.0}
            for e in range(1, epochs + 1)]
    path = tmp_path / "history.csv"
    files.write_csv(path, rows, engine.HISTORY_FIELDS)
    return path


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-7], "truncated (the last row does not end with a line break)"),
    (lambda b: b.rsplit(b",", 3)[0] + b"\r\n", "3: {n} fields where the header has {n3}"),
    (lambda b: b.replace(b"0.18", b"nan"), "3: column 'test_acc' holds nan"),
    (lambda b: b.replace(b"0.18", b"1.8"), "3: column 'test_acc' holds 1.8"),
    (lambda b: b"\x89PNG\r\n\x1a\n\xff\xfe" + b, "not a CSV file (byte 0 is not UTF-8 text)"),
    (lambda b: b"\r\n".join(b.split(b"\r\n")[:2]) + b"\r\n", "1 epochs, but"),  # a whole row lost
])
def test_a_damaged_history_is_refused_in_one_line(tmp_path, damage, message):
    path = _history(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    (tmp_path / "metrics.json").write_text(json.dumps(_metrics(selected_epoch=1, run_spec={"recipe": TINY_RECIPE})))
    p = run_main("curves.py", "--history", path, "--metrics", tmp_path / "metrics.json",
                   "--figure", tmp_path / "c.png", check=False)
    n = len(engine.HISTORY_FIELDS)
    assert message.format(n=n - 3, n3=n) in _one_line_error(p, "curves.py")
    assert not (tmp_path / "c.png").exists()


def test_a_history_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "history.csv").mkdir()
    p = run_main("curves.py", "--history", tmp_path / "history.csv", "--figure", tmp_path / "c.png", check=False)
    assert "a folder, not a CSV file" in _one_line_error(p, "curves.py")


# --- coarse labels must agree with fine labels ---------------------------------------------------

def _copy_data(tmp_path, tiny_data):
    d = tmp_path / "d"
    shutil.copytree(tiny_data, d)
    return d, data.dataset_dir(d)


def _rewrite(path, change):
    obj = data.safe_load(path)
    change(obj)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def test_a_fine_class_in_two_superclasses_is_refused(tmp_path, tiny_data):
    d, root = _copy_data(tmp_path, tiny_data)
    fine = data.safe_load(root / "train")["fine_labels"]
    i = 1 + fine[1:].index(fine[0])  # a second image of the first image's class

    def move(obj):
        obj["coarse_labels"][i] = (obj["coarse_labels"][i] + 1) % 5

    _rewrite(root / "train", move)
    p = run_main("download.py", "--data-dir", d, check=False)
    msg = _one_line_error(p, "download.py")
    assert f"{root / 'train'}: coarse labels disagree with fine labels: fine class {fine[0]}" in msg
    assert "each fine class must belong to exactly one superclass" in msg


def test_train_and_test_placing_a_class_in_different_superclasses_is_refused(tmp_path, tiny_data):
    d, root = _copy_data(tmp_path, tiny_data)

    def shift(obj):
        obj["coarse_labels"] = [(c + 1) % 5 for c in obj["coarse_labels"]]

    _rewrite(root / "test", shift)
    p = run_main("download.py", "--data-dir", d, check=False)
    assert "coarse labels disagree between train and test: fine class 'class00'" in _one_line_error(p, "download.py")


# --- 5. crafted pickles: no segfault, no gigabytes -----------------------------------------------

class ShortObjectArray:
    """Unpickles to an object array of shape (10**6,) filled from a list of 2: numpy trusts the list."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, (0,), b"b"), (1, (10**6,), np.dtype(object), False, [1, 2]))


def _shared_lists(depth, width=2):
    x = [0]
    for _ in range(depth):
        x = [x] * width  # one list referenced `width` times: a few bytes per level in the pickle
    return x


@pytest.mark.parametrize("value, message", [
    (ShortObjectArray(), "refusing an array of Python objects"),
    (_shared_lists(30), "containers nested more than 8 deep"),
    (_shared_lists(6, width=60), "hold more items than a file of"),
])
def test_a_crafted_label_list_is_refused_in_one_line_without_a_crash(tmp_path, tiny_data, value, message):
    d, root = _copy_data(tmp_path, tiny_data)
    _rewrite(root / "train", lambda obj: None)
    size = (root / "train").stat().st_size

    def plant(obj):
        obj["fine_labels"] = value

    _rewrite(root / "train", plant)
    assert (root / "train").stat().st_size < size + 2000  # under 2 KB of crafted labels
    p = run_script("download.py", "--data-dir", d, check=False, timeout=60)
    assert p.returncode != -signal.SIGSEGV, "numpy segfaulted"
    assert message in _one_line_error(p, "download.py")


# --- 5. bad flags and values: one line before any work -------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "argument --seed: must be 0..4294967295, got -1"),
    (["--seed", "4294967296"], "argument --seed: must be 0..4294967295, got 4294967296"),
    (["--checkpoint-margin", "nan"], "argument --checkpoint-margin: must be a finite number of seconds >= 0"),
    (["--checkpoint-margin", "-5"], "argument --checkpoint-margin: must be a finite number of seconds >= 0"),
])
def test_bad_train_flags_are_refused_before_any_work(tiny_data, tmp_path, flags, message):
    p = run_main("train.py", *train_args(tiny_data, tmp_path, ONE_EPOCH), *flags, check=False,
                 env={"SLURM_JOB_ID": "1", "SLURM_JOB_END_TIME": "4102444800"})
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith(f"train.py: error: {message}")
    assert not any(tmp_path.iterdir())


def test_a_nan_margin_never_fires_the_stop_signal():
    with pytest.raises(deadline.DeadlineError, match="checkpoint margin nan s: must be a finite number"):
        with deadline.stop_before_end(math.nan, print, env={"SLURM_JOB_ID": "1", "SLURM_JOB_END_TIME": "4102444800"}):
            pass


def test_an_unwritable_model_folder_is_one_line_before_training(tiny_data):
    # /proc takes no new files, even for root (chmod would not stop root)
    p = run_main("train.py", *train_args(tiny_data, "/proc", ONE_EPOCH), check=False)
    assert "cannot write /proc/attempts.log" in _one_line_error(p, "train.py")


def test_an_unwritable_data_dir_for_a_synthetic_set_is_one_line():
    p = run_main("download.py", "--data-dir", "/proc/cifar100-data", "--dataset", "synthetic", check=False)
    assert "cannot write a dataset into /proc/cifar100-data/synthetic-" in _one_line_error(p, "download.py")


def test_a_figure_of_an_unknown_format_is_one_line(tmp_path):
    _history(tmp_path)
    p = run_main("curves.py", "--history", tmp_path / "history.csv", "--figure", tmp_path / "x.xyz", check=False)
    assert "x.xyz: cannot write a figure as .xyz: use one of" in _one_line_error(p, "curves.py")
    assert list(tmp_path.iterdir()) == [tmp_path / "history.csv"]


@pytest.mark.parametrize("change, message", [
    (lambda c: c["recipes"].update({"-h": c["recipes"]["baseline"]}), "config key recipes: '-h' does not match"),
    (lambda c: c["synthetic"].update(train_size=10**6, num_classes=1000), "synthetic/train_size: 1000000 is greater"),
    (lambda c: c["synthetic"].update(train_size=500, num_classes=1000),
     "synthetic/train_size: 500 training images cannot hold all 1000 classes"),
])
def test_config_values_that_cannot_work_are_refused(config_dict, change, message):
    change(config_dict)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(config_dict)


@pytest.fixture()
def config_dict():
    return {"seeds": [0], "runs": ["baseline"], "selection": "best_test", "dataset": "synthetic",
            "synthetic": {}, "recipes": {"baseline": dict(TINY_RECIPE)}}


def test_a_model_pt_asking_for_a_huge_width_is_refused_before_allocating(tmp_path):
    path = tmp_path / "model.pt"
    small = resnet18(10, 8).state_dict()
    checkpoint.save(path, {"model_args": {"num_classes": 10, "width": 100_000}, "state_dict": small})
    # resnet18(10, 100_000) would hold about 2.7e13 weights: only the meta device can describe it
    with pytest.raises(CheckpointError, match=r"weights do not fit ResNet-18 \{'num_classes': 10, 'width': 100000\}"):
        checkpoint.load_model(path)


# --- 5. a SIGTERM after the final save: the job succeeded ------------------------------------------

@pytest.mark.slow  # a training subprocess
def test_sigterm_right_after_training_finished_exits_zero(tiny_data, tmp_path):
    # The signal is sent by the process itself the moment engine.train returns (model.pt written):
    # the same moment every time, whatever the machine's speed.
    code = ("import os, signal, sys, time\n"
            f"sys.path.insert(0, {str(SCRIPTS)!r})\n"
            "from cifar100 import engine\n"
            "from cifar100.cli import run_cli\n"
            "real = engine.train\n"
            "def train_then_term(*a, **kw):\n"
            "    out = real(*a, **kw)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(0.2)\n"
            "    return out\n"
            "engine.train = train_then_term\n"
            "import importlib.util\n"
            f"spec = importlib.util.spec_from_file_location('train', {str(SCRIPTS / 'train.py')!r})\n"
            "train = importlib.util.module_from_spec(spec); spec.loader.exec_module(train)\n"
            "run_cli(train.main, sys.argv[1:])\n")
    args = [str(a) for a in train_args(tiny_data, tmp_path, ONE_EPOCH)]
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    assert "after training finished (its outputs are complete)" in p.stderr
    checkpoint.load_model(tmp_path / "model.pt")


# --- 3. class names are data: written into reST as plain text --------------------------------------

HOSTILE_NAMES = [".. include:: /etc/hostname", "`click <javascript:alert(1)>`_", "<script>alert(1)</script>",
                 ".. raw:: html", "cat_", "|sub|", "* item", "1. first"]


def test_hostile_class_names_reach_the_report_page_as_plain_text(tmp_path, tiny_data):
    from docutils.core import publish_parts

    d, root = _copy_data(tmp_path, tiny_data)
    meta = data.safe_load(root / "meta")
    names = HOSTILE_NAMES + [f"class{i}" for i in range(len(HOSTILE_NAMES), len(meta["fine_label_names"]))]
    meta["fine_label_names"] = names
    (root / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    test, _, _, _ = data.load_test(d)
    out = tmp_path / "out"
    summaries = []
    for seed, hostile in enumerate([0, 1]):  # each run's best class is a hostile name, worst another
        logits = np.full((len(test), len(names)), -5.0, dtype=np.float32)
        logits[np.arange(len(test)), test.labels] = 5.0  # every class right ...
        worst = test.labels == len(HOSTILE_NAMES) - 1 - hostile
        logits[worst, test.labels[worst]] = -9.0  # ... except one
        files.write_npz(tmp_path / f"p{seed}.npz", logits=logits, labels=test.labels)
        (tmp_path / f"m{seed}.json").write_text(json.dumps(_metrics(seed=seed, n=len(test))))
        run_main("report.py", "--predictions", tmp_path / f"p{seed}.npz", "--metrics", tmp_path / f"m{seed}.json",
                 "--data-dir", d, "--report-csv", out / f"r{seed}.csv", "--report-json", out / f"r{seed}.json",
                 "--report-txt", out / f"r{seed}.txt", "--reliability", out / f"rel{seed}.png",
                 "--summary", out / f"s{seed}.json")
        summaries.append(out / f"s{seed}.json")
    hostile_in = {json.loads(s.read_text())["notebook"][k] for s in summaries for k in ("best_class", "worst_class")}
    assert hostile_in & set(HOSTILE_NAMES) == {HOSTILE_NAMES[0], HOSTILE_NAMES[-1], HOSTILE_NAMES[-2]}
    headline = load_script("headline")
    rows = [headline.run_row(json.loads(s.read_text()), s) for s in summaries]
    text = headline.rst_table(["recipe", "seed", "accuracy", "macro F1", "weighted F1", "best", "worst", "epoch"],
                              rows)
    # As Snakemake renders a report page (docutils defaults: file insertion and raw HTML enabled)
    page = (REPO / "scripts" / "captions" / "workflow.rst").read_text()
    rst_page = text + "\n\n" + page.split("{% endfor %}", 1)[1]
    html = publish_parts(rst_page, writer_name="html")["body"]
    hostname = open("/etc/hostname").read().strip() if os.path.exists("/etc/hostname") else "\0"
    assert "System Message" not in html and "<script" not in html and "href=\"javascript" not in html
    assert hostname not in html.replace(".. include:: /etc/hostname", "")
    assert html.count("<table") == 1 and "<ul" not in html and "<ol" not in html
    assert ".. include:: /etc/hostname" in html and "1. first" in html  # shown, literally


# --- 6. say what the user needs to know ----------------------------------------------------------

def _seed_files(tmp_path, seed, capability, device="cpu"):
    prov = {"device": device, "device_name": "Xeon", "cpu_capability": capability, "threads": 1,
            "versions": {"torch": "2.4.0", "cuda": None, "cudnn": None}}
    summary = tmp_path / f"summary{seed}.json"
    summary.write_text(json.dumps({**_metrics(seed=seed, training_provenance=prov), "top1": 0.3 + 0.01 * seed,
                                   "top5": 0.6, "macro_f1": 0.3, "ece": 0.05}))
    per_class = tmp_path / f"per_class{seed}.csv"
    files.write_csv(per_class, [{"class_index": i, "class_name": f"c{i}", "superclass": "g", "accuracy": 0.5}
                                for i in range(3)])
    history = tmp_path / f"h{seed}"
    history.mkdir()
    return summary, _history(history), per_class


@pytest.mark.parametrize("capabilities, differs", [(["AVX2", "AVX2", "AVX2"], False),
                                                   (["AVX2", "AVX512", "AVX2"], True)])
def test_seeds_summary_says_when_seeds_ran_on_different_arithmetic(tmp_path, capabilities, differs):
    runs = [_seed_files(tmp_path, seed, c) for seed, c in enumerate(capabilities)]
    out = tmp_path / "seeds_summary.csv"
    p = run_main("aggregate.py", "--summaries", *[r[0] for r in runs], "--histories", *[r[1] for r in runs],
                 "--per-class", *[r[2] for r in runs], "--seeds-summary", out, "--seeds-per-class",
                 tmp_path / "per_class.csv", "--curves", tmp_path / "curves.png")
    _, rows = readers.read_csv(out, ["row", "note"])
    mean = next(r for r in rows if r["row"] == "mean")
    expected = ("the seeds ran on different arithmetic, so their spread includes it "
                "(seeds 0, 2: cpu_capability AVX2; seed 1: cpu_capability AVX512)")
    assert (expected in mean["note"]) == differs and (expected in p.stdout) == differs


def test_a_gpu_run_beside_a_cpu_run_is_named_by_device():
    from cifar100 import run_arithmetic

    cpu = {"seed": 0, "training_provenance": {"device": "cpu", "cpu_capability": "AVX2"}}
    gpu = {"seed": 1, "training_provenance": {"device": "cuda:0", "device_name": "H100",
                                              "versions": {"torch": "2.4.0", "cuda": "12.4"}}}
    text = run_arithmetic.note([cpu, gpu, {"seed": 2}])
    assert "seed 0: device cpu" in text and "seed 1: device cuda" in text and "seed 2: nothing recorded" in text


SLEEPER = """rule hold:
    output: "held"
    shell: "touch {output}; sleep 600"
"""


@pytest.mark.slow  # two snakemake processes
def test_a_second_snakemake_in_a_busy_folder_says_the_folder_is_in_use(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (tmp_path / "hold.smk").write_text(SLEEPER)
    # A real snakemake holding this folder: its job runs until the test stops it.
    first = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(tmp_path / "hold.smk"), "-d", str(wd),
                              "--cores", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        for _ in range(600):
            if (wd / "held").exists():
                break
            assert first.poll() is None, "the first snakemake ended early"
            time.sleep(0.1)
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(wd), "--configfile",
               str(REPO / "tests" / "tiny.yaml")]
        p = subprocess.run([*cmd, "--cores", "1"], capture_output=True, text=True, timeout=300)
        out = p.stdout + p.stderr
        assert p.returncode != 0 and f"{wd} is in use by another snakemake run" in out
        assert "IncompleteFiles" not in out and "--rerun-incomplete" not in out
        assert not (wd / "results").exists() and not (wd / "data").exists()
        looking = subprocess.run([*cmd, "-n"], capture_output=True, text=True, timeout=300)
        assert looking.returncode == 0, looking.stderr[-3000:]  # a dry run only looks: allowed
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the first snakemake and its sleeping job
        first.wait(timeout=60)


@pytest.mark.slow  # snakemake -n (test_slurm_submit.py checks { and } in this process)
def test_braces_in_data_dir_are_one_config_error_not_a_wildcard_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n",
                        "--configfile", str(REPO / "tests" / "tiny.yaml"), "--config", f"data_dir={tmp_path}/d{{x}}"],
                       capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "WildcardError" not in out and "Traceback" not in out
    assert f"config key data_dir: '{tmp_path}/d{{x}}' holds shell syntax ('{{}}')" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda s, h: s.write_text(s.read_text().replace('"top1": 0.3', '"top1": 1.3')), "top1 1.31 is not a finite"),
    (lambda s, h: (s.unlink(), s.mkdir()), "a folder, not a JSON file"),
    (lambda s, h: h.write_bytes(h.read_bytes()[:-3]), "truncated (the last row does not end with a line break)"),
])
def test_aggregate_refuses_a_damaged_seed_file_in_one_line(tmp_path, damage, message):
    runs = [_seed_files(tmp_path, seed, "AVX2") for seed in (0, 1)]
    damage(runs[1][0], runs[1][1])
    p = run_main("aggregate.py", "--summaries", *[r[0] for r in runs], "--histories", *[r[1] for r in runs],
                 "--per-class", *[r[2] for r in runs], "--seeds-summary", tmp_path / "s.csv", "--seeds-per-class",
                 tmp_path / "per_class.csv", "--curves", tmp_path / "curves.png", check=False)
    assert message in _one_line_error(p, "aggregate.py")
    assert not (tmp_path / "s.csv").exists()
