"""scripts/gpu_check.sh and its helpers where there is no GPU: the no-device exit, the time plan,
the timing of concurrent trainings, the table and its one judge of the targets, the offline wheel
folder. (bench.py's own run: tests/test_pipeline.py.)"""

import os
import runpy
import subprocess

import pytest

from helpers import REPO, SCRIPTS, load_script

gpu_check, bench = load_script("gpu_check"), load_script("bench")
CHECK = SCRIPTS / "gpu_check.sh"


def sh(*args, **env):
    return subprocess.run(["bash", str(CHECK), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA device")
def test_without_cuda_the_check_says_so_and_exits_0(tmp_path):
    p = sh(str(tmp_path / "results"))
    assert p.returncode == 0 and "no CUDA device here" in p.stdout, p.stderr
    assert not (tmp_path / "results").exists()  # nothing measured, nothing written


def test_without_torch_the_check_fails_naming_the_python(tmp_path):
    p = sh(str(tmp_path / "results"), PYTHON="/usr/bin/false")
    assert p.returncode == 1 and "cannot import torch" in p.stderr


def test_every_stage_has_a_budget_and_all_fit_in_8_minutes():
    p = sh("--plan")
    rows = dict(line.split()[:2] for line in p.stdout.splitlines())
    total = int(rows.pop("total"))
    assert p.returncode == 0 and total == sum(int(v) for k, v in rows.items() if k != "dataset") and total < 8 * 60
    script = CHECK.read_text()
    assert all(f"stage {name} " in script for name in set(rows) - {"table"}) and "\ntimeout " in script


@pytest.mark.slow  # two train.py subprocesses
def test_concurrent_trainings_are_timed_epoch_by_epoch(tiny_data, tmp_path):
    out = gpu_check.train(tiny_data, tmp_path / "runs", [0, 1], 2, tmp_path / "logs", device="cpu", save_repeats=2,
                          width=8, batch_size=64)
    assert out["ok"], [r["tail"] for r in out["runs"]]
    for run in out["runs"]:
        assert run["images"] == 300 and len(run["epoch_end_s"]) == 2 and run["first_epoch_s"] > 0
        assert run["steady_epoch_s"] >= run["seconds"][1] and run["last_pt_bytes"] > 0  # + evaluation and saves
        assert "epoch 2/2" in (tmp_path / "logs" / f"seed{run['seed']}.log").read_text()
    assert out["aggregate_ips_wall"] == pytest.approx(sum(300 / r["steady_epoch_s"] for r in out["runs"]))
    assert out["projected_100_epochs_s"] == pytest.approx(out["first_epoch_s"] + 99 * out["steady_epoch_s"])
    assert out["save"]["bytes"] > 0.9 * out["runs"][0]["last_pt_bytes"] and len(out["save"]["seconds"]) == 2
    assert not (tmp_path / "runs" / "seed0" / "save_timing.pt").exists()


def test_the_table_reports_every_stage_and_figure_and_judges_the_targets(tmp_path):
    measured = bench.main(["--device", "cpu", "--steps", "1", "--width", "4", "--n", "512", "--eval-n", "300",
                           "--data-batches", "3", "--threads", "1", "--json", str(tmp_path / "bench_bf16.json")])
    (tmp_path / "stages.tsv").write_text("install\t30\t0\t12000\npytest\t130\t1\t95000\nbench_bf16\t45\t0\t30000\n"
                                         "pack4\t40\t124\t40000\nbench_fp32_compile\t45\tskipped\t-\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "pytest.log").write_text("FAILED tests/test_gpu.py::test_b - AssertionError\n"
                                                  "=== 10 passed, 1 failed in 95.1s ===\n")
    run = {"seed": 0, "returncode": 0, "epoch_end_s": [10.0, 12.0, 14.0], "seconds": [5.0, 1.6, 1.6],
           "images_per_s": [10000, 31250, 31250], "test_acc": [0.1, 0.2, 0.3], "images": 50000, "last_pt_bytes": 135e6}
    one = gpu_check.summarise({"epochs": 3, "runs": [run]})
    gpu_check.write_json(tmp_path / "train.json", {**one, "save": {"bytes": 135e6, "median_s": 0.5, "repeats": 5}})
    two = [{**run, "seed": s, "epoch_end_s": [10.0, 13.0], "images_per_s": [1, 20000]} for s in (0, 1)]
    gpu_check.write_json(tmp_path / "pack2.json", gpu_check.summarise({"epochs": 2, "runs": two}))
    text, summary = gpu_check.table(tmp_path)
    assert "10 passed, 1 failed in 95.1s (test_b)" in text
    assert "TIMEOUT" in text and "skipped (no time left)" in text
    assert "2.00 s per epoch = 1.60 s training + 0.40 s evaluation" in text
    assert "projected 100 epochs: 208 s" in text  # 10 + 99 * 2
    assert "135 MB in 0.50 s" in text and "= 25.0% of an epoch" in text
    assert summary["packing"]["1"]["aggregate_ips_wall"] == 25000
    assert summary["packing"]["2"]["aggregate_ips_wall"] == pytest.approx(2 * 50000 / 3)
    assert "1.33x" in text and summary["packing"]["4"] is None
    assert "extra time as a share of a training step: cutout 8 " in text  # each augmentation beside crop+flip
    # bench.judge, the one judge: < 180 fails at 208; the bench's own train_ips and ratio pass through.
    assert summary["targets"]["projected_100_epochs_s"] == {"value": 208.0, "target": "< 180", "pass": False}
    assert summary["targets"]["train_ips"] == {"value": measured["project"]["train_ips"], "target": ">= 30000",
                                               "pass": False}
    assert summary["targets"]["train_ratio"]["value"] == measured["ratios"]["train_ips"]
    assert bench.judge({"train_ips": 30_000.0}, "cuda")["train_ips"]["pass"] is True
    assert bench.judge({}, "cuda")["train_ips"]["pass"] is None


WHEELS = REPO / ".gpu_wheels"


@pytest.mark.skipif(not (WHEELS / "requirements.txt").exists(),
                    reason="no .gpu_wheels/ here: made by scripts/gpu_check.sh --prepare (needs PyPI)")
def test_the_wheel_folder_resolves_offline_for_the_gpu_machine():
    names = runpy.run_path(str(REPO / ".ci" / "gpu_wheels.py"))["resolve"](WHEELS, for_gpu_machine=True)
    assert {"snakemake", "jsonschema"} <= names and not {"torch", "numpy"} & names
