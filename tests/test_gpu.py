"""The CUDA path: bf16 autocast, channels_last, fused SGD, torch.compile, deterministic kernels,
preemption and resume, the NaN check every CUDA_CHECK_EVERY steps, and CUDA against the CPU.

Tests marked ``gpu`` need a CUDA device and are skipped without one, with the reason;
scripts/gpu_check.sh runs them (``pytest -m gpu``) on a GPU machine. The comparisons they make
(loss trajectories, logits, Grad-CAM maps, the NaN check's timing) are also tested on the CPU,
unmarked, so that the logic is checked on every run and only the device differs.

    python -m pytest tests/test_gpu.py -m gpu -q       # on a GPU machine
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from cifar100 import cam, checkpoint, data, engine, numerics
from cifar100.exceptions import Diverged, Preempted
from cifar100.model import resnet18
from cifar100.pipeline import DeviceSplit, train_batches
from helpers import REPO, TINY_RECIPE, same_weights, signal_after_steps, workflow_outputs

# cuBLAS reads this when it is first used: deterministic runs in this process need it set before.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

CUDA = torch.cuda.is_available()
NO_CUDA = "needs a CUDA device (torch.cuda.is_available() is False)"


def gpu(test):
    """Marked gpu (``pytest -m gpu`` selects it), and skipped with the reason where CUDA is absent."""
    return pytest.mark.gpu(pytest.mark.skipif(not CUDA, reason=NO_CUDA)(test))

# bf16 vs fp32, the first 5 steps' losses: mean relative difference under 1% (measured with the CPU's
# bf16 autocast: 0.3%; fp32 from another initialisation: 1.7%). Later steps drift apart, as any two runs do.
LOSS_RTOL = 0.01
LOGITS_TOL = 1e-3  # fp32 logits, CUDA vs CPU, TF32 off: atol = rtol (float32 reorderings give ~1e-5)
CAM_CORRELATION = 0.999  # Pearson correlation of Grad-CAM maps, CUDA vs CPU, fp32, TF32 off
RECIPE = {**TINY_RECIPE, "epochs": 3, "batch_size": 32}  # 10 steps per epoch on the tiny set


@pytest.fixture(autouse=True)
def restore_torch_switches():
    """Deterministic mode, cuDNN autotuning and TF32 are process-wide: put them back after each test."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    yield
    torch.use_deterministic_algorithms(saved[0])
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = saved[1:]


def no_tf32():
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False


def train(data_dir, out, device, deterministic=True, compile=False, precision="bf16", recipe=None):
    spec = engine.RunSpec(recipe={**RECIPE, **(recipe or {})}, recipe_name="baseline", seed=0, selection="best_test",
                          val_size=5000, deterministic=deterministic, precision=precision, compile=compile)
    return engine.train(data.load(data_dir), spec, out, device=device, log=lambda m: None)


# ---- comparisons: the logic, on any device --------------------------------------------------------------

