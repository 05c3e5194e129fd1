#!/usr/bin/env python
"""Grad-CAM of the most confident correct and incorrect test predictions, with a sanity check.

    python scripts/gradcam.py --checkpoint results/baseline/seed0/model.pt \
        --predictions results/baseline/seed0/predictions.npz --data-dir data --n 8 --layer layer4 \
        --correct results/baseline/seed0/gradcam_correct.png --incorrect results/baseline/seed0/gradcam_incorrect.png \
        --summary results/baseline/seed0/gradcam_summary.json --maps results/baseline/seed0/gradcam_maps.npz

Explains each image's predicted class (the class the model chose, right or wrong). Writes:
    correct figure    the --n most confident correct predictions, image beside overlay
    incorrect figure  the --n most confident incorrect predictions
    maps (optional)   maps (float32 [M, 32, 32] in [0, 1]), indices, classes, ...
    summary           layer, sizes and the randomisation check: the mean Spearman correlation
                      between these maps and those of a copy with --randomise re-initialised
                      (Adebayo et al. 2018); near 1 would mean the maps ignore the learned weights
"""

import argparse
import time

import numpy as np
import torch

from cifar100 import cam, checkpoint, config, data, engine, metrics, plots
from cifar100.cli import run_cli
from cifar100.exceptions import DataError
from cifar100.files import write_json, write_npz
from cifar100.pipeline import DeviceSplit

