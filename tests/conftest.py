"""Shared fixtures: tiny synthetic datasets in the official layout. Helpers live in helpers.py."""

from pathlib import Path

import pytest
from helpers import SCRIPTS  # noqa: F401  (puts scripts/ on sys.path)

from cifar100 import data


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 10-class synthetic dataset (300 train / 100 test images); returns its data_dir."""
    d = tmp_path_factory.mktemp("tiny_data")
    data.write_synthetic(d, train_size=300, test_size=100, num_classes=10, num_coarse=5, seed=0)
    return d
