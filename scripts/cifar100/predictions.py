"""predictions.npz, the hinge of the DAG: evaluate.py writes the test set's logits once (on a GPU
node), every analysis and the Grad-CAM rule read them back through ``load_predictions``."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data
from .exceptions import DataError


def load_predictions(path, labels: np.ndarray | None = None, num_classes: int | None = None):
    """Read ``predictions.npz`` -> (logits float32 [N, C], labels int64 [N]).

    With ``labels`` (the dataset's test labels) and ``num_classes`` the file is checked against
    the dataset, so predictions from another dataset or class count fail here with one line
    instead of producing silently wrong tables. Raises DataError.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("logits", "labels") if k not in npz.files]
            if missing:
                raise DataError(f"{path}: missing key {missing[0]!r} (found {sorted(npz.files)})")
            logits, file_labels = npz["logits"], npz["labels"]
    except DataError:
        raise
    except Exception as e:  # not a zip, truncated, pickled object arrays, ...
        raise DataError(f"{path}: unreadable predictions, not a readable .npz file ({type(e).__name__}: {e})") from e
    if logits.ndim != 2 or not np.issubdtype(logits.dtype, np.floating):
        raise DataError(f"{path}: 'logits' must be a float [N, C] array, found shape {logits.shape} {logits.dtype}")
    if file_labels.ndim != 1 or not np.issubdtype(file_labels.dtype, np.integer):
        raise DataError(f"{path}: 'labels' must be an integer [N] array, found shape {file_labels.shape} "
                        f"{file_labels.dtype}")
    if len(file_labels) != len(logits):
        raise DataError(f"{path}: {len(logits)} rows of logits but {len(file_labels)} labels")
    if len(logits) == 0:
        raise DataError(f"{path}: no predictions (0 rows)")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise DataError(f"{path}: logits have {logits.shape[1]} classes but the dataset has {num_classes}")
    if labels is not None:
        if len(labels) != len(file_labels):
            raise DataError(f"{path}: {len(file_labels)} predictions but the test set has {len(labels)} images")
        if not np.array_equal(labels, file_labels):
            # Row i must be test image i; otherwise every image-based figure would be mislabelled.
            raise DataError(f"{path}: labels differ from the dataset's test labels: its labels do not match "
                            "row by row (another dataset or another order?)")
    if file_labels.min() < 0 or file_labels.max() >= logits.shape[1]:
        raise DataError(f"{path}: labels out of range 0..{logits.shape[1] - 1}")
    if not np.isfinite(logits).all():
        raise DataError(f"{path}: logits contain NaN or infinity")
    return logits.astype(np.float32, copy=False), file_labels.astype(np.int64, copy=False)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax; the row maximum is subtracted first so large logits cannot overflow."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def load_tta_logits(path, logits: np.ndarray) -> np.ndarray | None:
    """``logits_tta`` of predictions.npz (flip test-time augmentation: the mean of the logits of each
    test image and of its mirror image), checked against the file's plain ``logits``; None in a file
    written without them. Raises DataError."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "logits_tta" not in npz.files:
                return None
            tta = npz["logits_tta"]
    except Exception as e:
        raise DataError(f"{path}: unreadable predictions, not a readable .npz file ({type(e).__name__}: {e})") from e
    if tta.shape != logits.shape or not np.issubdtype(tta.dtype, np.floating) or not np.isfinite(tta).all():
        raise DataError(f"{path}: 'logits_tta' must be finite floats shaped like 'logits' {logits.shape}, "
                        f"found {tta.dtype} {tta.shape}")
    return tta.astype(np.float32, copy=False)


@dataclass
class TestPredictions:
    """The test set and a run's predictions on it, checked against each other: what every analysis
    of one run starts from."""

    test: data.Split
    fine_names: list
    coarse_names: list | None
    fine_to_coarse: np.ndarray | None
    logits: np.ndarray  # float32 [N, C]
    labels: np.ndarray  # int64 [N], row i is test image i
    probs: np.ndarray  # softmax of the logits
    preds: np.ndarray  # predicted classes [N]
    confidence: np.ndarray  # the predicted class's probability [N]

    @property
    def correct(self) -> np.ndarray:
        return self.preds == self.labels


def load_with_test_set(predictions, data_dir) -> TestPredictions:
    """data_dir's test set and ``predictions`` (predictions.npz) read and checked together."""
    test, fine_names, coarse_names, fine_to_coarse = data.load_test(data_dir)
    logits, labels = load_predictions(predictions, test.labels, len(fine_names))
    probs = softmax(logits)
    return TestPredictions(test, fine_names, coarse_names, fine_to_coarse, logits, labels, probs,
                           probs.argmax(axis=1), probs.max(axis=1))
