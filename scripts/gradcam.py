#!/usr/bin/env python
"""Grad-CAM maps of the most confident correct and incorrect test predictions, and of a randomised
copy of the model for the sanity check (the Grad-CAM rule's GPU half: it writes arrays only).

    python scripts/gradcam.py --checkpoint results/baseline/seed0/model.pt \\
        --predictions results/baseline/seed0/predictions.npz --data-dir data --n 8 --layer layer4 \\
        --maps results/baseline/seed0/gradcam_maps.npz

Explains each image's predicted class (the class the model chose, right or wrong). The maps file
holds, for the M <= 2n chosen images (the correct ones first):
    maps             float32 [M, 32, 32] in [0, 1], min-max scaled per image
    maps_randomised  the same for a copy of the model with --layer re-initialised (seed 0)
                     (Adebayo et al. 2018: maps that explain the model should change)
    indices, classes, labels, correct, confidence   test-set row, predicted and true class, ...
    model_classes    the class the checkpoint itself predicts for each image (a check on predictions)
    layer, n_requested, n_test
scripts/gradcam_figures.py draws the figures and computes the sanity check's statistics from it.
"""

import argparse

import numpy as np
import torch

from cifar100 import cam, checkpoint, config, data, engine, numerics
from cifar100.cli import positive_int, run_cli
from cifar100.files import write_npz
from cifar100.pipeline import DeviceSplit
from cifar100.predictions import load_predictions, softmax

LAYERS = config.choices("analysis", "gradcam_layer")
RANDOMISATION_SEED = 0  # the re-initialised copy is the same for every run, model and device


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model.pt written by train.py (required)")
    p.add_argument("--predictions", required=True, help="predictions.npz written by evaluate.py (required)")
    p.add_argument("--data-dir", default=config.default("data_dir"),
                   help="folder holding cifar-100-python/ (default: %(default)s)")
    p.add_argument("--n", type=positive_int, default=config.default("analysis", "gradcam_images"),
                   help="images per kind, correct and incorrect (default: %(default)s)")
    p.add_argument("--layer", choices=LAYERS, default=config.default("analysis", "gradcam_layer"),
                   help="target layer, also the layer re-initialised for the sanity check (default: %(default)s)")
    p.add_argument("--maps", required=True, help="gradcam_maps.npz to write (required)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    ds = data.load(a.data_dir)
    test = ds.test
    device = numerics.pick_device(a.device)
    model, _ = checkpoint.load_model(a.checkpoint, device=device, class_names=ds.fine_names,
                                     data_version=engine.data_version(ds))
    logits, _ = load_predictions(a.predictions, test.labels, ds.num_classes)
    probs = softmax(logits)
    pred, conf = probs.argmax(1), probs.max(1)
    correct = pred == test.labels
    idx = np.concatenate([cam.most_confident(conf, correct, a.n),
                          cam.most_confident(conf, ~correct, a.n)]).astype(np.int64)

    split = DeviceSplit(test.images[idx], test.labels[idx], device)
    x = split.normalise(split.images)  # exactly the normalisation training and evaluation use
    classes = torch.as_tensor(pred[idx], device=device)
    maps, model_logits = cam.grad_cam(model, x, classes, a.layer, return_logits=True)
    randomised = cam.randomised_maps(model, x, classes, a.layer, RANDOMISATION_SEED)
    model_classes = model_logits.argmax(1).cpu().numpy() if len(idx) else np.zeros(0, np.int64)
    write_npz(a.maps, maps=maps.cpu().numpy().astype(np.float32),
              maps_randomised=randomised.cpu().numpy().astype(np.float32), indices=idx,
              classes=pred[idx].astype(np.int64), labels=test.labels[idx].astype(np.int64),
              correct=correct[idx], confidence=conf[idx].astype(np.float32),
              model_classes=model_classes.astype(np.int64), layer=np.array(a.layer),
              randomisation_seed=np.int64(RANDOMISATION_SEED), n_requested=np.int64(a.n),
              n_test=np.int64(len(test.labels)))
    print(f"Grad-CAM at {a.layer}: maps of {int(correct[idx].sum())} correct and {int((~correct[idx]).sum())} "
          f"incorrect predictions (and of the model with {a.layer} randomised) on {device} -> {a.maps}")


if __name__ == "__main__":
    run_cli(main)
