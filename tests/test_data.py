"""The loader: official layout, class names from meta, and a clear error for every broken input."""

import pickle

import numpy as np
import pytest

from cifar100 import data
from cifar100.exceptions import DataError
from helpers import Evil, run_script


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
    assert "using " in p.stdout and "wrote" not in p.stdout
    assert before == {f: (root / f).read_bytes() for f in ("train", "test", "meta")}


# --- a dataset is never deleted, overwritten or mixed up (download.py, put_in_place) -----------

SMALL = '{"train_size": 40, "test_size": 20, "num_classes": 4, "num_coarse": 2}'


def _snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("missing", ["train", "test", "meta"])
def test_partial_prestaged_folder_is_one_line_naming_the_file_and_nothing_is_touched(tmp_path, tiny_data, missing):
    d, root = _copy(tmp_path, tiny_data)
    (root / missing).unlink()
    before = _snapshot(d)
    p = run_script("download.py", "--data-dir", d, "--dataset", "cifar100", check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"{root / missing}: missing from the dataset folder" in p.stderr
    assert _snapshot(d) == before  # nothing deleted, nothing downloaded


def test_synthetic_set_lives_in_its_own_folder_and_is_never_overwritten(tmp_path):
    d = tmp_path / "data"
    first = run_script("download.py", "--data-dir", d, "--dataset", "synthetic", "--synthetic", SMALL)
    assert "wrote the dataset to" in first.stdout
    assert not (d / "cifar-100-python").exists(), "synthetic data went where real CIFAR-100 lives"
    (folder,) = d.glob("synthetic-*")
    before = _snapshot(folder)
    again = run_script("download.py", "--data-dir", d, "--dataset", "synthetic", "--synthetic", SMALL)
    assert "wrote" not in again.stdout and _snapshot(folder) == before
    # other settings: another folder; the first is left alone
    run_script("download.py", "--data-dir", d, "--dataset", "synthetic", "--synthetic",
               SMALL.replace('"num_classes": 4', '"num_classes": 6'))
    assert len(list(d.glob("synthetic-*"))) == 2 and _snapshot(folder) == before
    assert not list(d.glob(".incoming-*"))


def test_two_writers_racing_for_one_data_dir_both_succeed_with_one_complete_copy(tmp_path):
    import subprocess
    import sys

    from helpers import SCRIPTS

    d = tmp_path / "shared"
    settings = '{"train_size": 3000, "test_size": 500}'
    cmd = [sys.executable, str(SCRIPTS / "download.py"), "--data-dir", str(d), "--dataset", "synthetic",
           "--synthetic", settings]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("wrote the dataset" in out for out, _ in outs) == 1, outs  # the loser says it used the winner's
    (folder,) = d.glob("synthetic-*")
    assert len(data.load(folder).train) == 3000
    assert not list(d.glob(".incoming-*")), "a writer left its temporary folder behind"


def test_a_writer_that_loses_the_race_keeps_the_winners_copy(tmp_path, tiny_data):
    d = tmp_path / "d"
    messages = []

    def write(tmp):  # while this copy is written, another writer finishes first
        data.write_synthetic(tmp, train_size=30, test_size=10, num_classes=3, num_coarse=1)
        data.write_synthetic(d, train_size=40, test_size=20, num_classes=4, num_coarse=2)

    data.put_in_place(d, write, log=messages.append)
    assert len(data.load(d).train) == 40  # the winner's set, untouched
    assert "appeared while this copy was being written" in messages[0]
    assert not any("wrote" in m for m in messages)
    assert [p.name for p in d.iterdir()] == ["cifar-100-python"]


def test_a_tiny_pickle_cannot_make_the_loader_allocate_gigabytes(tmp_path, tiny_data):
    d, root = _copy(tmp_path, tiny_data)

    class Huge:  # unpickles to numpy's _reconstruct(ndarray, (10**10,), float64): 80 GB if allowed
        def __reduce__(self):
            return (np.core.multiarray._reconstruct, (np.ndarray, (10**10,), np.dtype("float64")))

    (root / "train").write_bytes(pickle.dumps({"data": Huge()}, protocol=2))
    assert (root / "train").stat().st_size < 300
    with pytest.raises(DataError, match=r"unsafe pickle \(an array of 80000000000 bytes"):
        data.load(d)


@pytest.mark.parametrize("names, why", [
    ([b"caf\xe9"] + [f"c{i}".encode() for i in range(1, 10)], "is not UTF-8 text"),
    (["apple", "apple"] + [f"c{i}" for i in range(2, 10)], "lists 'apple' twice"),
    (["", *[f"c{i}" for i in range(1, 10)]], "empty or unprintable name"),
])
def test_bad_class_names_are_one_line(tmp_path, tiny_data, names, why):
    d, root = _copy(tmp_path, tiny_data)
    meta = data.safe_load(root / "meta")
    meta["fine_label_names"] = names
    (root / "meta").write_bytes(pickle.dumps(meta, protocol=3))
    p = run_script("download.py", "--data-dir", d, "--dataset", "cifar100", check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and why in p.stderr, p.stderr


def test_content_version_names_the_data_and_changes_with_it(tmp_path, tiny_data):
    d, root = _copy(tmp_path, tiny_data)
    cache = tmp_path / "md5.json"
    assert data.content_version(tmp_path / "nothing", cache) is None
    v1 = data.content_version(d, cache)
    assert v1.startswith("md5-") and data.content_version(d, cache) == v1 and cache.is_file()
    test = data.load(d).test
    data.write_split(root / "test", test.images[::-1], test.labels[::-1], test.coarse[::-1])
    assert data.content_version(d, cache) not in (None, v1)


def test_download_without_network_is_one_line_and_leaves_nothing(tmp_path):
    d = tmp_path / "data"
    p = run_script("download.py", "--data-dir", d, "--dataset", "cifar100", check=False,
                   env={"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "cannot download CIFAR-100" in p.stderr and "put cifar-100-python/" in p.stderr
    assert list(d.iterdir()) == []  # no half dataset, no temporary folder
