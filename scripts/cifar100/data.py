"""CIFAR-100 in its official python layout (``cifar-100-python/{train,test,meta}``), read safely.

The pickles are read straight into uint8 arrays with a restricted unpickler, not through
torchvision, so any dataset written in this layout works: class count and the fine and coarse
class names come from ``meta``. ``write_synthetic`` writes a small learnable dataset in the same
layout for tests and smoke runs; ``download`` fetches the real one (md5-checked, standard library only).
"""

import hashlib
import importlib
import io
import json
import os
import pickle
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .exceptions import DataError
from .files import atomic_path

FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")
OFFICIAL = "cifar100-official"  # the content version of the official files
IMAGE_SHAPE = (32, 32, 3)
SYNTHETIC_CHUNK = 4096  # images generated at once (float64: 100 MB of work arrays)
# The official files' md5 sums (torchvision checks the same ones after a download).
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
OFFICIAL_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                "meta": "7973b15100ade9c7d40fb424638fde48"}

# The only globals the official files reference: numpy array and dtype reconstruction.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


# Containers the official files nest: dict -> list -> str. Deeper nesting is refused before numpy
# walks it (np.asarray of 30 levels of shared lists would ask for 2**30 elements).
MAX_DEPTH = 8


class _Refused(pickle.UnpicklingError):
    pass


def _itemsize(dtype) -> int:
    try:
        return np.dtype(dtype).itemsize
    except Exception:  # numpy pickles pass b"b" here; anything odd is caught by the real call
        return 1


class _SafeUnpickler(pickle.Unpickler):
    """Accepts builtin containers, str, bytes, numbers and numpy arrays; refuses anything else.

    numpy's ``_reconstruct(cls, shape, dtype)`` and ``scalar(dtype, ...)`` allocate what their
    arguments say before any data is read, so a 100-byte file could ask for gigabytes: both are
    wrapped to refuse anything larger than the file itself (a real array's bytes are in the file).
    """

    def __init__(self, file, limit: int, **kw):
        super().__init__(file, **kw)
        self.limit = limit

    def _bounded(self, what: str, nbytes: int) -> None:
        if nbytes > self.limit:
            raise _Refused(f"{what} of {nbytes} bytes in a file of {self.limit} bytes")

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise _Refused(f"refusing to load global {module}.{name}")
        if name == "dtype":  # every dtype, nested fields included, is built through this call
            def dtype(*args):
                made = np.dtype(*args)
                if made.hasobject:
                    # numpy trusts an object array's pickled list to fill its shape: a short one segfaults
                    raise _Refused("refusing an array of Python objects (only numeric arrays are read)")
                return made
            return dtype
        target = None
        if module.startswith("numpy.core"):  # numpy 2 renamed numpy.core to numpy._core
            try:
                target = getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
            except ImportError:
                pass
        target = target or getattr(importlib.import_module(module), name)
        if name == "_reconstruct":
            def reconstruct(cls, shape, dtype):
                self._bounded("an array", int(np.prod(shape, dtype=np.float64)) * _itemsize(dtype))
                return target(cls, shape, dtype)
            return reconstruct
        if name == "scalar":
            def scalar(dtype, *args):
                self._bounded("a scalar", _itemsize(dtype))
                return target(dtype, *args)
            return scalar
        return target


