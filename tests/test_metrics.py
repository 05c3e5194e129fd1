"""cifar100.metrics against independent computations (scikit-learn, scipy, plain loops)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax as scipy_softmax
from sklearn import metrics as skm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from cifar100 import metrics, predictions  # noqa: E402
from cifar100.exceptions import DataError  # noqa: E402
from cifar100.files import write_npz  # noqa: E402


def generated(n=600, c=12, signal=2.0, seed=0, balanced=True):
    """Logits with some signal on the true class, and labels (balanced: n/c of each class)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c if balanced else rng.integers(0, c, n)
    rng.shuffle(labels)
    logits = rng.standard_normal((n, c)).astype(np.float32)
    logits[np.arange(n), labels] += signal
    return logits, labels.astype(np.int64)


# --- accuracy --------------------------------------------------------------------------------


def test_softmax_matches_scipy_and_survives_large_logits():
    logits, _ = generated()
    np.testing.assert_allclose(predictions.softmax(logits.copy()), scipy_softmax(logits, axis=1), rtol=1e-5)
    big = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    p = predictions.softmax(big)
    assert np.isfinite(p).all() and p[0, 0] == pytest.approx(1.0)


def test_softmax_does_not_modify_its_input():
    logits, _ = generated()
    before = logits.copy()
    predictions.softmax(logits)
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_topk_accuracy_matches_sklearn(k):
    logits, labels = generated(signal=0.5)
    expected = skm.top_k_accuracy_score(labels, logits, k=k, labels=np.arange(logits.shape[1]))
    assert metrics.topk_accuracy(logits, labels, k) == pytest.approx(expected)


def test_topk_accuracy_caps_k_at_class_count():
    logits, labels = generated(c=4)
    assert metrics.topk_accuracy(logits, labels, 10) == 1.0


def test_confusion_matrix_matches_sklearn_counts_and_normalised():
    logits, labels = generated(signal=0.8)
    preds = logits.argmax(1)
    c = logits.shape[1]
    np.testing.assert_array_equal(metrics.confusion_matrix(labels, preds, c),
                                  skm.confusion_matrix(labels, preds, labels=np.arange(c)))
    np.testing.assert_allclose(metrics.confusion_matrix(labels, preds, c, normalize=True),
                               skm.confusion_matrix(labels, preds, labels=np.arange(c), normalize="true"))


def test_normalised_rows_of_absent_classes_stay_zero():
    labels, preds = np.array([0, 0, 1]), np.array([0, 1, 1])
    m = metrics.confusion_matrix(labels, preds, 3, normalize=True)
    np.testing.assert_allclose(m, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 0]])


def test_per_class_accuracy_is_recall_and_nan_without_support():
    logits, labels = generated(signal=0.8, balanced=False)
    preds = logits.argmax(1)
    c = logits.shape[1]
    acc, support = metrics.per_class_accuracy(metrics.confusion_matrix(labels, preds, c))
    np.testing.assert_allclose(acc, skm.recall_score(labels, preds, labels=np.arange(c), average=None,
                                                     zero_division=0))
    np.testing.assert_array_equal(support, np.bincount(labels, minlength=c))
    acc, support = metrics.per_class_accuracy(metrics.confusion_matrix(np.array([0, 0]), np.array([0, 1]), 3))
    assert acc[0] == 0.5 and np.isnan(acc[2]) and support[2] == 0


def test_balanced_test_set_macro_recall_equals_top1():
    logits, labels = generated(n=1200, c=12, signal=1.0)
    report = metrics.classification_report(labels, logits.argmax(1), [f"c{i}" for i in range(12)])
    assert report["macro avg"]["recall"] == pytest.approx(metrics.topk_accuracy(logits, labels, 1))
    acc, _ = metrics.per_class_accuracy(metrics.confusion_matrix(labels, logits.argmax(1), 12))
    assert acc.mean() == pytest.approx(report["accuracy"])


# --- superclasses ----------------------------------------------------------------------------


def test_coarse_confusion_equals_confusion_of_mapped_labels():
    logits, labels = generated(signal=0.5)
    preds = logits.argmax(1)
    f2c = np.arange(12) % 4
    cm = metrics.confusion_matrix(labels, preds, 12)
    expected = skm.confusion_matrix(f2c[labels], f2c[preds], labels=np.arange(4))
    np.testing.assert_array_equal(metrics.coarse_confusion(cm, f2c, 4), expected)


