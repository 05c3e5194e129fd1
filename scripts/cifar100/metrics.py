"""Numbers from predictions: accuracy, confusion, calibration, per-class report. No plotting.

Every function takes plain numpy arrays (logits, probabilities, labels, a confusion matrix) and
returns arrays, floats or small dicts that ``plots`` draws and the scripts write to CSV/JSON.

Conventions: ``labels`` are int64 true classes [N], ``preds`` predicted classes [N], a confusion
matrix has true classes on rows and predictions on columns (as in scikit-learn), and a share or
mean over an empty set is ``nan`` (written to JSON as null by ``json_safe``).
"""

import math

import numpy as np
import scipy.stats


ECE_BINS = 15  # Guo et al. 2017 use 15 equal-width bins; reliability diagrams in the literature too


# ---------------------------------------------------------------------------------------------
# Input


def json_safe(obj):
    """Turn numpy scalars into Python ones and nan/inf into None, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---------------------------------------------------------------------------------------------
# Accuracy


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Share of rows whose true class is among the ``k`` largest logits.

    Counts a row as a hit when fewer than ``k`` classes score strictly higher than the true
    class, which is tie-safe and needs no sort (k is capped at the class count).
    """
    k = min(k, logits.shape[1])
    true_score = logits[np.arange(len(labels)), labels]
    higher = (logits > true_score[:, None]).sum(axis=1)
    return float((higher < k).mean())


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int,
                     normalize: bool = False) -> np.ndarray:
    """Counts [true, pred] (int64), or with ``normalize`` each row divided by its total.

    A row-normalised matrix has per-class recall on the diagonal; rows of classes absent from
    the test set stay all zero rather than becoming nan, so a heatmap still draws them.
    """
    cm = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    cm = cm.reshape(num_classes, num_classes).astype(np.int64)
    return normalize_rows(cm) if normalize else cm


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; all-zero rows stay zero."""
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=np.float64), where=totals > 0)


def per_class_accuracy(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, support) per true class from a count matrix; accuracy is nan without support."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    return accuracy, support


def _cut_tie(accuracy: np.ndarray, valid: np.ndarray, shown: np.ndarray) -> dict | None:
    """How many classes share the accuracy of the last one shown, when some of them are not shown."""
    if len(shown) == 0:
        return None
    value = accuracy[shown[-1]]
    tied = int((accuracy[valid] == value).sum())
    in_shown = int((accuracy[shown] == value).sum())
    return {"value": float(value), "tied": tied, "shown": in_shown} if tied > in_shown else None


def extreme_classes(accuracy: np.ndarray, n: int = 10) -> dict:
    """The ``n`` most and least accurate classes for a figure: no class in both, ties stated.

    The two lists never share a class: with fewer than 2n classes
    (nan skipped) each side gets half of them, the middle class left out when their number is
    odd. Ties are broken by class index, and ``best_tie``/``worst_tie`` say when that choice
    mattered: {"value", "tied": classes at the value of the last one shown, "shown": how many of
    them are shown}, or None when every class at that value is shown.
    Returns {"best", "worst", "best_tie", "worst_tie", "n_classes": classes with an accuracy}.
    """
    valid = np.flatnonzero(~np.isnan(accuracy))
    k = min(n, len(valid) // 2) if len(valid) > 1 else len(valid)
    best = valid[np.argsort(-accuracy[valid], kind="stable")][:k]
    rest = np.setdiff1d(valid, best)  # worst from the others: with ties a class could otherwise be both
    worst = rest[np.argsort(accuracy[rest], kind="stable")][:k]
    return {"best": best, "worst": worst, "best_tie": _cut_tie(accuracy, valid, best),
            "worst_tie": _cut_tie(accuracy, valid, worst), "n_classes": int(len(valid))}


def classes_at_extremes(accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every class at the highest and every class at the lowest accuracy (nan skipped), by index.

    The notebook reports one "best class" and one "worst class"; with ties (several classes at
    1.00 on an easy run) naming them all is the honest answer.
    """
    valid = np.flatnonzero(~np.isnan(accuracy))
    if len(valid) == 0:
        return valid, valid
    return (valid[accuracy[valid] == accuracy[valid].max()],
            valid[accuracy[valid] == accuracy[valid].min()])


