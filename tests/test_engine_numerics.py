"""What changes the arithmetic, checked on the CPU: the epoch plan's generator, RNG states,
determinism and TF32 switches, bf16 on the chosen GPU, compile refusals, thread count."""

import pytest
import torch

from cifar100 import checkpoint, engine, numerics, pipeline, resume
from cifar100.exceptions import ConfigError
from helpers import TINY_RECIPE


def _spec(**kw):
    settings = {"recipe": dict(TINY_RECIPE), "recipe_name": "baseline", "seed": 0, "selection": "best_test",
                "val_size": 50, "deterministic": False, "precision": "bf16", "compile": False, **kw}
    return engine.RunSpec(**settings)


def test_the_epoch_plan_is_drawn_on_the_cpu_and_only_copied_to_the_device():
    aug = pipeline.Augment(cutout=8, mixup=1.0, num_classes=10)
    plan = pipeline.epoch_plan(500, 64, 2, order_seed=3, augment_seed=4, augment=aug)
    tensors = ("order", "offsets", "flips", "cutout", "partners")
    assert {getattr(plan, k).device.type for k in tensors} == {"cpu"}
    o = plan.order
    visiting = plan.in_visiting_order("cpu")
    assert torch.equal(visiting.order, o) and torch.equal(visiting.offsets, plan.offsets[o])
    assert torch.equal(visiting.flips, plan.flips[o]) and torch.equal(visiting.cutout, plan.cutout[o])
    # Another device receives a copy: nothing is drawn there (a "meta" tensor holds no numbers at all).
    meta = plan.in_visiting_order("meta")
    assert [getattr(meta, k).device.type for k in tensors] == ["meta"] * 5
    assert [getattr(meta, k).shape for k in tensors] == [getattr(visiting, k).shape for k in tensors]
    assert meta.lam is plan.lam  # read as host numbers by each step: no device sync


def test_rng_state_holds_no_cuda_states_and_restores_even_with_more_gpus_saved_than_seen(tmp_path):
    state = resume.rng_state()
    assert set(state) == {"python", "numpy_keys", "numpy_pos", "torch"}
    checkpoint.save(tmp_path / "s.pt", {"rng": resume._to_python(state)})
    saved = checkpoint.load(tmp_path / "s.pt")["rng"]
    first = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    # An attempt that saw four GPUs wrote one CUDA state each (older last.pt): ignored, no IndexError.
    resume.set_rng_state({**saved, "cuda": [torch.zeros(16, dtype=torch.uint8)] * 4})
    again = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


def test_a_missing_compile_toolchain_is_one_line_before_training(tiny_data, tmp_path, monkeypatch):
    def compile_without_toolchain(fn, **kw):
        def run(*a):
            raise RuntimeError("backend='inductor' raised:\n/tmp/tmpab/main.c:1:10: fatal error: cuda.h: "
                               "No such file or directory\n    1 | #include \"cuda.h\"\ncompilation terminated.")
        return run

    monkeypatch.setattr(torch, "compile", compile_without_toolchain)
    from cifar100 import data

    with pytest.raises(ConfigError) as e:
        engine.train(data.load(tiny_data), _spec(compile=True), tmp_path, device="cpu", log=lambda m: None)
    message = str(e.value)
    assert "\n" not in message and "fatal error: cuda.h: No such file or directory" in message
    assert "install" in message and "or set compile: false" in message
    assert not (tmp_path / "last.pt").exists()


def test_determinism_switches_are_set_both_ways():
    try:
        numerics.set_determinism(True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert torch.utils.deterministic.fill_uninitialized_memory is False  # no extra fill kernel
        numerics.set_determinism(False)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
        assert not torch.backends.cudnn.deterministic
    finally:
        numerics.set_determinism(False)


def test_fp32_turns_tf32_off_and_bf16_keeps_torchs_defaults():
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        numerics.set_precision("fp32")
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
        numerics.set_precision("bf16")
        assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


def test_bf16_is_checked_on_the_chosen_gpu_not_the_current_one(monkeypatch):
    capability = {0: (9, 0), 1: (7, 5)}  # cuda:0 an H100, cuda:1 a T4
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: capability[torch.device(d).index])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: f"gpu {torch.device(d).index}")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: pytest.fail("looks at the current device"))
    logs = []
    assert numerics.resolve_precision(torch.device("cuda:0"), "bf16", logs.append) == "bf16"
    assert numerics.resolve_precision(torch.device("cuda:1"), "bf16", logs.append) == "fp32"
    assert logs == ["gpu 1 has no native bf16: training in fp32"]


def test_a_deterministic_cpu_run_uses_the_fixed_thread_count_and_gives_the_old_one_back():
    before = torch.get_num_threads()
    other = 2 if numerics.DETERMINISTIC_CPU_THREADS != 2 else 3
    torch.set_num_threads(other)
    try:
        with numerics.numerics(True, "bf16", torch.device("cpu"), lambda m: None) as precision:
            assert torch.get_num_threads() == numerics.DETERMINISTIC_CPU_THREADS and precision == "fp32"
            assert numerics.arithmetic(torch.device("cpu"), precision)["threads"] == numerics.DETERMINISTIC_CPU_THREADS
        assert torch.get_num_threads() == other
        with numerics.numerics(False, "bf16", torch.device("cpu"), lambda m: None):
            assert torch.get_num_threads() == other  # left to the user (train.py --threads)
    finally:
        torch.set_num_threads(before)
        numerics.set_determinism(False)


def test_arithmetic_names_what_changes_the_numbers():
    a = numerics.arithmetic(torch.device("cpu"), "fp32")
    assert a["torch"] == str(torch.__version__) and a["device"] == "cpu" and a["precision"] == "fp32"
    assert a["cpu_capability"] and a["threads"] >= 1 and len(a["training_code"]) == 64


def test_eval_batches_are_one_copy_into_the_models_layout_and_a_reused_crop_table_changes_no_batch():
    images = torch.randint(0, 256, (20, 32, 32, 3), dtype=torch.uint8).numpy()
    split = pipeline.DeviceSplit(images, list(range(20)), "cpu")
    plain = torch.cat([x for x, _ in pipeline.eval_batches(split, 8)])
    last = [x for x, _ in pipeline.eval_batches(split, 8, channels_last=True)]
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in last)
    assert torch.equal(torch.cat(last), plain)
    # Every batch gathers through one table of window offsets, kept between calls: three passes over
    # the same epoch give the same crops (how often it is built is the pipeline's business).
    passes = [[x for _, x, _ in pipeline.train_batches(split, 8, seed=0, epoch=1)] for _ in range(3)]
    assert len(passes[0]) == 3 and all(torch.equal(a, b) for p in passes[1:] for a, b in zip(passes[0], p))
    table = pipeline._window_offsets(3, 40, 40, torch.device("cpu"), False, torch.int32)
    assert table.dtype == torch.int32
