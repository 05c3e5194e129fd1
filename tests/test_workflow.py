"""The whole DAG on the tiny config, run by Snakemake as a user would, and what reruns after an edit."""

import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, RUN_OUTPUTS, SHARED_OUTPUTS

pytestmark = pytest.mark.slow

ANALYSIS_RULES = {"samples", "curves", "confusion", "errors", "report", "gradcam", "aggregate", "compare"}


def snakemake(workflow: Path, workdir: Path, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(workflow / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workflow / "tests" / "tiny.yaml"), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if check and p.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    return p


def planned(workflow, workdir, *args) -> dict:
    """{rule: count} of what a dry run would execute."""
    out = snakemake(workflow, workdir, "-n", *args).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A private copy of the workflow (so edits below touch only the copy) and one full run of it."""
    root = tmp_path_factory.mktemp("wf")
    workflow, workdir = root / "workflow", root / "run"
    shutil.copytree(REPO, workflow, ignore=shutil.ignore_patterns(
        ".git", "results", "data", ".snakemake", "__pycache__", "*.egg-info", ".pytest_cache"))
    snakemake(workflow, workdir, "--cores", "2")
    return workflow, workdir


def test_every_output_exists_for_every_seed(run):
    _, wd = run
    for seed in (0, 1):
        for name in [*RUN_OUTPUTS, "logs/train.log", "logs/evaluate.log", "benchmarks/train.tsv"]:
            assert (wd / f"results/baseline/seed{seed}" / name).is_file(), f"seed{seed}/{name} missing"
    for name in SHARED_OUTPUTS:
        assert (wd / name).is_file(), name
    assert (wd / "data/cifar-100-python/meta").is_file()  # landed in the working directory
    assert not list(wd.rglob("*.tmp*")), "temp files left behind"


def test_training_learned_and_seeds_differ(run):
    _, wd = run
    logits = [np.load(wd / f"results/baseline/seed{s}/predictions.npz")["logits"] for s in (0, 1)]
    assert logits[0].shape == (200, 10) and not np.array_equal(logits[0], logits[1])
    labels = np.load(wd / "results/baseline/seed0/predictions.npz")["labels"]
    assert all((lg.argmax(1) == labels).mean() > 0.3 for lg in logits)  # chance is 0.1


def test_up_to_date_after_the_run(run):
    assert planned(*run) == {}


@contextmanager
def edited(path: Path):
    """Edit a file as a person would (new content, newer mtime: Snakemake checks both), then undo
    the edit so that the next test starts from an up-to-date workflow again."""
    original = path.read_text()
    path.write_text(original + f"\n# edited at {time.time()}\n")
    t = time.time() + 5
    os.utime(path, (t, t))
    try:
        yield
    finally:
        path.write_text(original)


def test_editing_an_analysis_script_reruns_only_that_analysis(run):
    workflow, wd = run
    with edited(workflow / "scripts/confusion.py"):
        jobs = planned(workflow, wd)
    assert jobs.get("confusion") == 2
    assert set(jobs) <= {"confusion", "aggregate", "compare", "all"}  # aggregate reads per_class_accuracy.csv


def test_editing_shared_plot_helpers_reruns_only_analyses(run):
    workflow, wd = run
    with edited(workflow / "scripts/cifar100/plots.py"):
        jobs = planned(workflow, wd)
    assert {"confusion", "errors", "report", "samples", "curves"} <= set(jobs)
    assert set(jobs) <= ANALYSIS_RULES | {"all"}


def test_editing_training_code_reruns_training_and_everything_downstream(run):
    workflow, wd = run
    with edited(workflow / "scripts/cifar100/engine.py"):
        jobs = planned(workflow, wd)
    assert jobs.get("train") == 2 and jobs.get("evaluate") == 2
    assert ANALYSIS_RULES <= set(jobs)
    assert "download" not in jobs


def test_a_newer_download_script_never_refetches_existing_data(run):
    workflow, wd = run
    with edited(workflow / "scripts/download.py"):
        assert planned(workflow, wd) == {}


def test_changing_an_analysis_parameter_reruns_only_that_analysis(run, tmp_path):
    workflow, wd = run
    override = tmp_path / "gallery.yaml"
    override.write_text("analysis:\n  gallery_size: 5\n")
    jobs = planned(workflow, wd, "--configfile", workflow / "tests/tiny.yaml", override)
    assert jobs.get("errors") == 2 and set(jobs) <= {"errors", "all"}


def test_changing_a_recipe_reruns_training(run):
    workflow, wd = run
    jobs = planned(workflow, wd, "--config", "selection=last")
    assert jobs.get("train") == 2


def test_command_line_lists_and_booleans_read_as_yaml(run):
    jobs = planned(*run, "--config", "seeds=[0,1,2]", "deterministic=true")
    assert jobs.get("train") == 1  # only the new seed; seeds 0 and 1 are up to date


def test_bad_config_stops_before_any_job(run):
    workflow, wd = run
    p = snakemake(workflow, wd, "-n", "--config", "seeds=[]", check=False)
    assert p.returncode != 0 and "config key seeds" in p.stdout + p.stderr
    p = snakemake(workflow, wd, "-n", "--config", "runs=[baseline,adamw]", check=False)
    assert p.returncode != 0 and "recipe 'adamw' is not defined" in p.stdout + p.stderr


def test_html_report_holds_every_figure(run):
    workflow, wd = run
    snakemake(workflow, wd, "--report", wd / "report.html")
    html = (wd / "report.html").read_text(errors="replace")
    for category in ("training", "evaluation", "errors", "interpretability", "replicates"):
        assert category in html
