"""Checked readers of the files the workflow writes and later reads back: metrics.json,
summary.json and history.csv.

A file on disk may have been cut short, edited by hand or left by another version: each reader
checks the whole file against what its writer puts there (keys, types, finite numbers in their
range, complete CSV rows) and raises DataError naming the file and the first problem, so that a
table or figure is never made from half a file. Plain numpy and csv: no torch, no plotting.
"""

import csv
import io
import math
from pathlib import Path

import numpy as np

from .cli import SEED_MAX
from .config import choices
from .exceptions import DataError, UserError
from .files import read_json

SELECTIONS = choices("selection")


# --- checks of one value ------------------------------------------------------------------------

def _int(obj: dict, key: str, path, low=None, high=None) -> int:
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise DataError(f"{path}: {key} must be an integer, found {v!r}")
    if (low is not None and v < low) or (high is not None and v > high):
        raise DataError(f"{path}: {key} {v} is outside {low}..{high if high is not None else ''}")
    return v


def _number(v, key: str, path, low=-math.inf, high=math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataError(f"{path}: {key} must be a number, found {v!r}")
    if not math.isfinite(v) or not low <= v <= high:
        raise DataError(f"{path}: {key} {v!r} is not a finite number in [{low:g}, {high:g}]")
    return float(v)


def _text(obj: dict, key: str, path) -> str:
    if not isinstance(obj[key], str):
        raise DataError(f"{path}: {key} must be a string, found {obj[key]!r}")
    return obj[key]


def read_object(path) -> dict:
    """A JSON file holding an object; DataError naming the file otherwise (a folder, random
    bytes, nesting too deep for the parser, a list)."""
    try:
        obj = read_json(path)
    except UserError as e:
        raise DataError(str(e)) from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


# --- metrics.json (evaluate.py) and summary.json (report.py) ------------------------------------

METRICS_KEYS = ("n", "num_classes", "selection", "selected_epoch", "recipe", "seed")
# Accuracies and shares, where present (older metrics.json, every summary.json): in [0, 1].
FRACTIONS = ("top1", "top5", "macro_precision", "macro_recall", "macro_f1", "weighted_precision",
             "weighted_recall", "weighted_f1", "ece", "mean_confidence")


def check_metrics(obj: dict, path, required=METRICS_KEYS) -> dict:
    """What evaluate.py writes into metrics.json, checked: which model (recipe, seed, selection,
    selected epoch) on how many test images of how many classes (``required``: the keys that
    must be there; the others are checked where present)."""
    missing = [k for k in required if k not in obj]
    if missing:
        raise DataError(f"{path}: missing key {missing[0]!r} (not a metrics.json written by evaluate.py)")
    for key, low in (("n", 1), ("num_classes", 2)):
        if key in obj:
            _int(obj, key, path, low)
    _int(obj, "selected_epoch", path, 1)
    _int(obj, "seed", path, 0, SEED_MAX)
    if not _text(obj, "recipe", path):
        raise DataError(f"{path}: recipe is empty")
    if obj["selection"] not in SELECTIONS:
        raise DataError(f"{path}: selection {obj['selection']!r} is not one of {', '.join(SELECTIONS)}")
    for key in ("run_spec", "training_provenance", "evaluation_provenance"):
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            raise DataError(f"{path}: {key} must be an object, found {type(obj[key]).__name__}")
    check_fractions(obj, path)
    if obj.get("loss") is not None:
        _number(obj["loss"], "loss", path, 0.0)
    return obj


def check_fractions(obj: dict, path) -> None:
    """Every accuracy and share in ``obj`` (FRACTIONS, where present) a finite number in [0, 1]."""
    for key in FRACTIONS:
        if obj.get(key) is not None:
            _number(obj[key], key, path, 0.0, 1.0)


def read_metrics(path) -> dict:
    """metrics.json as written by evaluate.py; DataError on a file that does not hold it whole."""
    return check_metrics(read_object(path), path)


def read_run_summary(path) -> dict:
    """summary.json as written by report.py: metrics.json's keys plus top1, top5, macro_f1 and ece
    in [0, 1] and the notebook block (best and worst class with their accuracies)."""
    obj = check_metrics(read_object(path), path, required=("selection", "selected_epoch", "recipe", "seed"))
    missing = [k for k in ("top1", "top5", "macro_f1", "ece", "notebook") if obj.get(k) is None]
    if missing:
        raise DataError(f"{path}: missing key {missing[0]!r} (not a summary.json written by report.py)")
    nb = obj["notebook"]
    if not isinstance(nb, dict):
        raise DataError(f"{path}: notebook must be an object")
    for key in ("overall_accuracy", "macro_f1", "weighted_f1", "best_class_accuracy", "worst_class_accuracy"):
        if key not in nb:
            raise DataError(f"{path}: notebook lacks {key!r}")
        _number(nb[key], f"notebook/{key}", path, 0.0, 1.0)
    for key in ("best", "worst"):
        if not isinstance(nb.get(f"{key}_class"), str):
            raise DataError(f"{path}: notebook/{key}_class must be a class name")
        tied = nb.get(f"{key}_classes_tied", [])
        if not isinstance(tied, list) or not all(isinstance(t, str) for t in tied):
            raise DataError(f"{path}: notebook/{key}_classes_tied must be a list of class names")
    return obj


# --- history.csv (train.py) ----------------------------------------------------------------------

HISTORY_REQUIRED = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")


def _history_range(column: str) -> tuple[float, float]:
    """Accuracies lie in [0, 1]; losses, rates, times and throughputs are >= 0."""
    return (0.0, 1.0) if column.endswith("_acc") else (0.0, math.inf)


def _may_be_empty(column: str) -> bool:
    """Columns of what a run may not have: a validation split (val_*), an EMA model (ema_*)."""
    return column not in HISTORY_REQUIRED and column != "epoch"


def read_csv(path, required, allow_empty: bool = False) -> tuple[list[str], list[dict]]:
    """(header, rows) of a CSV file this project wrote, whole: a regular UTF-8 file that ends
    with a line break (csv writes one after every row, so a file cut short does not), every row
    with exactly the header's fields, the ``required`` columns present, at least one row unless
    ``allow_empty``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not a CSV file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a CSV file (byte {e.start} is not UTF-8 text)") from None
    if not text.endswith("\n"):
        raise DataError(f"{path}: truncated (the last row does not end with a line break)")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, [])
        rows = [(line, r) for line, r in enumerate(reader, start=2)]
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (columns: {', '.join(header) or 'none'})")
    for line, r in rows:
        if len(r) != len(header):
            raise DataError(f"{path}:{line}: {len(r)} fields where the header has {len(header)} (a damaged row)")
    if not rows and not allow_empty:
        raise DataError(f"{path}: no rows")
    return header, [dict(zip(header, r)) for _, r in rows]


def read_history(path) -> dict[str, np.ndarray]:
    """history.csv as float columns (an empty val_* cell is nan), checked whole: complete rows,
    epochs 1, 2, ..., n, every value a finite number in its range."""
    header, rows = read_csv(path, HISTORY_REQUIRED)
    columns = {}
    for name in header:
        values = []
        for line, row in enumerate(rows, start=2):
            cell = row[name].strip()
            if not cell and _may_be_empty(name):
                values.append(math.nan)
                continue
            try:
                x = float(cell)
            except ValueError:
                raise DataError(f"{path}:{line}: column {name!r} is not a number: {cell!r}") from None
            low, high = (1.0, math.inf) if name == "epoch" else _history_range(name)
            if not (math.isfinite(x) and low <= x <= high):
                raise DataError(f"{path}:{line}: column {name!r} holds {cell}, outside [{low:g}, {high:g}]")
            values.append(x)
        columns[name] = np.array(values)
    if not np.array_equal(columns["epoch"], np.arange(1, len(rows) + 1)):
        raise DataError(f"{path}: epochs are {columns['epoch'][:5].tolist()}..., not 1, 2, ..., {len(rows)} "
                        "(rows missing or out of order)")
    return columns
