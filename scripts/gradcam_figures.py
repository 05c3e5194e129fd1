#!/usr/bin/env python
"""Grad-CAM figures and the randomisation sanity check, from the maps gradcam.py wrote (CPU only).

    python scripts/gradcam_figures.py --maps results/baseline/seed0/gradcam_maps.npz --data-dir data \\
        --correct results/baseline/seed0/gradcam_correct.png \\
        --incorrect results/baseline/seed0/gradcam_incorrect.png \\
        --summary results/baseline/seed0/gradcam_summary.json

Writes:
    correct figure    the most confident correct predictions: image, overlay, randomised-model overlay
    incorrect figure  the same for the most confident incorrect predictions
    summary           layer, sizes and the randomisation check (Adebayo et al. 2018): the Spearman
                      correlation (scipy.stats.spearmanr) between each map and the map of the model
                      with that layer re-initialised; near 1 would mean the maps ignore the learned weights
"""

import argparse
from pathlib import Path

import numpy as np

from cifar100 import cam_images, config, data, metrics, plots
from cifar100.cli import run_cli
from cifar100.exceptions import DataError
from cifar100.files import write_json

ALPHA = 0.5  # weight of the heat map in each overlay
ARRAYS = ("maps", "maps_randomised", "indices", "classes", "labels", "correct", "confidence", "model_classes",
          "layer", "randomisation_seed", "n_requested", "n_test")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--maps", required=True, help="gradcam_maps.npz written by gradcam.py (required)")
    p.add_argument("--data-dir", default=config.default("data_dir"),
                   help="folder holding cifar-100-python/ (default: %(default)s)")
    p.add_argument("--correct", required=True, help="figure of correct predictions to write (required)")
    p.add_argument("--incorrect", required=True, help="figure of incorrect predictions to write (required)")
    p.add_argument("--summary", required=True, help="gradcam_summary.json to write (required)")
    return p.parse_args(argv)


def read_maps(path, n_test: int, num_classes: int) -> dict:
    """The arrays of gradcam_maps.npz, checked against each other and the test set (one line if not)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ARRAYS if k not in f.files]
            if missing:
                raise DataError(f"{path}: not a gradcam_maps.npz of this workflow (missing {', '.join(missing)})")
            m = {k: f[k] for k in ARRAYS}
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
    k = len(m["indices"])
    if m["maps"].shape != (k, 32, 32) or m["maps_randomised"].shape != m["maps"].shape or any(
            len(m[name]) != k for name in ("classes", "labels", "correct", "confidence", "model_classes")):
        raise DataError(f"{path}: its arrays disagree in length or shape")
    if int(m["n_test"]) != n_test or (k and (m["indices"].max() >= n_test or m["classes"].max() >= num_classes)):
        raise DataError(f"{path}: made for another test set ({int(m['n_test'])} images) than --data-dir holds "
                        f"({n_test})")
    return m


def figure(kind, rows, m, images, names, total):
    n = int(m["n_requested"])
    layer = str(m["layer"])
    idx = m["indices"][rows]
    overlays = [cam_images.overlay(images[i], c, ALPHA) for i, c in zip(idx, m["maps"][rows])]
    randomised = [cam_images.overlay(images[i], c, ALPHA) for i, c in zip(idx, m["maps_randomised"][rows])]
    titles = [f"true: {names[t]}\npred: {names[p]} ({c:.2f})"
              for t, p, c in zip(m["labels"][rows], m["classes"][rows], m["confidence"][rows])]
    note = ""
    if len(idx) == 0:
        note = f"no {kind} predictions among the {total} test images"
    elif len(idx) < n:
        note = f"only {len(idx)} {kind} prediction{'s' * (len(idx) > 1)} among the {total} test images ({n} requested)"
    color = "green" if kind == "correct" else "red"
    title = f"Grad-CAM ({layer}) of the predicted class: most confident {kind} predictions"
    return plots.gradcam_pairs([images[i] for i in idx], overlays, titles, [color] * len(idx), title, note,
                               randomised=randomised, randomised_label=f"{layer} randomised")


def main(argv=None):
    a = parse_args(argv)
    test, names, _, _ = data.load_test(a.data_dir)
    m = read_maps(a.maps, len(test.labels), len(names))
    layer = str(m["layer"])
    correct = m["correct"].astype(bool)
    for kind, rows in (("correct", np.flatnonzero(correct)), ("incorrect", np.flatnonzero(~correct))):
        plots.save(figure(kind, rows, m, test.images, names, len(test.labels)), getattr(a, kind))

    rho = metrics.map_rank_correlations(m["maps"], m["maps_randomised"])
    rho_summary = metrics.correlation_summary(rho)
    agree = float((m["model_classes"] == m["classes"]).mean()) if len(rho) else None
    summary = {
        "layer": layer, "n": int(m["n_requested"]), "target": "predicted class",
        "n_correct": int(correct.sum()), "n_incorrect": int((~correct).sum()),
        "randomised_layer": layer, "randomisation_seed": int(m["randomisation_seed"]),
        "mean_rank_correlation_randomised": rho_summary["mean"],
        "rank_correlation_randomised": rho_summary,
        "rank_correlation_randomised_per_image": rho.tolist(),
        "rank_correlation_note": ("Spearman correlation (scipy.stats.spearmanr) between each map and the map of a "
                                  f"copy of the model with {layer} re-initialised, over the n_used of n_images images "
                                  "whose maps are not constant (n_dropped blank maps have no correlation); mean_abs "
                                  "and median cannot let positive and negative values cancel; maps that depend on "
                                  "the learned weights give values well below 1"),
        "maps_scaling": plots.CAM_SCALE_NOTE,
        "prediction_agreement": agree, "indices": m["indices"].tolist(), "maps": str(Path(a.maps)),
    }
    write_json(a.summary, metrics.json_safe(summary))
    if agree is not None and agree < 1:
        print(f"warning: the checkpoint predicts another class than predictions.npz for "
              f"{round((1 - agree) * len(rho))} of {len(rho)} images (another model?)")
    med = rho_summary["median"]
    print(f"Grad-CAM at {layer}: {summary['n_correct']} correct, {summary['n_incorrect']} incorrect images; "
          f"median rank correlation with {layer} randomised: {'n/a' if np.isnan(med) else f'{med:.3f}'} "
          f"over {rho_summary['n_used']} of {rho_summary['n_images']} images")


if __name__ == "__main__":
    run_cli(main)
