"""Shared fixtures: tiny synthetic datasets in the official layout, a tiny recipe, script runners."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))

from cifar100 import data  # noqa: E402

TINY_RECIPE = {"epochs": 2, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
               "nesterov": False, "schedule": "step", "step_size": 1, "gamma": 0.5,
               "label_smoothing": 0.0, "width": 8}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 10-class synthetic dataset (300 train / 100 test images); returns its data_dir."""
    d = tmp_path_factory.mktemp("tiny_data")
    data.write_synthetic(d, train_size=300, test_size=100, num_classes=10, num_coarse=5, seed=0)
    return d


def run_script(name: str, *args, check=True, timeout=300, env=None, **kw) -> subprocess.CompletedProcess:
    """Run scripts/<name> as a user would; returns the completed process (text output)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    p = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=full_env, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{name} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def train_args(data_dir, out_dir, recipe=None, seed=0, *extra):
    return ["--recipe-json", json.dumps(recipe or TINY_RECIPE), "--seed", seed, "--data-dir", data_dir,
            "--out-dir", out_dir, "--selection", "best_test", "--deterministic", "--device", "cpu", *extra]


# Every file one (recipe, seed) run of the workflow ends with, and the per-recipe / cross-recipe ones.
RUN_OUTPUTS = [
    "model.pt", "history.csv", "predictions.npz", "metrics.json", "samples.png", "training_curves.png",
    "confusion_matrix.png", "per_class_accuracy.csv", "class_extremes.png", "superclass_confusion.png",
    "confusion_summary.json", "errors_gallery.png", "confusion_pairs.csv", "confidence_histogram.png",
    "errors_summary.json", "classification_report.csv", "classification_report.json",
    "classification_report.txt", "reliability_diagram.png", "summary.json", "gradcam_correct.png",
    "gradcam_incorrect.png", "gradcam_summary.json", "gradcam_maps.npz",
]
SHARED_OUTPUTS = ["results/baseline/seeds_summary.csv", "results/baseline/seeds_per_class.csv",
                  "results/baseline/seeds_curves.png", "results/recipes_summary.csv",
                  "results/recipes_comparison.png"]


def load_script(name):
    """scripts/<name>.py as a module (under a private name, apart from the package modules)."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Evil:
    """Pickles to a call of os.system: a file that runs code when unpickled without restriction."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