LAYERS = config.schema()["properties"]["analysis"]["properties"]["gradcam_layer"]["enum"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model.pt written by train.py (required)")
    p.add_argument("--predictions", required=True, help="predictions.npz written by evaluate.py (required)")
    p.add_argument("--data-dir", default=config.default("data_dir"),
                   help="folder holding cifar-100-python/ (default: %(default)s)")
    p.add_argument("--n", type=int, default=config.default("analysis", "gradcam_images"),
                   help="images per figure, correct and incorrect (default: %(default)s)")
    p.add_argument("--layer", choices=LAYERS, default=config.default("analysis", "gradcam_layer"),
                   help="target layer (default: %(default)s)")
    p.add_argument("--randomise", choices=LAYERS, default=config.default("analysis", "gradcam_layer"),
                   help="layer re-initialised for the sanity check (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the re-initialisation (default: %(default)s)")
    p.add_argument("--correct", required=True, help="figure of correct predictions to write (required)")
    p.add_argument("--incorrect", required=True, help="figure of incorrect predictions to write (required)")
    p.add_argument("--summary", required=True, help="gradcam_summary.json to write (required)")
    p.add_argument("--maps", help="also write the maps to this .npz (default: not written)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward/backward (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="weight of the heat map in the overlay (default: %(default)s)")
    return p.parse_args(argv)


def most_confident(confidence: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest ``confidence`` values where ``mask`` (fewer if fewer exist)."""
    idx = np.flatnonzero(mask)
    return idx[np.argsort(-confidence[idx], kind="stable")[:n]]


def figure(kind, idx, images, maps, labels, pred, conf, names, n, layer, alpha, total, maps_randomised=None,
           randomised_layer=""):
    overlays = [cam.overlay(images[i], m, alpha) for i, m in zip(idx, maps)]
    randomised = None if maps_randomised is None else [
        cam.overlay(images[i], m, alpha) for i, m in zip(idx, maps_randomised)]
    titles = [f"true: {names[labels[i]]}\npred: {names[pred[i]]} ({conf[i]:.2f})" for i in idx]
    color = "green" if kind == "correct" else "red"
    note = ""
    if len(idx) == 0:
        note = f"no {kind} predictions among the {total} test images"
    elif len(idx) < n:
        note = f"only {len(idx)} {kind} prediction{'s' * (len(idx) > 1)} among the {total} test images ({n} requested)"
    title = f"Grad-CAM ({layer}) of the predicted class: most confident {kind} predictions"
    return plots.gradcam_pairs([images[i] for i in idx], overlays, titles, [color] * len(idx), title, note,
                               randomised=randomised, randomised_label=f"{randomised_layer} randomised")


def _finite(x: float):
    return x if np.isfinite(x) else None


def main(argv=None):
    a = parse_args(argv)
    if a.n < 0 or a.batch_size < 1:
        raise DataError(f"--n must be >= 0 and --batch-size >= 1 (got {a.n}, {a.batch_size})")
    t0 = time.perf_counter()
    test, names, _, _ = data.load_test(a.data_dir)
    device = engine.pick_device(a.device)
    model, ckpt = checkpoint.load_model(a.checkpoint, device=device, class_names=names)
    cam.resolve_layer(model, a.layer)  # unknown names fail before any work
    cam.resolve_layer(model, a.randomise)
    logits, _ = metrics.load_predictions(a.predictions, test.labels, len(names))
    probs = metrics.softmax(logits)
    pred, conf = probs.argmax(1), probs.max(1)
    correct = pred == test.labels
    chosen = {"correct": most_confident(conf, correct, a.n), "incorrect": most_confident(conf, ~correct, a.n)}
    idx = np.concatenate([chosen["correct"], chosen["incorrect"]]).astype(np.int64)

    split = DeviceSplit(test.images[idx], test.labels[idx], device)
    x = split.normalise(split.images)  # exactly the normalisation training and evaluation use
    classes = torch.as_tensor(pred[idx], device=device)
    maps, model_logits = cam.grad_cam(model, x, classes, a.layer, a.batch_size, return_logits=True)
    check = cam.randomisation_check(model, x, classes, a.layer, a.randomise, a.seed, maps, a.batch_size)
    maps_np = maps.cpu().numpy().astype(np.float32)
    random_np = check["maps"].cpu().numpy().astype(np.float32)
    agree = float((model_logits.argmax(1).cpu().numpy() == pred[idx]).mean()) if len(idx) else None

    start = 0
    for kind in ("correct", "incorrect"):
        k = chosen[kind]
        fig = figure(kind, k, test.images, maps_np[start:start + len(k)], test.labels, pred, conf, names,
                     a.n, a.layer, a.alpha, len(test.labels), random_np[start:start + len(k)], a.randomise)
        plots.save(fig, getattr(a, kind))
        start += len(k)
    if a.maps:
        write_npz(a.maps, maps=maps_np, indices=idx, classes=pred[idx].astype(np.int64),
                  labels=test.labels[idx].astype(np.int64), correct=correct[idx],
                  confidence=conf[idx].astype(np.float32),
                  maps_randomised=random_np)
    rho = check["per_image"]
    rho_summary = metrics.correlation_summary(rho)
    summary = {
        "layer": a.layer, "n": a.n, "target": "predicted class",
        "n_correct": int(len(chosen["correct"])), "n_incorrect": int(len(chosen["incorrect"])),
        "randomised_layer": a.randomise, "randomisation_seed": a.seed,
        "mean_rank_correlation_randomised": _finite(check["mean"]),
        "rank_correlation_randomised": metrics.json_safe(rho_summary),
        "rank_correlation_randomised_per_image": [_finite(float(r)) for r in rho],
        "rank_correlation_note": ("Spearman correlation between each map and the map of a copy of the model "
                                  f"with {a.randomise} re-initialised, over the n_used of n_images images whose "
                                  "maps are not constant (n_dropped blank maps have no correlation); mean_abs and "
                                  "median cannot let positive and negative values cancel; maps that depend on the "
                                  "learned weights give values well below 1"),
        "maps_scaling": plots.CAM_SCALE_NOTE,
        "prediction_agreement": agree, "indices": idx.tolist(), "maps_saved": bool(a.maps),
        "checkpoint": str(a.checkpoint), "predictions": str(a.predictions), "device": str(device),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_json(a.summary, summary)
    if agree is not None and agree < 1:
        print(f"warning: the checkpoint predicts another class than {a.predictions} for "
              f"{round((1 - agree) * len(idx))} of {len(idx)} images (bf16 evaluation, or another model?)")
    med = rho_summary["median"]
    print(f"Grad-CAM at {a.layer}: {len(chosen['correct'])} correct, {len(chosen['incorrect'])} incorrect images; "
          f"median rank correlation with {a.randomise} randomised: {'n/a' if np.isnan(med) else f'{med:.3f}'} "
          f"over {rho_summary['n_used']} of {rho_summary['n_images']} images; "
          f"{summary['seconds']:.1f}s on {device}")


if __name__ == "__main__":
    run_cli(main)
