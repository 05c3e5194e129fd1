"""Grad-CAM (Selvaraju et al. 2017) and its model-randomisation sanity check (Adebayo et al. 2018).

For an image and a class c, with A the target layer's activations [K, h, w] and y_c the class
logit (before the softmax):

    alpha_k = mean over (i, j) of d y_c / d A_k[i, j]       one weight per channel
    map     = ReLU(sum_k alpha_k A_k)                        [h, w]

upsampled bilinearly to the 32x32 input and min-max scaled to [0, 1] per image (a constant map
becomes all zeros). A batch is one forward and one ``torch.autograd.grad`` call: in eval mode each
image's logit depends only on its own activations, so the gradient of the summed logits gives
every image's own gradient at once. Parameter ``.grad`` fields are never touched.

The sanity check re-initialises a layer of a copy of the model and recomputes the maps: maps that
explain the model should change. This module computes maps only (it is model code: the Grad-CAM
rule runs it on a GPU node); how far the two sets of maps agree (Spearman correlation), the
overlays and the figures are CPU analysis (metrics.map_rank_correlations, cam_images, plots).
"""

import copy
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .exceptions import UserError
from .pipeline import SIZE


def resolve_layer(model: nn.Module, layer) -> nn.Module:
    """``layer`` itself if it is a module, else the submodule it names ("layer4", "layer4.1.conv2")."""
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(str(layer))
    except AttributeError:
        names = ", ".join(n for n, _ in model.named_children())
        raise UserError(f"unknown layer {layer!r}: the model's top-level layers are {names} "
                        f"(dotted names such as layer4.1 reach inside)") from None


@contextmanager
def capture_activations(layer: nn.Module):
    """Record ``layer``'s output in the yielded dict under "activations"; the hook is always removed."""
    store = {}

    def hook(module, inputs, output):
        store["activations"] = output

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for the duration (BatchNorm must not mix the images of a batch), then restore."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of [N, H, W] to [0, 1]; constant maps become zeros."""
    flat = maps.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    span = hi - lo
    out = (flat - lo[:, None]) / torch.where(span > 0, span, torch.ones_like(span))[:, None]
    return torch.where((span > 0)[:, None], out, torch.zeros_like(out)).view_as(maps)


def _batch(model, x, classes, layer):
    x = x.detach().requires_grad_(True)  # keeps the graph even if every parameter is frozen
    with capture_activations(layer) as store:
        logits = model(x)
    acts = store.get("activations")
    if not isinstance(acts, torch.Tensor) or acts.ndim != 4:
        shape = list(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise UserError(f"Grad-CAM needs a convolutional layer with [N, C, H, W] output; "
                        f"the chosen layer gives {shape}")
    target = logits.gather(1, classes[:, None]).sum()
    (grads,) = torch.autograd.grad(target, acts)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # alpha_k per image and channel
    cam = F.relu((weights * acts).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    return _minmax(cam).detach(), logits.detach()


def grad_cam(model: nn.Module, images: torch.Tensor, classes, layer="layer4", batch_size: int = 128,
             return_logits: bool = False):
    """Grad-CAM maps [N, 32, 32] in [0, 1] of normalised ``images`` [N, 3, 32, 32] for ``classes``.

    ``layer``: a module of ``model`` or its name. Runs on ``images``' device in batches of
    ``batch_size``; with ``return_logits`` also returns the model's logits [N, C].
    """
    layer = resolve_layer(model, layer)
    classes = torch.as_tensor(classes, dtype=torch.long, device=images.device)
    if classes.shape != (len(images),):
        raise ValueError(f"need one class per image: {len(images)} images, classes of shape {tuple(classes.shape)}")
    maps, logits = [], []
    with eval_mode(model), torch.enable_grad():
        for i in range(0, len(images), batch_size):
            m, z = _batch(model, images[i:i + batch_size], classes[i:i + batch_size], layer)
            maps.append(m)
            logits.append(z)
    if not maps:  # no images
        maps = [images.new_zeros((0, SIZE, SIZE))]
        logits = [images.new_zeros((0, 0))]
    maps = torch.cat(maps)
    return (maps, torch.cat(logits)) if return_logits else maps


def randomised_copy(model: nn.Module, layer="layer4", seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` whose ``layer`` has fresh initial weights (reset_parameters on every
    module inside it; BatchNorm also forgets its running statistics). ``model`` is untouched."""
    device = next(model.parameters()).device
    clone = copy.deepcopy(model).cpu()  # re-initialised on the CPU: same weights on any device
    name = layer if isinstance(layer, str) else next(n for n, m in model.named_modules() if m is layer)
    target = resolve_layer(clone, name)
    with torch.random.fork_rng(devices=[]):  # reproducible, and the caller's RNG stream is left alone
        torch.default_generator.manual_seed(seed)  # the CPU generator only (torch.manual_seed seeds CUDA too)
        for m in target.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
    return clone.to(device)


def randomised_maps(model, images, classes, layer="layer4", seed: int = 0, batch_size: int = 128) -> torch.Tensor:
    """Adebayo et al.'s model-randomisation test, its model half: the maps of a copy of ``model``
    whose ``layer`` is re-initialised (with ``seed``), for the same images and classes."""
    rand = randomised_copy(model, layer, seed)
    name = layer if isinstance(layer, str) else next(n for n, m in model.named_modules() if m is layer)
    return grad_cam(rand, images, classes, name, batch_size)


def most_confident(confidence: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest ``confidence`` values where ``mask`` (fewer if fewer exist)."""
    idx = np.flatnonzero(mask)
    return idx[np.argsort(-confidence[idx], kind="stable")[:n]]