# ---------------------------------------------------------------------------------------------
# Superclasses


def superclass_order(fine_to_coarse: np.ndarray | None, num_classes: int) -> np.ndarray:
    """Class indices grouped by superclass (class order kept inside a group), or identity."""
    if fine_to_coarse is None:
        return np.arange(num_classes)
    return np.argsort(fine_to_coarse, kind="stable")


def coarse_confusion(cm: np.ndarray, fine_to_coarse: np.ndarray, num_coarse: int) -> np.ndarray:
    """Superclass confusion counts [true coarse, predicted coarse] summed from a fine matrix."""
    onehot = np.zeros((len(fine_to_coarse), num_coarse), dtype=np.int64)
    onehot[np.arange(len(fine_to_coarse)), fine_to_coarse] = 1
    return onehot.T @ cm @ onehot


def semantic_share(labels: np.ndarray, preds: np.ndarray, fine_to_coarse: np.ndarray | None) -> float:
    """Share of errors whose predicted class lies in the true class's superclass.

    High values mean the model mostly confuses look-alikes (maple vs oak) rather than making
    arbitrary mistakes. nan when there are no superclasses or no errors.
    """
    if fine_to_coarse is None:
        return float("nan")
    wrong = preds != labels
    if not wrong.any():
        return float("nan")
    return float((fine_to_coarse[preds[wrong]] == fine_to_coarse[labels[wrong]]).mean())


def superclass_accuracy(labels: np.ndarray, preds: np.ndarray, fine_to_coarse: np.ndarray | None) -> float:
    """Share of predictions in the right superclass (right or wrong fine class); nan without map."""
    if fine_to_coarse is None:
        return float("nan")
    return float((fine_to_coarse[preds] == fine_to_coarse[labels]).mean())


# ---------------------------------------------------------------------------------------------
# Errors and confidence


def top_confusion_pairs(cm: np.ndarray, k: int) -> list[tuple[int, int, int]]:
    """The ``k`` most frequent (true, pred, count) errors, count descending, ties by (true, pred).

    Only pairs that occur are returned, so the list can be shorter than ``k``.
    """
    off = cm.copy()
    np.fill_diagonal(off, 0)
    true, pred = np.nonzero(off)
    counts = off[true, pred]
    # lexsort: last key is primary -> count descending, then true, then pred ascending.
    order = np.lexsort((pred, true, -counts))[:k]
    return [(int(true[i]), int(pred[i]), int(counts[i])) for i in order]


def confidence_split(confidence: np.ndarray, correct: np.ndarray) -> dict:
    """Mean top-1 confidence of correct and of wrong predictions, and how far they differ.

    ``overconfidence_gap`` is mean confidence minus accuracy: positive when the model claims more
    than it achieves (the usual case for a network trained with plain cross-entropy).
    """
    def mean(x):
        return float(x.mean()) if len(x) else float("nan")

    return {
        "n": int(len(correct)),
        "n_correct": int(correct.sum()),
        "n_wrong": int((~correct).sum()),
        "accuracy": mean(correct.astype(np.float64)),
        "mean_confidence": mean(confidence),
        "mean_confidence_correct": mean(confidence[correct]),
        "mean_confidence_wrong": mean(confidence[~correct]),
        "confidence_gap_correct_minus_wrong": mean(confidence[correct]) - mean(confidence[~correct]),
        "overconfidence_gap": mean(confidence) - mean(correct.astype(np.float64)),
    }


