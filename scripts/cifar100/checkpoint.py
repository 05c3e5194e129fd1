"""Checkpoints: plain dicts of tensors, numbers, strings and lists, loadable with weights_only=True."""

import platform
from pathlib import Path

import numpy as np
import torch

from .exceptions import CheckpointError, OutputError
from .files import atomic_path
from .model import resnet18

FORMAT = "cifar100-resnet18/1"


def versions() -> dict:
    import torchvision

    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "numpy": str(np.__version__)}


def save(path, obj: dict) -> None:
    """Write atomically: the previous file stays intact if anything fails (disk full included)."""
    with atomic_path(path) as tmp:
        try:
            torch.save({"format": FORMAT, **obj}, tmp)
        except RuntimeError as e:  # torch's zip writer reports a failed write (ENOSPC, EFBIG) like this
            raise OutputError(f"cannot write {path}: the write was cut short (disk full or over a size "
                              f"limit?): {str(e).splitlines()[0][:120]}") from e


def load(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        why = next((ln for ln in lines if "unsupported global" in ln.lower()), lines[0])
        raise CheckpointError(f"{path}: unreadable or unsafe checkpoint ({why[:200]})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of this project (format tag {FORMAT!r} missing)")
    return ckpt


def load_model(path, num_classes: int | None = None, device="cpu", class_names: list[str] | None = None):
    """Rebuild the model a checkpoint describes; check it fits a dataset of ``num_classes``
    (``len(class_names)`` when names are given) and, with ``class_names``, that its classes are those."""
    if class_names is not None:
        num_classes = len(class_names)
    ckpt = load(path)
    try:
        args = {"num_classes": int(ckpt["model_args"]["num_classes"]), "width": int(ckpt["model_args"]["width"])}
        state = ckpt["state_dict"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: checkpoint lacks model_args or state_dict ({e})") from e
    if num_classes is not None and args["num_classes"] != num_classes:
        raise CheckpointError(
            f"{path}: checkpoint has {args['num_classes']} classes but the dataset has {num_classes}"
        )
    if class_names is not None and list(ckpt.get("fine_names", class_names)) != list(class_names):
        raise CheckpointError(f"{path}: its class names differ from the dataset's")
    model = resnet18(**args)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit ResNet-18 {args} ({str(e).splitlines()[0]})") from e
    return model.to(device).eval(), ckpt
