"""Grad-CAM image utilities: numpy and OpenCV only, no model (pytorch-grad-cam keeps ``scale`` and
``overlay`` apart from model code the same way). The figures of the Grad-CAM analysis use them."""

import cv2
import numpy as np


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
        m = np.stack([cv2.resize(x, size, interpolation=cv2.INTER_LINEAR) for x in m]) if len(m) else (
            np.zeros((0, size[1], size[0]), np.float32))
    return m[0] if single else m


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, colormap: int | None = None) -> np.ndarray:
    """Blend a [0, 1] map over an RGB uint8 image [H, W, 3] with an OpenCV colour map (JET).

    Returns RGB uint8 ``(1 - alpha) * image + alpha * colour(cam)``; ``cam`` is resized to the
    image if needed.
    """
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
