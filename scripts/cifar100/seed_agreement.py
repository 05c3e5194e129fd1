"""How far one recipe's seeds agree (numpy/scipy, no plotting, no PyTorch), from every seed's
``predictions.npz`` and ``history.csv``. Nothing here retrains. Intervals follow ``intervals``.

  churn            per pair of seeds, the share of test images whose top-1 predictions differ
                   (Summers & Dinneen, ICML 2021), overall and per true class; the mean over pairs
                   with a jackknife-over-seeds interval
  ensemble         the mean softmax of all seeds scored as one model beside the seeds' own scores;
                   the top-1/top-5 gain with a paired t interval over test images
  test-set noise   the seed-to-seed variance of top-1 predicted from per-image correctness rates
                   as if images were independent coins, beside the observed variance (Jordan,
                   ICLR 2024): what is left over is variance shared across images
  selection        per seed, best-epoch minus last-epoch test accuracy from history.csv: how much
                   ``best_test`` selection flatters a run (computed here only)
"""

import itertools
import math

import numpy as np

from . import intervals, metrics, predictions, replicates
from .exceptions import DataError

LEVEL = intervals.LEVEL
CHURN_FIELDS = ["row", "recipe", "seed_a", "seed_b", "churn", "churn_ci95_low", "churn_ci95_high", "both_correct",
                "only_a_correct", "only_b_correct", "both_wrong", "n_seeds", "n_pairs", "note"]
OPTIMISM_FIELDS = ["row", "seed", "best_epoch", "best_test_acc", "last_epoch", "last_test_acc", "optimism", "note"]


def stack_predictions(paths, labels: np.ndarray | None = None):
    """(logits [S, N, C] float32, labels [N]) from every seed's predictions.npz.

    Every file must hold the same test images in the same order (same labels row by row);
    with ``labels`` (the dataset's test labels) they are checked against the dataset too."""
    if not paths:
        raise DataError("no predictions given")
    first_logits, first_labels = predictions.load_predictions(paths[0], labels)
    logits = [first_logits]
    for p in paths[1:]:
        logits.append(predictions.load_predictions(p, first_labels, first_logits.shape[1])[0])
    return np.stack(logits), first_labels


# --- churn ---------------------------------------------------------------------------------------