def safe_load(path: Path) -> dict:
    """Read one dataset pickle; every failure is a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
        obj = _SafeUnpickler(io.BytesIO(raw), limit=len(raw) + 1024, encoding="latin1").load()
    except _Refused as e:
        raise DataError(f"{path}: unsafe pickle ({e})") from e
    except Exception as e:  # truncated streams raise EOFError, ValueError, ...
        raise DataError(f"{path}: corrupt or truncated pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, found {type(obj).__name__}")
    # Python 2 pickles may carry bytes keys.
    _check_containers(obj, path, limit=len(raw))
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _check_containers(obj, path: Path, limit: int) -> None:
    """Refuse nesting deeper than MAX_DEPTH, or more container items than the file has bytes.

    A pickle can reuse one list many times (memo references), so a few hundred bytes can hold a
    structure that numpy would expand into gigabytes; counting items as numpy would visit them,
    stopping at the file's size, costs at most that many steps. A real file stores every item at
    least once, in at least one byte.
    """
    stack, items = [(obj, 0)], 0
    while stack:
        x, depth = stack.pop()
        if isinstance(x, dict):
            children = [*x.keys(), *x.values()]
        elif isinstance(x, (list, tuple, set, frozenset)):
            children = list(x)
        else:
            continue
        if depth >= MAX_DEPTH:
            raise DataError(f"{path}: unsafe pickle (containers nested more than {MAX_DEPTH} deep)")
        items += len(children)
        if items > limit:
            raise DataError(f"{path}: unsafe pickle (its lists and dicts hold more items than a file of "
                            f"{limit} bytes can store: repeated references)")
        stack.extend((c, depth + 1) for c in children)


@dataclass
class Split:
    images: np.ndarray  # uint8 [N, 32, 32, 3]
    labels: np.ndarray  # int64 [N] fine labels
    coarse: np.ndarray | None  # int64 [N] superclass labels, if the files have them

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    train: Split
    test: Split
    fine_names: list[str]
    coarse_names: list[str] | None

    @property
    def num_classes(self) -> int:
        return len(self.fine_names)

    def fine_to_coarse(self) -> np.ndarray | None:
        """Superclass of each fine class (from the training labels), or None."""
        return _fine_to_coarse(self.train, self.num_classes) if self.coarse_names else None


def _fine_to_coarse(split: Split, num_classes: int) -> np.ndarray | None:
    if split.coarse is None:
        return None
    return _superclass_map(split.labels, split.coarse, num_classes)


def _superclass_map(labels: np.ndarray, coarse: np.ndarray, num_classes: int, path=None) -> np.ndarray:
    """Superclass of each fine class (-1: class absent); DataError if a fine class has two."""
    mapping = np.full(num_classes, -1, dtype=np.int64)
    mapping[labels] = coarse
    bad = np.flatnonzero(mapping[labels] != coarse)
    if bad.size:
        i = bad[0]
        raise DataError(f"{path or 'dataset'}: coarse labels disagree with fine labels: fine class {labels[i]} "
                        f"is in superclass {coarse[i]} at image {i} and in superclass {mapping[labels[i]]} "
                        "elsewhere (each fine class must belong to exactly one superclass)")
    return mapping


def dataset_dir(data_dir) -> Path:
    return Path(data_dir) / FOLDER


def _names(meta: dict, key: str, path: Path) -> list[str] | None:
    names = meta.get(key)
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"{path}: '{key}' must be a list of strings")
    try:
        names = [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: a name in '{key}' is not UTF-8 text ({e.object[:40]!r})") from e
    if any(not n.strip() or not n.isprintable() for n in names):
        bad = next(n for n in names if not n.strip() or not n.isprintable())
        raise DataError(f"{path}: '{key}' holds an empty or unprintable name {bad!r}")
    seen = set()
    for n in names:
        if n in seen:
            raise DataError(f"{path}: '{key}' lists {n!r} twice (class names must be unique)")
        seen.add(n)
    return names


def _labels(d: dict, key: str, n: int, path: Path, num: int | None) -> np.ndarray | None:
    if key not in d:
        return None
    labels = np.asarray(d[key])
    if labels.ndim != 1 or labels.shape[0] != n or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: '{key}' must be {n} integers, found shape {labels.shape} {labels.dtype}")
    labels = labels.astype(np.int64)
    if num is not None and n and (labels.min() < 0 or labels.max() >= num):
        raise DataError(
            f"{path}: '{key}' out of range: values {labels.min()}..{labels.max()}, "
            f"but meta lists {num} classes"
        )
    return labels


def _split(path: Path, num_fine: int, num_coarse: int | None) -> Split:
    d = safe_load(path)
    if "data" not in d or "fine_labels" not in d:
        missing = [k for k in ("data", "fine_labels") if k not in d]
        raise DataError(f"{path}: missing key {missing[0]!r}")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        kind = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{path}: 'data' has shape {shape} {kind}, expected (N, 3072) uint8")
    n = data.shape[0]
    labels = _labels(d, "fine_labels", n, path, num_fine)
    coarse = _labels(d, "coarse_labels", n, path, num_coarse) if num_coarse else None
    if coarse is not None:
        _superclass_map(labels, coarse, num_fine, path)  # each fine class in exactly one superclass
    # Official rows are channel-major (R plane, G plane, B plane); we keep NHWC uint8.
    images = np.ascontiguousarray(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
    return Split(images, labels, coarse)


def check_complete(data_dir) -> Path:
    """The dataset folder, or a DataError naming the first missing file (nothing is ever deleted)."""
    root = dataset_dir(data_dir)
    if not root.exists():
        raise DataError(f"{root}: dataset folder not found (expected train, test and meta inside)")
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise DataError(f"{root / missing[0]}: missing from the dataset folder (it has "
                        f"{', '.join(f for f in FILES if f not in missing) or 'none of train, test, meta'}); "
                        "complete it or point data_dir elsewhere: nothing was changed")
    return root


def _open(data_dir):
    """The dataset folder and the class names its meta file lists."""
    root = dataset_dir(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected train, test and meta inside)")
    meta = safe_load(root / "meta")
    fine = _names(meta, "fine_label_names", root / "meta")
    if not fine:
        raise DataError(f"{root / 'meta'}: missing or empty 'fine_label_names'")
    return root, fine, _names(meta, "coarse_label_names", root / "meta")


def load(data_dir) -> Dataset:
    """Load ``{data_dir}/cifar-100-python``; raise DataError with one line on any problem."""
    root, fine, coarse = _open(data_dir)
    ncoarse = len(coarse) if coarse else None
    train = _split(root / "train", len(fine), ncoarse)
    test = _split(root / "test", len(fine), ncoarse)
    used = len(np.unique(train.labels))
    if used != len(fine):
        raise DataError(
            f"{root / 'meta'}: meta lists {len(fine)} fine classes but {root / 'train'} uses {used} distinct labels"
        )
    if train.coarse is None or test.coarse is None:
        coarse, train.coarse, test.coarse = None, None, None
    else:
        a, b = _fine_to_coarse(train, len(fine)), _fine_to_coarse(test, len(fine))
        differ = np.flatnonzero((a >= 0) & (b >= 0) & (a != b))
        if differ.size:
            c = differ[0]
            raise DataError(f"{root}: coarse labels disagree between train and test: fine class {fine[c]!r} is "
                            f"in superclass {coarse[a[c]]!r} in train and {coarse[b[c]]!r} in test")
    return Dataset(train, test, fine, coarse)


def load_test(data_dir) -> tuple[Split, list[str], list[str] | None, np.ndarray | None]:
    """Just what the analyses need, without reading the training split: the test split, fine and
    coarse names, and the fine->coarse map (from the test labels)."""
    root, fine, coarse = _open(data_dir)
    test = _split(root / "test", len(fine), len(coarse) if coarse else None)
    if test.coarse is None:
        coarse = None
    return test, fine, coarse, _fine_to_coarse(test, len(fine)) if coarse else None


def _dump(path: Path, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def write_split(path, images: np.ndarray, fine: np.ndarray, coarse: np.ndarray | None = None) -> None:
    """Write one split in the official layout (images uint8 NHWC)."""
    n = len(images)
    obj = {
        "filenames": [f"img_{i:06d}.png" for i in range(n)],
        "batch_label": Path(path).name,
        "fine_labels": [int(x) for x in fine],
        "data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(n, 3072)),
    }
    if coarse is not None:
        obj["coarse_labels"] = [int(x) for x in coarse]
    _dump(Path(path), obj)


def write_synthetic(
    data_dir, train_size=2000, test_size=500, num_classes=10, num_coarse=5, seed=0, noise=0.35
) -> Path:
    """Write a deterministic, learnable dataset in the official layout.

    Each superclass has a smooth colour pattern and each class adds its own; images are the class
    pattern, randomly shifted by up to 2 pixels, plus Gaussian noise. Classes of one superclass
    look alike, so errors concentrate inside superclasses as they do on CIFAR-100.
    """
    if num_classes < 2 or num_coarse < 1 or num_coarse > num_classes or train_size < num_classes:
        raise DataError("synthetic: need num_classes >= 2, 1 <= num_coarse <= num_classes and "
                        "train_size >= num_classes")
    rng = np.random.default_rng(seed)
    coarse_of = np.arange(num_classes) % num_coarse

    def smooth(k):  # random 4x4 colour field upsampled to 32x32
        return np.repeat(np.repeat(rng.uniform(-1, 1, (k, 4, 4, 3)), 8, axis=1), 8, axis=2)

    base, own = smooth(num_coarse), smooth(num_classes)
    protos = 0.5 * base[coarse_of] + 0.5 * own

    def make(n):
        labels = np.arange(n) % num_classes
        rng.shuffle(labels)
        shifts = rng.integers(-2, 3, size=(n, 2))
        out = np.empty((n, *IMAGE_SHAPE), dtype=np.uint8)
        # In chunks: float64 work arrays stay small whatever n is; the generator draws the same
        # numbers as one call for all images would.
        for start in range(0, n, SYNTHETIC_CHUNK):
            part = slice(start, min(n, start + SYNTHETIC_CHUNK))
            imgs = np.stack([np.roll(protos[c], tuple(s), axis=(0, 1)) for c, s in zip(labels[part], shifts[part])])
            imgs = 0.5 + 0.35 * imgs + noise * rng.standard_normal(imgs.shape)
            out[part] = (np.clip(imgs, 0, 1) * 255).round().astype(np.uint8)
        return out, labels

    root = dataset_dir(data_dir)
    for name, n in (("train", train_size), ("test", test_size)):
        imgs, labels = make(n)
        write_split(root / name, imgs, labels, coarse_of[labels])
    _dump(root / "meta", {
        "fine_label_names": [f"class{c:02d}" for c in range(num_classes)],
        "coarse_label_names": [f"group{g}" for g in range(num_coarse)],
    })
    return root


def download(data_dir) -> Path:
    """Fetch the official CIFAR-100 archive into ``data_dir`` (put_in_place's fresh folder) and
    unpack its three files, md5-checked as torchvision checks them. Standard library only: the
    dataset step runs on the login node in envs/data.yaml, without PyTorch."""
    import tarfile
    import urllib.request

    def failed(reason):
        return DataError(f"cannot download CIFAR-100 from {CIFAR100_URL} ({reason}); on a machine without "
                         "internet, put cifar-100-python/ (train, test, meta) into data_dir first")

    archive = Path(data_dir) / f"{FOLDER}.tar.gz"
    try:
        with urllib.request.urlopen(CIFAR100_URL, timeout=60) as response, open(archive, "wb") as f:
            shutil.copyfileobj(response, f)
    except OSError as e:  # no network (URLError is an OSError), a proxy refusing, a full disk
        raise failed(getattr(e, "reason", None) or e) from e
    if _md5(archive) != CIFAR100_ARCHIVE_MD5:
        raise failed("the archive's md5 is not the official one")
    root = dataset_dir(data_dir)
    root.mkdir()
    try:
        with tarfile.open(archive) as tar:
            for name in FILES:
                with tar.extractfile(f"{FOLDER}/{name}") as src, open(root / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (tarfile.TarError, KeyError, AttributeError) as e:  # AttributeError: a member that is no file
        raise failed(f"unreadable archive: {e}") from e
    archive.unlink()
    bad = [name for name in FILES if _md5(root / name) != OFFICIAL_MD5[name]]
    if bad:
        raise failed(f"{', '.join(bad)}: md5 is not the official one")
    return root


def synthetic_dir(data_dir, settings: dict) -> Path:
    """Where a synthetic set lives: its own folder, keyed by its settings, never the folder real
    CIFAR-100 uses (a "try it here" run can never be mistaken for, or replace, the real data)."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(data_dir) / f"synthetic-{key}"


def put_in_place(data_dir, write, log=print) -> Path:
    """Create ``{data_dir}/cifar-100-python`` with ``write(tmp_data_dir)``, all or nothing.

    The files are written into a private temporary folder beside the target and the finished
    folder is renamed into place: readers never see a half-written set, an existing folder is never
    overwritten, and of two writers racing for one data_dir the second finds the first one's folder
    there, drops its own copy and uses that one.
    """
    data_dir = Path(data_dir)
    target = dataset_dir(data_dir)
    tmp = data_dir / f".incoming-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:
        raise DataError(f"cannot write a dataset into {data_dir}: {e.strerror or e}; make it writable, or "
                        "set data_dir to a writable folder") from e
    try:
        write(tmp)
        check_complete(tmp)
        try:
            os.rename(dataset_dir(tmp), target)  # fails if another writer's folder is there now
            log(f"wrote the dataset to {target}")
        except OSError:
            if not target.exists():
                raise
            log(f"{target} appeared while this copy was being written (another workflow?): using it, "
                "this copy is discarded")
    except OSError as e:  # a full disk or a folder made read-only meanwhile
        raise DataError(f"cannot write a dataset into {data_dir}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder only
    return target


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _is_md5(value) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def content_version(data_dir, cache=None) -> str | None:
    """A name for the dataset's content: OFFICIAL when the three files are the
    official ones (also before a download, which md5-checks them), else an md5 of the files.

    None when the folder does not exist yet. Hashing 180 MB takes a second, so sums are kept in
    ``cache`` (a JSON file) under each file's path, size and mtime.
    """
    if not dataset_dir(data_dir).exists():
        return None
    root = check_complete(data_dir)
    try:
        known = json.loads(Path(cache).read_text()) if cache and Path(cache).is_file() else {}
    except (OSError, ValueError, RecursionError):
        known = {}
    known = known if isinstance(known, dict) else {}
    sums, changed = {}, False
    for name in FILES:
        path = (root / name).resolve()
        st = path.stat()
        key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        if not _is_md5(known.get(key)):  # absent, or a damaged cache entry: never trusted
            known[key], changed = _md5(path), True
        sums[name] = known[key]
    if cache and changed:
        try:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                Path(tmp).write_text(json.dumps(known, indent=1))
        except Exception:  # a cache that cannot be written costs time, not correctness
            pass
    if sums == OFFICIAL_MD5:
        return OFFICIAL
    return "md5-" + hashlib.md5("".join(sums[n] for n in FILES).encode()).hexdigest()[:16]
