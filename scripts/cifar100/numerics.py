"""A run's numerics: the device, the precision it trains in, determinism and threads, seeding,
autocast and torch.compile, and ``arithmetic``, the record of what else decides the numbers a run
computes (a resume with other values is not exact). Plain functions of a device and a setting:
engine.py calls them with a run's settings.
"""

import contextlib
import os
import random
import re
import warnings

import numpy as np
import torch
from torch import nn

from .deps import model_code
from .exceptions import ConfigError
from .provenance import device_name, source_digest

# Intra-op threads of a deterministic CPU run. The thread count splits every reduction (convolution,
# batch norm), so weights depend on it: a fixed count makes them the same whatever the cores or
# OMP_NUM_THREADS say. 1 runs on every machine without oversubscription; deterministic CPU runs
# are for tests and debugging (a full run belongs on a GPU, where host threads do not touch the sums).
DETERMINISTIC_CPU_THREADS = 1
# The modules whose source decides the weights (deps.MODEL_CODE, also the GPU rules' code inputs):
# a finished last.pt is reused only with the same code.
TRAINING_CODE = model_code()


def pick_device(name: str | None = None) -> torch.device:
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device {name}: not a device name (cpu, cuda, cuda:1, auto)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is visible to this process")
    return device


def resolve_precision(device: torch.device, precision: str, log) -> str:
    """bf16 only where the chosen GPU has it natively (Ampere and newer); emulated bf16 is slower than fp32."""
    if device.type != "cuda":
        if precision != "fp32":
            log("CPU run: training in fp32 (bf16 autocast is used on CUDA only)")
        return "fp32"
    if precision == "bf16" and torch.cuda.get_device_capability(device) < (8, 0):
        log(f"{torch.cuda.get_device_name(device)} has no native bf16: training in fp32")
        return "fp32"
    return precision


def set_determinism(deterministic: bool) -> None:
    """Every switch set both ways, so a run after a deterministic one in the same process is not."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    # Filling fresh memory with NaN is a debugging aid (an extra kernel per allocation, 10-15%);
    # every tensor here is written before it is read.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def set_precision(precision: str) -> None:
    """fp32 means IEEE fp32: cuDNN would otherwise run convolutions in TF32 on Ampere and newer.
    bf16 keeps torch's defaults (TF32 convolutions outside autocast, fp32 matmuls)."""
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = False


@contextlib.contextmanager
def numerics(deterministic: bool, precision: str, device: torch.device, log):
    """Threads, determinism and TF32 for a run; yields the precision it trains in. The
    process's thread count comes back afterwards."""
    threads = torch.get_num_threads()
    if deterministic and device.type == "cpu":
        torch.set_num_threads(DETERMINISTIC_CPU_THREADS)
    set_determinism(deterministic)
    if deterministic:
        warnings.warn("deterministic: true makes runs bit-reproducible but slower "
                      "(deterministic kernels, no cuDNN autotuning, one CPU thread)", stacklevel=3)
    precision = resolve_precision(device, precision, log)
    set_precision(precision)
    try:
        yield precision
    finally:
        torch.set_num_threads(threads)


def arithmetic(device: torch.device, precision: str) -> dict:
    """What else changes the numbers a run computes: a resume with other values is not exact."""
    a = {"torch": str(torch.__version__), "device": device.type, "device_name": device_name(device),
         "precision": precision, "training_code": source_digest(TRAINING_CODE)}
    if device.type == "cuda":
        a.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:  # oneDNN picks kernels by instruction set; the thread count splits the sums
        a.update(cpu_capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads())
    return a


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_for(device: torch.device, precision: str):
    if device.type == "cuda" and precision == "bf16":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def _one_line(text: str, pattern=r"fatal error|No such file|not found|error:") -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return next((ln for ln in lines if re.search(pattern, ln)), lines[0] if lines else "")


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """torch.compile, after a tiny compiled function has run on ``device``: a missing toolchain
    (CUDA headers, ptxas, a C compiler) fails there as one line, not at the model's first forward."""
    try:
        probe = torch.compile(lambda x: x * 2 + 1, dynamic=False)
        probe(torch.ones(8, device=device))
    except Exception as e:
        need = ("the CUDA toolchain Triton compiles with (conda-forge: cuda-nvcc, cuda-cudart-dev and gcc, "
                "of the CUDA version PyTorch was built with)" if device.type == "cuda"
                else "a C++ compiler (conda-forge: gxx)")
        raise ConfigError(f"compile: true, but torch.compile cannot build kernels on {device} here "
                          f"({_one_line(e) or type(e).__name__}): install {need}, or set compile: false") from e
    # dynamic=False: the partial last batch and eval batches compile once each, as static graphs.
    return torch.compile(model, dynamic=False)
