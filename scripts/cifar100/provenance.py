"""Where a result came from: code version, library versions, device and thread count.

``provenance(device)`` is cheap (one ``git`` call, a hash of a few dozen small files) and never
fails: whatever cannot be found out is ``None``. model.pt, metrics.json and summary.json carry it.
"""

import hashlib
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

SCRIPTS = Path(__file__).resolve().parents[1]  # scripts/: the code a result depends on
GIT_TIMEOUT_S = 5


def source_digest(files) -> str:
    """sha256 over the names and bytes of ``files`` (in the given order); missing files count as empty."""
    h = hashlib.sha256()
    for f in files:
        f = Path(f)
        h.update(f.name.encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError:
            pass
        h.update(b"\0")
    return h.hexdigest()


def _git(*args) -> str | None:
    try:
        p = subprocess.run(["git", "-C", str(SCRIPTS), *args], capture_output=True, text=True,
                           timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def code_version() -> dict:
    """The git commit of the repository holding scripts/ and whether tracked files differ from it
    (both None outside git), and a sha256 of scripts/**/*.py, which identifies the code either way."""
    files = sorted(SCRIPTS.rglob("*.py"))
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": _git("rev-parse", "HEAD"),
            "git_dirty": None if status is None else bool(status),
            "scripts_sha256": source_digest(files) if files else None}


def _safe(fn):
    try:
        return fn()
    except Exception:  # provenance never stops a run: an unknown is recorded as None
        return None


def cpu_name() -> str | None:
    def read():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
        return platform.processor() or None
    return _safe(read)


def device_name(device) -> str | None:
    device = torch.device(device)
    if device.type == "cuda":
        return _safe(lambda: torch.cuda.get_device_name(device))
    return cpu_name() if device.type == "cpu" else device.type


def versions() -> dict:
    def torchvision_version():  # from its metadata: importing torchvision takes seconds
        from importlib.metadata import version
        return version("torchvision")

    cudnn = _safe(torch.backends.cudnn.version) if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": _safe(torchvision_version), "numpy": str(np.__version__),
            "cuda": torch.version.cuda, "cudnn": cudnn}


def provenance(device) -> dict:
    """Code version, versions, host, device name and intra-op thread count of a run on ``device``."""
    device = _safe(lambda: torch.device(device)) or torch.device("cpu")
    return {"code": _safe(code_version), "versions": _safe(versions), "host": _safe(platform.node),
            "device": str(device), "device_name": device_name(device),
            "cpu_capability": _safe(torch.backends.cpu.get_cpu_capability),
            "threads": _safe(torch.get_num_threads)}
