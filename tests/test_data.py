"""The loader: official layout, class names from meta, and a clear error for every broken input."""

import os
import pickle

import numpy as np
import pytest

from cifar100 import data
from cifar100.exceptions import DataError
from conftest import Evil, run_script


def test_synthetic_roundtrip_shapes_and_names(tmp_path):
    data.write_synthetic(tmp_path, train_size=70, test_size=21, num_classes=7, num_coarse=3, seed=1)
    ds = data.load(tmp_path)
    assert ds.train.images.shape == (70, 32, 32, 3) and ds.train.images.dtype == np.uint8
    assert ds.test.images.shape == (21, 32, 32, 3)
    assert ds.train.labels.dtype == np.int64 and set(ds.train.labels) == set(range(7))
    assert ds.num_classes == 7 and ds.fine_names == [f"class{i:02d}" for i in range(7)]
    assert ds.coarse_names == ["group0", "group1", "group2"]
    assert list(ds.fine_to_coarse()) == [c % 3 for c in range(7)]


def test_synthetic_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        data.write_synthetic(d, train_size=40, test_size=20, num_classes=4, num_coarse=2, seed=3)
    assert np.array_equal(data.load(a).train.images, data.load(b).train.images)


def test_reads_python2_style_pickles_with_bytes_keys(tmp_path):
    """The official files are Python 2 pickles: bytes keys, read with latin1."""
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 10)):
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"fine_labels": [i % 3 for i in range(n)], b"coarse_labels": [0] * n,
             b"filenames": [b"x.png"] * n, b"batch_label": b"training batch 1 of 1"}
        (root / split).write_bytes(pickle.dumps(d, protocol=2))
    (root / "meta").write_bytes(pickle.dumps(
        {b"fine_label_names": [b"apple", b"pear", b"plum"], b"coarse_label_names": [b"fruit"]}, protocol=2))
    ds = data.load(tmp_path)
    assert ds.fine_names == ["apple", "pear", "plum"] and ds.coarse_names == ["fruit"]
    raw = pickle.loads((root / "train").read_bytes())[b"data"][0]
    assert ds.train.images[0, 0, 0].tolist() == [raw[0], raw[1024], raw[2048]]  # R, G, B planes


def _copy(tmp_path, tiny_data):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(tiny_data, dst)
    return dst, dst / "cifar-100-python"


def _rewrite(path, **changes):
    d = pickle.loads(path.read_bytes())
    d.update(changes)
    path.write_bytes(pickle.dumps(d, protocol=4))


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"cifar-100-python: dataset folder not found"):
        data.load(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["train", "test", "meta"])
def test_missing_file(tmp_path, tiny_data, name):
    d, root = _copy(tmp_path, tiny_data)
    (root / name).unlink()
    with pytest.raises(DataError, match=rf"{name}: file not found"):
        data.load(d)


def test_truncated_pickle(tmp_path, tiny_data):
    d, root = _copy(tmp_path, tiny_data)
    raw = (root / "train").read_bytes()
    (root / "train").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"train: corrupt or truncated pickle"):
        data.load(d)


def test_wrong_shape(tmp_path, tiny_data):
    d, root = _copy(tmp_path, tiny_data)
    _rewrite(root / "test", data=np.zeros((100, 1024), np.uint8))
    with pytest.raises(DataError, match=r"test: 'data' has shape \(100, 1024\) uint8, expected \(N, 3072\)"):
        data.load(d)


def test_labels_out_of_range(tmp_path, tiny_data):
    d, root = _copy(tmp_path, tiny_data)
    _rewrite(root / "test", fine_labels=[12] + [0] * 99)
    with pytest.raises(DataError, match=r"test: 'fine_labels' out of range: values 0..12, but meta lists 10"):
        data.load(d)


def test_label_count_differs_from_data(tmp_path, tiny_data):
    d, root = _copy(tmp_path, tiny_data)
    _rewrite(root / "train", fine_labels=[0, 1, 2])
    with pytest.raises(DataError, match=r"train: 'fine_labels' must be 300 integers"):
        data.load(d)


def test_meta_class_count_disagrees_with_labels(tmp_path, tiny_data):
    d, root = _copy(tmp_path, tiny_data)
    _rewrite(root / "meta", fine_label_names=[f"c{i}" for i in range(20)])
    with pytest.raises(DataError, match=r"meta lists 20 fine classes but .*train uses 10 distinct labels"):
        data.load(d)




def test_crafted_pickle_is_refused_and_runs_no_code(tmp_path, tiny_data):
    d, root = _copy(tmp_path, tiny_data)
    marker = tmp_path / "pwned"
    (root / "meta").write_bytes(pickle.dumps({"fine_label_names": Evil(marker)}))
    with pytest.raises(DataError, match=r"meta: unsafe pickle \(refusing to load global (posix|os)\.system\)"):
        data.load(d)
    assert not marker.exists()
    # the unrestricted unpickler would have run it: the test's payload is real
    pickle.loads((root / "meta").read_bytes())
    assert marker.exists()


def test_download_script_error_is_one_line(tmp_path, tiny_data):
    d, root = _copy(tmp_path, tiny_data)
    (root / "meta").write_bytes(b"\x80\x04garbage")
    p = run_script("download.py", "--data-dir", d, check=False)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0
    assert p.stderr.startswith("download.py: error: ") and "meta" in p.stderr


def test_download_uses_an_existing_folder_as_is(tmp_path, tiny_data):
    d, root = _copy(tmp_path, tiny_data)
    before = {f: (root / f).read_bytes() for f in ("train", "test", "meta")}
    p = run_script("download.py", "--data-dir", d, "--dataset", "cifar100")
    assert "using existing" in p.stdout
    assert before == {f: (root / f).read_bytes() for f in ("train", "test", "meta")}
