"""Checkpoints: plain dicts of tensors, numbers, strings and lists, loadable with weights_only=True."""

import re
from pathlib import Path

import torch

from .exceptions import CheckpointError, OutputError
from .files import atomic_path
from .model import resnet18
from .provenance import versions  # noqa: F401  (checkpoint.versions(): what model.pt records)

FORMAT = "cifar100-resnet18/1"
# Sentences of torch.load's errors that advise loading unsafely or point at its docs: dropped,
# since this project never loads with weights_only=False.
_ADVICE = re.compile(r"weights_only|safe_globals|two options|trusted source|trust the source|"
                     r"documentation of torch\.load|recommended steps", re.IGNORECASE)


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
        raise CheckpointError(f"{path}: unreadable or unsafe checkpoint ({load_error_reason(e)})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of this project (format tag {FORMAT!r} missing)")
    return ckpt


def load_error_reason(e: Exception) -> str:
    """torch.load's error as one whole line, without its advice to load with weights_only=False."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    text = re.sub(r"^\s*(WeightsUnpickler error:|\(\d\))\s*", "", text, flags=re.MULTILINE)
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    kept = [s for s in sentences if s and not _ADVICE.search(s) and s != "Weights only load failed."]
    return " ".join(kept) or type(e).__name__


def load_model(path, num_classes: int | None = None, device="cpu", class_names: list[str] | None = None,
               data_version: str | None = None):
    """Rebuild the model a checkpoint describes; check it fits a dataset of ``num_classes``
    (``len(class_names)`` when names are given), with ``class_names`` that its classes are those,
    and with ``data_version`` (engine.data_version of the dataset) that it was trained on that data."""
    if class_names is not None:
        num_classes = len(class_names)
    ckpt = load(path)
    try:
        args = {"num_classes": int(ckpt["model_args"]["num_classes"]), "width": int(ckpt["model_args"]["width"])}
        state = dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: checkpoint lacks model_args or state_dict ({e})") from e
    if num_classes is not None and args["num_classes"] != num_classes:
        raise CheckpointError(
            f"{path}: checkpoint has {args['num_classes']} classes but the dataset has {num_classes}"
        )
    if class_names is not None and list(ckpt.get("fine_names", class_names)) != list(class_names):
        raise CheckpointError(f"{path}: its class names differ from the dataset's")
    if data_version is not None:
        fingerprint = ckpt.get("fingerprint")
        trained_on = fingerprint.get("data") if isinstance(fingerprint, dict) else None
        if trained_on != data_version:
            raise CheckpointError(
                f"{path}: trained on other data ({trained_on or 'not recorded'}) than this dataset holds "
                f"({data_version}): retrain it on this data, or point --data-dir at the data it was trained on")
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weight tensors hold NaN or inf (first: {bad[0]}); "
                              "the model it holds diverged or the file is damaged")
    _check_shapes(path, args, state)
    model = resnet18(**args)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit ResNet-18 {args} ({str(e).splitlines()[0]})") from e
    return model.to(device).eval(), ckpt


def _check_shapes(path, args: dict, state: dict) -> None:
    """The weights' shapes against those ``model_args`` describe, on the meta device (no memory):
    model_args are data, and a width of 100000 would ask for terabytes before load_state_dict
    could compare. The weights themselves were already read, so building the real model after
    this check costs what the file holds."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in resnet18(**args).state_dict().items()}
    except (RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: model_args {args} do not describe a ResNet-18 ({e})") from e
    got = {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
    if got != expected:
        wrong = sorted(set(expected) ^ set(got)) or [k for k in expected if expected[k] != got[k]]
        raise CheckpointError(f"{path}: weights do not fit ResNet-18 {args} (first difference: {wrong[0]} "
                              f"{got.get(wrong[0])} in the file, {expected.get(wrong[0])} expected)")
