"""predictions.npz, the hinge of the DAG: evaluate.py writes the test set's logits once (on a GPU
node), every analysis and the Grad-CAM rule read them back through ``load_predictions``."""

from pathlib import Path

import numpy as np

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
