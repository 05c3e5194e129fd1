"""Shared fixtures: tiny synthetic datasets in the official layout, and one run of the README's
"try it here" for the session. Helpers live in helpers.py."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import ODD_DATA_DIR, REPO, SCRIPTS  # noqa: F401  (puts scripts/ on sys.path)

from cifar100 import data


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 10-class synthetic dataset (300 train / 100 test images); returns its data_dir."""
    d = tmp_path_factory.mktemp("tiny_data")
    data.write_synthetic(d, train_size=300, test_size=100, num_classes=10, num_coarse=5, seed=0)
    return d


@pytest.fixture(scope="session")
def try_it_here(tmp_path_factory) -> SimpleNamespace:
    """The README's "try it here" (`snakemake --cores 2 --configfile tests/tiny.yaml`) and its report
    command, typed in a copy of the repository, with only the declared dependencies importable
    (test_readme.py's guard), run once for the session. The copy, the working directory and the
    data_dir (odd.yaml, given after tests/tiny.yaml) have names with a space and non-ASCII letters:
    every rule must handle them. test_readme.py reads the report; test_workflow.py edits the copy
    and plans and reruns in the working directory."""
    from test_readme import declared_only_env, failed, snakemake

    root = tmp_path_factory.mktemp("wf") / "odd näme"
    workflow, workdir = root / "work flow", root / "run dir é"
    shutil.copytree(REPO, workflow, ignore=shutil.ignore_patterns(
        ".git", "results", "data", ".snakemake", "__pycache__", "*.egg-info", ".pytest_cache", ".gpu_wheels"))
    (root / "odd.yaml").write_text(f"data_dir: '{ODD_DATA_DIR}'\n")
    configs = ["--configfile", "tests/tiny.yaml", root / "odd.yaml"]
    env = declared_only_env(root / "guard")
    p = snakemake("--cores", "2", *configs, "-d", workdir, env=env, cwd=workflow)
    assert p.returncode == 0, "try it here: " + failed(p, env, workdir)
    p = snakemake(*configs, "-d", workdir, "--report", workdir / "report.html", env=env, cwd=workflow)
    assert p.returncode == 0, "report: " + failed(p, env, workdir)
    return SimpleNamespace(root=root, workflow=workflow, workdir=workdir, configs=configs, guard=root / "guard")