def first_losses(ds, device, amp, steps=5, width=8, lr=0.05, seed=0) -> np.ndarray:
    """Losses of the first training steps, from one initialisation (made on the CPU) and one batch order."""
    torch.manual_seed(seed)
    model = resnet18(ds.num_classes, width).to(device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    recipe = {**RECIPE, "lr": lr}
    opt = engine.make_optimizer(model, recipe, torch.device(device))
    criterion = nn.CrossEntropyLoss()
    stats = engine.EpochStats(device)
    split = DeviceSplit(ds.train.images, ds.train.labels, device)
    losses = []
    model.train()
    for epoch in range(1, 10):
        for step, x, y in train_batches(split, 64, seed, epoch, channels_last=cuda):
            losses.append(engine.train_step(model, opt, criterion, amp, x, y, step, stats).item())
            if len(losses) == steps:
                return np.array(losses)


def losses_agree(a: np.ndarray, b: np.ndarray, rtol=LOSS_RTOL) -> bool:
    return bool(np.mean(np.abs(a - b) / np.abs(b)) <= rtol)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two sets of maps, all pixels of all maps together."""
    return float(np.corrcoef(a.cpu().double().flatten().numpy(), b.cpu().double().flatten().numpy())[0, 1])


def cpu_bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.slow  # bf16 autocast on this CPU: about 3 s a step
def test_bf16_loss_comparison_accepts_bf16_and_rejects_another_initialisation(tiny_data):
    ds = data.load(tiny_data)
    fp32 = first_losses(ds, "cpu", numerics.autocast_for(torch.device("cpu"), "fp32"))
    assert losses_agree(first_losses(ds, "cpu", cpu_bf16), fp32)
    assert not losses_agree(first_losses(ds, "cpu", numerics.autocast_for(torch.device("cpu"), "fp32"), seed=1), fp32)


def test_cam_correlation_is_one_for_the_same_maps_and_low_for_another_model(tiny_data):
    ds = data.load(tiny_data)
    torch.manual_seed(0)
    model, other = resnet18(ds.num_classes, 8), resnet18(ds.num_classes, 8)
    images = DeviceSplit(ds.test.images[:16], ds.test.labels[:16], "cpu").normalise(
        torch.as_tensor(ds.test.images[:16]).permute(0, 3, 1, 2))
    classes = torch.as_tensor(ds.test.labels[:16])
    maps = cam.grad_cam(model, images, classes)
    assert correlation(maps, cam.grad_cam(model, images, classes)) > CAM_CORRELATION
    assert correlation(maps, cam.grad_cam(other, images, classes)) < CAM_CORRELATION


def test_cuda_nan_check_waits_for_its_step_then_names_the_first_bad_one():
    # The check's logic on CUDA (cuda=True), on CPU tensors: no sync before step CUDA_CHECK_EVERY.
    stats = engine.EpochStats("cpu")
    y = torch.tensor([0, 1])
    for step in range(engine.CUDA_CHECK_EVERY):
        loss = torch.tensor(float("nan") if step == 3 else 1.0)
        stats.add(step, loss, torch.zeros(2, 2), y)
        if step < engine.CUDA_CHECK_EVERY - 1:
            engine.check_finite(stats, 1, step, 391, cuda=True, where="last.pt")  # skipped: no sync
    with pytest.raises(Diverged, match=r"epoch 1, step 4 of 391"):
        engine.check_finite(stats, 1, engine.CUDA_CHECK_EVERY - 1, 391, cuda=True, where="last.pt")


# ---- on CUDA -------------------------------------------------------------------------------------------

@pytest.mark.slow
@gpu
def test_tiny_workflow_runs_end_to_end_on_cuda(tmp_path):
    snakefile, config = REPO / "Snakefile", REPO / "tests" / "tiny.yaml"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(tmp_path), "--configfile", str(config),
           "--cores", "8", "--resources", "gpu=1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, f"{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    missing = [f for f in workflow_outputs(snakefile, tmp_path, config) if not (tmp_path / f).is_file()]
    assert not missing
    for seed in (0, 1):
        run = tmp_path / f"results/baseline/seed{seed}"
        assert "on cuda" in (run / "logs/train.log").read_text()
        predictions = np.load(run / "predictions.npz")
        assert (predictions["logits"].argmax(1) == predictions["labels"]).mean() > 0.3  # chance is 0.1


@pytest.fixture(scope="module")
def cuda_run(tiny_data, tmp_path_factory):
    """One deterministic training on CUDA (3 epochs of 10 steps, width 8): its folder."""
    if not CUDA:
        pytest.skip(NO_CUDA)
    out = tmp_path_factory.mktemp("cuda_run")
    saved = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    train(tiny_data, out, "cuda")
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.benchmark = saved[1]
    return out


@gpu
def test_bf16_and_fp32_first_steps_agree_on_cuda(tiny_data):
    ds = data.load(tiny_data)
    device = torch.device("cuda")
    losses = {}
    for precision in ("fp32", "bf16"):
        numerics.set_precision(precision)  # TF32 off for fp32, as in training
        losses[precision] = first_losses(ds, "cuda", numerics.autocast_for(device, precision))
    fp32, bf16 = losses["fp32"], losses["bf16"]
    assert losses_agree(bf16, fp32), np.round(np.abs(bf16 - fp32) / fp32, 4)


@gpu
def test_compiled_model_trains_and_evaluates_on_cuda(tmp_path):
    # 256 / 64: no partial batch, so two graphs compile (training, evaluation), as few as can be.
    data.write_synthetic(tmp_path / "data", train_size=256, test_size=100, num_classes=10, num_coarse=5)
    metrics = train(tmp_path / "data", tmp_path / "run", "cuda", deterministic=False, compile=True,
                    recipe={"epochs": 2, "batch_size": 64})
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 3
    assert 0.0 <= metrics["test_acc"] <= 1.0 and np.isfinite(metrics["test_loss"])
    assert checkpoint.load(tmp_path / "run" / "model.pt")["state_dict"]  # plain weights, no compile wrapper
    keys = checkpoint.load(tmp_path / "run" / "model.pt")["state_dict"].keys()
    assert not any(k.startswith("_orig_mod") for k in keys)


@gpu
def test_deterministic_cuda_runs_are_bit_identical(tiny_data, tmp_path, cuda_run):
    train(tiny_data, tmp_path, "cuda")
    assert same_weights(tmp_path / "model.pt", cuda_run / "model.pt")
    assert same_weights(tmp_path / "last.pt", cuda_run / "last.pt")


@gpu
def test_sigusr1_mid_epoch_then_rerun_is_bit_identical_on_cuda(tiny_data, tmp_path, cuda_run, monkeypatch):
    real_step = signal_after_steps(monkeypatch, 14)  # epoch 2, step 4 of 10
    with pytest.raises(Preempted):
        train(tiny_data, tmp_path, "cuda")
    assert checkpoint.load(tmp_path / "last.pt")["position"] == {"epoch": 2, "step": 4}
    monkeypatch.setattr(engine, "train_step", real_step)
    train(tiny_data, tmp_path, "cuda")
    assert same_weights(tmp_path / "model.pt", cuda_run / "model.pt")


@gpu
def test_evaluation_logits_on_cuda_match_the_cpu(tiny_data, cuda_run):
    no_tf32()
    ds = data.load(tiny_data)
    amp = numerics.autocast_for(torch.device("cpu"), "fp32")
    logits = {}
    for device in ("cpu", "cuda"):
        model, _ = checkpoint.load_model(cuda_run / "model.pt", device=device, class_names=ds.fine_names)
        split = DeviceSplit(ds.test.images, ds.test.labels, device)
        logits[device] = engine.predict(model, split, amp, channels_last=device == "cuda")
    torch.testing.assert_close(logits["cuda"], logits["cpu"], atol=LOGITS_TOL, rtol=LOGITS_TOL)


@gpu
def test_grad_cam_on_cuda_matches_the_cpu(tiny_data, cuda_run):
    no_tf32()
    ds = data.load(tiny_data)
    maps = {}
    for device in ("cpu", "cuda"):
        model, _ = checkpoint.load_model(cuda_run / "model.pt", device=device, class_names=ds.fine_names)
        split = DeviceSplit(ds.test.images, ds.test.labels, device)
        images = split.normalise(split.images)
        maps[device] = cam.grad_cam(model, images, split.labels, "layer4")
    assert correlation(maps["cuda"], maps["cpu"]) > CAM_CORRELATION


@gpu
def test_a_forced_nan_stops_cuda_training(tiny_data, tmp_path, monkeypatch):
    real_step, calls = engine.train_step, []

    def step_then_poison(net, *args):
        out = real_step(net, *args)
        calls.append(1)
        if len(calls) == 3:  # the 4th step's loss is NaN
            with torch.no_grad():
                next(net.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(engine, "train_step", step_then_poison)
    with pytest.raises(Diverged, match=r"diverged at epoch 1, step 4 of 10"):
        train(tiny_data, tmp_path, "cuda", deterministic=False)
    assert not (tmp_path / "model.pt").exists()