def seed_pairs(n: int) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, of n seeds."""
    return list(itertools.combinations(range(n), 2))


def churn_matrix(preds: np.ndarray) -> np.ndarray:
    """[S, S] share of images on which seed i and seed j predict different classes (0 on the diagonal)."""
    preds = np.asarray(preds)
    return (preds[:, None, :] != preds[None, :, :]).mean(axis=2)


def mean_churn(matrix: np.ndarray, level: float = LEVEL) -> dict:
    """Mean churn over the n(n-1)/2 seed pairs with a jackknife-over-seeds t interval in [0, 1].

    Leaving seed k out leaves the pairs without k; the jackknife (intervals.jackknife_interval)
    counts each seed once, which a t interval over the pairs would not (they share seeds)."""
    m = np.asarray(matrix, dtype=float)
    n = len(m)
    pairs = seed_pairs(n)
    est = float(np.mean([m[i, j] for i, j in pairs])) if pairs else math.nan
    loo = [np.mean([m[i, j] for i, j in pairs if k not in (i, j)]) for k in range(n)] if n >= 3 else []
    ji = intervals.jackknife_interval(est, loo, level, intervals.UNIT)
    return {"n_seeds": n, "n_pairs": len(pairs), "churn": est, "low": ji["low"], "high": ji["high"]}


def churn_rows(preds: np.ndarray, labels: np.ndarray, seeds, level: float = LEVEL) -> list[dict]:
    """Rows of churn.csv: one per pair of seeds (row "pair": churn and how the pair splits on
    correctness), then row "mean": the mean of every column over pairs, churn with its interval.

    churn >= only_a_correct + only_b_correct: the rest of the churn is images both get wrong,
    each with a different wrong class."""
    correct = preds == labels
    rows = []
    for i, j in seed_pairs(len(seeds)):
        rows.append({"row": "pair", "seed_a": seeds[i], "seed_b": seeds[j],
                     "churn": float((preds[i] != preds[j]).mean()),
                     "churn_ci95_low": math.nan, "churn_ci95_high": math.nan,
                     "both_correct": float((correct[i] & correct[j]).mean()),
                     "only_a_correct": float((correct[i] & ~correct[j]).mean()),
                     "only_b_correct": float((~correct[i] & correct[j]).mean()),
                     "both_wrong": float((~correct[i] & ~correct[j]).mean()), "n_seeds": "", "n_pairs": "",
                     "note": ""})
    if not rows:
        return rows
    mc = mean_churn(churn_matrix(preds), level)
    note = (f"mean over {mc['n_pairs']} pairs of {mc['n_seeds']} seeds; churn: {round(100 * level)}% jackknife "
            "interval over seeds, in [0, 1]" if mc["n_seeds"] >= 3 else "two seeds: one pair, no interval")
    cols = ["both_correct", "only_a_correct", "only_b_correct", "both_wrong"]
    rows.append({"row": "mean", "seed_a": "", "seed_b": "", "churn": mc["churn"], "churn_ci95_low": mc["low"],
                 "churn_ci95_high": mc["high"], **{c: float(np.mean([r[c] for r in rows])) for c in cols},
                 "n_seeds": mc["n_seeds"], "n_pairs": mc["n_pairs"], "note": note})
    return rows


def churn_per_class(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> list[dict]:
    """Per true class: its test images, mean accuracy over seeds and churn over seed pairs (mean,
    min, max). Classes without test images have n_images 0 and NaN elsewhere."""
    pairs = seed_pairs(len(preds))
    rows = []
    for c in range(num_classes):
        mask = labels == c
        row = {"class_index": c, "n_images": int(mask.sum()), "accuracy_mean": math.nan,
               "churn_mean": math.nan, "churn_min": math.nan, "churn_max": math.nan}
        if mask.any():
            row["accuracy_mean"] = float((preds[:, mask] == c).mean())
            if pairs:
                ch = np.array([(preds[i, mask] != preds[j, mask]).mean() for i, j in pairs])
                row.update(churn_mean=float(ch.mean()), churn_min=float(ch.min()), churn_max=float(ch.max()))
        rows.append(row)
    return rows


# --- ensemble ------------------------------------------------------------------------------------


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    # The clip keeps one confidently wrong image from making the mean infinite.
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def _topk_hits(p: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per image, whether it counts as a hit in metrics.topk_accuracy (same tie rule): its mean is that."""
    higher = (p > p[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    return higher < min(k, p.shape[1])


def ensemble(logits: np.ndarray, labels: np.ndarray, n_bins: int = metrics.ECE_BINS, level: float = LEVEL) -> dict:
    """Mean softmax of all seeds scored like one model, beside the seeds' mean scores.

    top1/top5 accuracy, ECE (``n_bins`` equal-width bins, as report.py) and negative
    log-likelihood; ``*_gain`` is ensemble minus the seeds' mean (for ECE and NLL a negative gain
    is an improvement). The top-1 and top-5 gains are means over test images of (ensemble right)
    minus (share of seeds right), so they get a paired t interval over the n_images images, cut
    to [-1, 1]: the test set's noise, with these seeds held fixed."""
    probs = np.stack([predictions.softmax(lg.astype(np.float64)) for lg in logits])
    mean_probs = probs.mean(axis=0)

    def scores(p):
        conf, pred = p.max(axis=1), p.argmax(axis=1)
        return {"top1": metrics.topk_accuracy(p, labels, 1), "top5": metrics.topk_accuracy(p, labels, 5),
                "ece": metrics.calibration(conf, pred == labels, n_bins)["ece"], "nll": _nll(p, labels)}

    ens = scores(mean_probs)
    seeds = [scores(p) for p in probs]
    row = {"n_seeds": len(probs), "n_images": len(labels), "ece_bins": n_bins}
    for k in ("top1", "top5", "ece", "nll"):
        seeds_mean = float(np.mean([s[k] for s in seeds]))
        row.update({f"ensemble_{k}": ens[k], f"seeds_mean_{k}": seeds_mean, f"{k}_gain": ens[k] - seeds_mean})
    for name, k in (("top1", 1), ("top5", 5)):
        per_image = _topk_hits(mean_probs, labels, k).astype(float) - np.mean(
            [_topk_hits(p, labels, k) for p in probs], axis=0)
        ti = intervals.t_interval(per_image, level, intervals.DIFFERENCE)
        row.update({f"{name}_gain_ci95_low": ti["low"], f"{name}_gain_ci95_high": ti["high"]})
    row["note"] = (f"gain intervals: {round(100 * level)}% paired t over the {len(labels)} test images "
                   f"(seeds fixed), in [-1, 1]")
    return row


# --- test-set noise (Jordan 2024) ----------------------------------------------------------------


def test_set_noise(correct: np.ndarray, level: float = LEVEL) -> dict:
    """Observed seed-to-seed variance of top-1 beside the variance predicted from per-image rates.

    ``correct`` is [S seeds, N images] of 0/1. With p_i the share of seeds that get image i right,
    predicted_var = sum_i p_i (1 - p_i) * S/(S-1) / N^2: the variance top-1 would have if every
    image were an independent coin with its own p_i. The unbiasing factor S/(S-1) (ddof=1, as for
    the observed variance) is in the table. excess_var = observed_var - predicted_var is exactly the
    sum, over pairs of different images, of their covariance across seeds, divided by N^2: the part
    of the spread that images share, which Jordan (ICLR 2024) finds small. predicted_share =
    predicted / observed variance, with the interval of the observed variance's chi-square interval
    (the predicted variance, an average over N images, taken as known). Near 1: the spread between
    seeds is mostly the noise of a finite test set, not models better or worse on the distribution."""
    c = np.asarray(correct, dtype=float)
    s, n = c.shape
    rate = c.mean(axis=0)
    obs = intervals.variance_interval(c.mean(axis=1), level)
    row = {"n_seeds": s, "n_images": n, "top1_mean": obs["mean"],
           "always_correct": int((rate == 1).sum()), "never_correct": int((rate == 0).sum()),
           "sometimes_correct": int(((rate > 0) & (rate < 1)).sum()),
           "observed_var": obs["var"], "observed_var_ci_low": obs["var_low"], "observed_var_ci_high": obs["var_high"],
           "unbiasing_factor": s / (s - 1) if s > 1 else math.nan, "predicted_var": math.nan,
           "excess_var": math.nan, "predicted_share": math.nan, "predicted_share_ci_low": math.nan,
           "predicted_share_ci_high": math.nan, "observed_sd": obs["sd"], "predicted_sd": math.nan, "note": ""}
    if s < 2:
        row["note"] = "one seed: no variance"
        return row
    pred = float((rate * (1 - rate)).sum() * s / (s - 1) / n**2)
    row.update(predicted_var=pred, predicted_sd=math.sqrt(pred), excess_var=obs["var"] - pred)
    if obs["var"] > 0:
        row.update(predicted_share=pred / obs["var"], predicted_share_ci_low=pred / obs["var_high"],
                   predicted_share_ci_high=pred / obs["var_low"],
                   note=f"predicted_var includes the unbiasing factor S/(S-1) = {s}/{s - 1}; share interval "
                        f"from the observed variance's {round(100 * level)}% chi-square interval")
    else:
        row["note"] = "every seed has the same top-1: no share"
    return row


def correctness_rates(correct: np.ndarray) -> np.ndarray:
    """Per image, the share of seeds that get it right."""
    return np.asarray(correct, dtype=float).mean(axis=0)


# --- selection optimism --------------------------------------------------------------------------


def selection_optimism(histories, seeds, level: float = LEVEL) -> list[dict]:
    """Per seed, best-epoch minus last-epoch test accuracy (history.csv), then mean, std and the t
    interval of each column over seeds, cut to [0, 1] as every accuracy (empty with one seed).

    ``histories`` holds (epochs, test_acc) per seed. The best epoch is the first with the highest
    test accuracy, as ``best_test`` selection picks it."""
    rows = []
    for seed, (epochs, acc) in zip(seeds, histories):
        b = int(np.argmax(acc))
        rows.append({"row": "seed", "seed": seed, "best_epoch": int(epochs[b]), "best_test_acc": float(acc[b]),
                     "last_epoch": int(epochs[-1]), "last_test_acc": float(acc[-1]),
                     "optimism": replicates.selection_optimism(acc), "note": ""})
    cols = ["best_test_acc", "last_test_acc", "optimism"]
    n = len(rows)
    ti = {c: intervals.t_interval([r[c] for r in rows], level, intervals.UNIT) for c in cols}
    note = f"{intervals.method(level)}, over {n} seeds" if n > 1 else "one seed: no spread or interval"
    for name, key in (("mean", "mean"), ("std", "std"), ("ci95_low", "low"), ("ci95_high", "high")):
        rows.append({"row": name, "seed": "", "best_epoch": "", "last_epoch": "",
                     **{c: ti[c][key] for c in cols}, "note": note})
    return rows
