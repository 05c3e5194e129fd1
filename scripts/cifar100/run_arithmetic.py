"""Whether a recipe's seeds ran on the same arithmetic, read from what each run recorded.

"Deterministic" weights still differ across CPU instruction sets (oneDNN picks kernels by the
capability it finds), GPU models, torch/CUDA/cuDNN versions and, on the CPU, the thread count.
A study whose seeds were spread over different node types mixes that difference into the
seed-to-seed spread; its summary says so. Each run's training provenance comes from model.pt
through metrics.json into summary.json (``training_provenance``). Plain JSON: no torch.
"""

from .readers import read_object

# What decides the arithmetic of a run on each kind of device (provenance.provenance's keys).
CPU_KEYS = ("device_name", "cpu_capability", "threads", "torch")
CUDA_KEYS = ("device_name", "torch", "cuda", "cudnn")


def of(summary: dict) -> dict | None:
    """The settings that decide a run's arithmetic, from its summary.json; None if not recorded."""
    prov = summary.get("training_provenance")
    if not isinstance(prov, dict) or not prov.get("device"):
        return None
    kind = str(prov["device"]).split(":")[0]
    versions = prov.get("versions") if isinstance(prov.get("versions"), dict) else {}
    values = {**versions, **prov}
    return {"device": kind, **{k: values.get(k) for k in (CUDA_KEYS if kind == "cuda" else CPU_KEYS)}}


def note(summaries: list[dict]) -> str:
    """"" when every run recorded the same arithmetic; otherwise one sentence naming what
    differs and which seeds ran where (runs that recorded nothing are named as such)."""
    seen = {}
    for s in summaries:
        a = of(s)
        seen.setdefault(None if a is None else tuple(a.items()), []).append(str(s.get("seed", "?")))
    if len(seen) <= 1:
        return ""
    known = [dict(k) for k in seen if k is not None]
    if len({a["device"] for a in known}) > 1:  # CPU runs beside GPU runs: that says it all
        keys = ["device", "device_name"]
    else:
        keys = [k for k in (known[0] if known else {}) if len({str(a.get(k)) for a in known}) > 1] or ["device"]
    parts = []
    for k, seeds in seen.items():
        what = "nothing recorded" if k is None else ", ".join(f"{key} {dict(k).get(key)}" for key in keys)
        parts.append(f"seed{'s' * (len(seeds) > 1)} {', '.join(seeds)}: {what}")
    return ("the seeds ran on different arithmetic, so their spread includes it (" + "; ".join(parts) + ")")


def note_of_files(paths) -> str:
    """``note`` of the summary.json files at ``paths``."""
    return note([read_object(p) for p in paths])