def map_rank_correlations(a, b) -> np.ndarray:
    """Spearman correlation of each pair of maps a[i], b[i] (any shape per map), by
    scipy.stats.spearmanr (ties get their average rank); NaN where either map is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a.reshape(len(a), -1), b.reshape(len(b), -1))):
        if np.ptp(x) > 0 and np.ptp(y) > 0:  # a constant map has no ranks to correlate
            out[i] = scipy.stats.spearmanr(x, y).statistic
    return out


def correlation_summary(rho) -> dict:
    """Summary of per-image correlations (the Grad-CAM randomisation check), NaN entries dropped.

    A map that is blank (constant) in either model has no rank correlation: ``n_dropped`` counts
    those. ``mean`` lets a +0.6 and a -0.6 cancel to 0, which would read as "the maps changed";
    ``mean_abs`` and ``median`` cannot be fooled that way, so they are reported beside it.
    """
    rho = np.asarray(rho, dtype=np.float64)
    used = rho[np.isfinite(rho)]
    out = {"n_images": int(len(rho)), "n_used": int(len(used)), "n_dropped": int(len(rho) - len(used))}
    if len(used) == 0:
        return {**out, **dict.fromkeys(("mean", "mean_abs", "median", "min", "max"), float("nan"))}
    return {**out, "mean": float(used.mean()), "mean_abs": float(np.abs(used).mean()),
            "median": float(np.median(used)), "min": float(used.min()), "max": float(used.max())}


def most_confident_errors(confidence: np.ndarray, correct: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` wrong predictions with the highest confidence, most confident first."""
    wrong = np.flatnonzero(~correct)
    return wrong[np.argsort(-confidence[wrong], kind="stable")][:n]


def calibration(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """Expected calibration error and the per-bin numbers of a reliability diagram.

    Bins are equal-width on [0, 1], bin b holding confidences in (edges[b], edges[b+1]] (the
    first bin also takes 0). ECE = sum_b (count_b / N) * |accuracy_b - confidence_b|. Empty bins
    have nan accuracy and confidence and contribute nothing.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted on the inner edges, side="left", puts a value equal to an edge in the lower bin.
    bins = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(bins, minlength=n_bins)
    hits = np.bincount(bins, weights=correct.astype(np.float64), minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
    gaps = np.abs(accuracy - mean_conf)
    n = max(len(confidence), 1)
    ece = float(np.nansum(count / n * gaps))
    return {"ece": ece, "n_bins": n_bins, "edges": edges, "accuracy": accuracy,
            "confidence": mean_conf, "count": count}


# ---------------------------------------------------------------------------------------------
# Per-class report


def classification_report(labels: np.ndarray, preds: np.ndarray, class_names: list[str]) -> dict:
    """Per-class precision, recall, F1 and support, with macro and weighted averages (sklearn).

    Every class is listed even when absent from labels and predictions; undefined ratios
    (no predictions or no support) count as 0, as scikit-learn's ``zero_division=0`` does.
    Returns {"classes": [row, ...], "accuracy": float, "macro avg": {...}, "weighted avg": {...},
    "text": sklearn's printed report}.
    """
    from sklearn import metrics as skm  # imported here: only report.py needs scikit-learn

    every = np.arange(len(class_names))
    p, r, f, s = skm.precision_recall_fscore_support(labels, preds, labels=every, zero_division=0)
    rows = [{"class_index": int(i), "class_name": class_names[i], "precision": float(p[i]),
             "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])} for i in every]
    out = {"classes": rows, "accuracy": float((labels == preds).mean())}
    for average in ("macro", "weighted"):
        ap, ar, af, _ = skm.precision_recall_fscore_support(labels, preds, labels=every, average=average,
                                                            zero_division=0)
        out[f"{average} avg"] = {"precision": float(ap), "recall": float(ar), "f1": float(af),
                                 "support": int(s.sum())}
    out["text"] = skm.classification_report(labels, preds, labels=every, target_names=class_names,
                                            digits=4, zero_division=0)
    return out
