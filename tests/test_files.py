"""Atomic writes: temp file beside the target, renamed on success, removed on failure, never shared."""

import json

import pytest

from cifar100.exceptions import OutputError
from cifar100.files import atomic_path, write_json


def test_two_writers_of_one_file_never_share_a_temp_path(tmp_path):
    target = tmp_path / "metrics.json"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b and a.parent == b.parent == tmp_path
        a.write_text("1")
        b.write_text("2")
    assert target.read_text() == "1"  # the outer writer renamed last
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"top1": 0.5})
    with pytest.raises(ZeroDivisionError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            1 / 0
    assert json.loads(target.read_text()) == {"top1": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path):
    (tmp_path / "results").write_text("a file, not a folder")
    with pytest.raises(OutputError, match=r"cannot create folder .*results/run"):
        write_json(tmp_path / "results" / "run" / "metrics.json", {})