def test_semantic_share_on_a_constructed_case():
    f2c = np.array([0, 0, 1, 1])  # superclasses {0, 1} and {2, 3}
    labels = np.array([0, 0, 1, 2, 3, 3])
    preds = np.array([0, 1, 0, 3, 0, 3])  # errors: 0->1 (same), 1->0 (same), 2->3 (same), 3->0 (other)
    assert metrics.semantic_share(labels, preds, f2c) == pytest.approx(3 / 4)
    assert metrics.superclass_accuracy(labels, preds, f2c) == pytest.approx(5 / 6)
    assert np.isnan(metrics.semantic_share(labels, labels, f2c))  # no errors
    assert np.isnan(metrics.semantic_share(labels, preds, None))
    assert np.isnan(metrics.superclass_accuracy(labels, preds, None))


def test_superclass_order_groups_classes_stably():
    f2c = np.array([1, 0, 1, 0, 2])
    assert metrics.superclass_order(f2c, 5).tolist() == [1, 3, 0, 2, 4]
    assert metrics.superclass_order(None, 3).tolist() == [0, 1, 2]


# --- errors and confidence -------------------------------------------------------------------


def test_top_confusion_pairs_order_ties_and_short_lists():
    cm = np.array([[9, 3, 1],
                   [3, 8, 0],
                   [5, 0, 7]])
    assert metrics.top_confusion_pairs(cm, 3) == [(2, 0, 5), (0, 1, 3), (1, 0, 3)]
    assert len(metrics.top_confusion_pairs(cm, 100)) == 4  # only pairs that occur
    assert metrics.top_confusion_pairs(np.diag([3, 4]), 5) == []


def test_top_confusion_pairs_agree_with_counting_pairs():
    logits, labels = generated(signal=0.3)
    preds = logits.argmax(1)
    wrong = preds != labels
    pairs, counts = np.unique(np.stack([labels[wrong], preds[wrong]], 1), axis=0, return_counts=True)
    top = metrics.top_confusion_pairs(metrics.confusion_matrix(labels, preds, 12), 5)
    assert [c for _, _, c in top] == sorted(counts, reverse=True)[:5]
    lookup = {tuple(p): c for p, c in zip(pairs.tolist(), counts)}
    assert all(lookup[(t, p)] == c for t, p, c in top)


def test_confidence_split_means_and_gap():
    conf = np.array([0.9, 0.8, 0.6, 0.5])
    correct = np.array([True, True, False, False])
    s = metrics.confidence_split(conf, correct)
    assert s["mean_confidence_correct"] == pytest.approx(0.85)
    assert s["mean_confidence_wrong"] == pytest.approx(0.55)
    assert s["confidence_gap_correct_minus_wrong"] == pytest.approx(0.30)
    assert s["overconfidence_gap"] == pytest.approx(0.7 - 0.5)
    assert s["n_wrong"] == 2 and s["accuracy"] == 0.5
    assert np.isnan(metrics.confidence_split(conf, np.ones(4, bool))["mean_confidence_wrong"])


def test_most_confident_errors():
    conf = np.array([0.9, 0.95, 0.6, 0.7, 0.99])
    correct = np.array([False, True, False, False, True])
    assert metrics.most_confident_errors(conf, correct, 2).tolist() == [0, 3]
    assert len(metrics.most_confident_errors(conf, np.ones(5, bool), 3)) == 0


def test_ece_against_a_hand_computation():
    # 3 bins: (0, 1/3], (1/3, 2/3], (2/3, 1]
    conf = np.array([0.2, 0.3, 0.5, 0.9, 0.8, 1.0])
    correct = np.array([False, True, True, True, False, True])
    c = metrics.calibration(conf, correct, n_bins=3)
    # bin 0: acc 1/2, conf 0.25; bin 1: acc 1, conf 0.5; bin 2: acc 2/3, conf 0.9
    expected = 2 / 6 * abs(0.5 - 0.25) + 1 / 6 * abs(1 - 0.5) + 3 / 6 * abs(2 / 3 - 0.9)
    assert c["ece"] == pytest.approx(expected)
    np.testing.assert_array_equal(c["count"], [2, 1, 3])
    np.testing.assert_allclose(c["accuracy"], [0.5, 1.0, 2 / 3])
    np.testing.assert_allclose(c["confidence"], [0.25, 0.5, 0.9])


