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
explain the model should change, i.e. the mean Spearman rank correlation between trained and
randomised maps should be well below 1.

Model code first; the image utilities at the end (``scale``, ``overlay``, ``rank_correlation``)
are pure numpy and never touch a model. No scipy: the Grad-CAM rule runs in the training env.
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


def randomisation_check(model, images, classes, layer="layer4", randomise="layer4", seed: int = 0,
                        maps: torch.Tensor | None = None, batch_size: int = 128) -> dict:
    """Adebayo et al.'s model-randomisation test: Spearman correlation of trained vs randomised maps.

    Returns ``mean`` (NaN when no image has a non-constant pair of maps), ``per_image`` and the
    randomised ``maps``. Pass the trained ``maps`` if already computed.
    """
    if maps is None:
        maps = grad_cam(model, images, classes, layer, batch_size)
    rand = randomised_copy(model, randomise, seed)
    rand_layer = layer if isinstance(layer, str) else next(n for n, m in model.named_modules() if m is layer)
    rand_maps = grad_cam(rand, images, classes, rand_layer, batch_size)
    rho = rank_correlation(maps.cpu().numpy(), rand_maps.cpu().numpy())
    finite = rho[np.isfinite(rho)]
    return {"mean": float(finite.mean()) if len(finite) else float("nan"), "per_image": rho,
            "maps": rand_maps}


# --- image utilities: numpy only, no model ------------------------------------------------------


def scale(maps: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Min-max scale each map of [N, H, W] (or one [H, W]) to [0, 1], constant maps to 0; then
    optionally resize to ``size`` (width, height) bilinearly."""
    maps = np.asarray(maps, dtype=np.float32)
    single = maps.ndim == 2
    m = maps[None] if single else maps
    flat = m.reshape(len(m), -1)
    lo = flat.min(1, keepdims=True) if flat.size else np.zeros((len(m), 1), np.float32)
    span = (flat.max(1, keepdims=True) if flat.size else lo) - lo
    flat = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1), 0.0).astype(np.float32)
    m = flat.reshape(m.shape)
    if size is not None:
        import cv2

        m = np.stack([cv2.resize(x, size, interpolation=cv2.INTER_LINEAR) for x in m]) if len(m) else (
            np.zeros((0, size[1], size[0]), np.float32))
    return m[0] if single else m


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, colormap: int | None = None) -> np.ndarray:
    """Blend a [0, 1] map over an RGB uint8 image [H, W, 3] with an OpenCV colour map (JET).

    Returns RGB uint8 ``(1 - alpha) * image + alpha * colour(cam)``; ``cam`` is resized to the
    image if needed.
    """
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay needs an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    if cam.shape != image.shape[:2]:
        cam = cv2.resize(cam, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.uint8(np.round(255 * cam)), cv2.COLORMAP_JET if colormap is None else colormap)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)  # OpenCV colour maps are BGR
    return np.uint8(np.round((1 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-d array, ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="stable")
    inv = np.empty_like(order)
    inv[order] = np.arange(len(x))
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    dense = np.cumsum(new)[inv]
    bounds = np.r_[np.flatnonzero(new), len(x)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each pair of maps a[i], b[i] (any shape per map); NaN where either
    map is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a.reshape(len(a), -1), b.reshape(len(b), -1))):
        rx, ry = _ranks(x) - (len(x) + 1) / 2, _ranks(y) - (len(y) + 1) / 2
        den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
        if den > 0:
            out[i] = float(np.clip((rx * ry).sum() / den, -1.0, 1.0))
    return out