def test_ece_edges_go_to_the_lower_bin_and_empty_bins_are_nan():
    c = metrics.calibration(np.array([0.5, 0.5]), np.array([True, False]), n_bins=2)
    np.testing.assert_array_equal(c["count"], [2, 0])
    assert np.isnan(c["accuracy"][1]) and c["ece"] == pytest.approx(0.0)


def test_ece_15_bins_matches_a_loop():
    logits, labels = generated(n=2000, signal=1.5)
    p = scipy_softmax(logits.astype(np.float64), axis=1)
    conf, correct = p.max(1), p.argmax(1) == labels
    ece = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    c = metrics.calibration(conf, correct)
    assert c["n_bins"] == 15 and c["count"].sum() == 2000
    assert c["ece"] == pytest.approx(ece)


def test_classification_report_matches_sklearn():
    logits, labels = generated(signal=0.7, balanced=False)
    preds = logits.argmax(1)
    names = [f"class{i}" for i in range(12)]
    r = metrics.classification_report(labels, preds, names)
    sk = skm.classification_report(labels, preds, labels=np.arange(12), target_names=names,
                                   output_dict=True, zero_division=0)
    for row in r["classes"]:
        ref = sk[row["class_name"]]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (ref["precision"], ref["recall"], ref["f1-score"], ref["support"]))
    for avg in ("macro avg", "weighted avg"):
        assert r[avg]["f1"] == pytest.approx(sk[avg]["f1-score"])
        assert r[avg]["precision"] == pytest.approx(sk[avg]["precision"])
    assert r["weighted avg"]["f1"] == pytest.approx(skm.f1_score(labels, preds, average="weighted"))
    assert "class11" in r["text"] and "macro avg" in r["text"]


def test_classification_report_lists_classes_never_seen():
    r = metrics.classification_report(np.array([0, 0, 1]), np.array([0, 1, 1]), ["a", "b", "c"])
    assert [row["class_name"] for row in r["classes"]] == ["a", "b", "c"]
    assert r["classes"][2] == {"class_index": 2, "class_name": "c", "precision": 0.0, "recall": 0.0,
                               "f1": 0.0, "support": 0}


# --- input -----------------------------------------------------------------------------------


def test_json_safe_turns_nan_into_null():
    out = metrics.json_safe({"a": float("nan"), "b": np.float32(0.5), "c": [np.int64(3), np.inf],
                             "d": np.array([1.0, np.nan])})
    assert out == {"a": None, "b": 0.5, "c": [3, None], "d": [1.0, None]}


def test_load_predictions_round_trip(tmp_path):
    logits, labels = generated()
    write_npz(tmp_path / "p.npz", logits=logits, labels=labels)
    got_logits, got_labels = predictions.load_predictions(tmp_path / "p.npz", labels, 12)
    np.testing.assert_array_equal(got_logits, logits)
    assert got_labels.dtype == np.int64


@pytest.mark.parametrize("case, message", [
    ("missing", "file not found"),
    ("not_npz", "not a readable .npz"),
    ("no_logits", "missing key 'logits'"),
    ("no_labels", "missing key 'labels'"),
    ("logits_1d", "'logits' must be a float [N, C]"),
    ("rows", "rows of logits but"),
    ("classes", "logits have 5 classes but the dataset has 12"),
    ("test_size", "predictions but the test set has"),
    ("other_labels", "labels differ from the dataset's test labels"),
    ("nan", "NaN or infinity"),
])
def test_load_predictions_errors(tmp_path, case, message):
    logits, labels = generated()
    path = tmp_path / "p.npz"
    arrays = {"logits": logits, "labels": labels}
    if case == "not_npz":
        path.write_text("hello")
    elif case != "missing":
        if case == "no_logits":
            del arrays["logits"]
        elif case == "no_labels":
            del arrays["labels"]
        elif case == "logits_1d":
            arrays["logits"] = logits[:, 0]
        elif case == "rows":
            arrays["labels"] = labels[:-1]
        elif case == "classes":
            arrays["logits"] = logits[:, :5]
        elif case == "test_size":
            arrays = {"logits": logits[:-1], "labels": labels[:-1]}
        elif case == "other_labels":
            arrays["labels"] = np.roll(labels, 1)
        elif case == "nan":
            logits[3, 2] = np.nan
        write_npz(path, **arrays)
    with pytest.raises(DataError) as e:
        predictions.load_predictions(path, labels, 12)
    assert message in str(e.value) and "\n" not in str(e.value)
