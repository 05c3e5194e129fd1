"""scripts/gpu_check.sh and its helpers where there is no GPU: the no-device exit, the time plan,
the timing of concurrent trainings, the table, the offline wheel folder; bench.py's reuse of a
measured reference."""

import json
import os
import subprocess

import pytest

from helpers import REPO, SCRIPTS, load_script

gpu_check = load_script("gpu_check")
CHECK = SCRIPTS / "gpu_check.sh"


def sh(*args, **env):
    return subprocess.run(["bash", str(CHECK), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA device")
def test_without_cuda_the_check_says_so_and_exits_0(tmp_path):
    p = sh(str(tmp_path / "results"))
    assert p.returncode == 0, p.stderr
    assert "no CUDA device here" in p.stdout
    assert not (tmp_path / "results").exists()  # nothing measured, nothing written


def test_without_torch_the_check_fails_naming_the_python(tmp_path):
    p = sh(str(tmp_path / "results"), PYTHON="/usr/bin/false")
    assert p.returncode == 1 and "cannot import torch" in p.stderr


def test_every_stage_has_a_budget_and_all_fit_in_8_minutes():
    p = sh("--plan")
    assert p.returncode == 0
    rows = dict(line.split()[:2] for line in p.stdout.splitlines())
    total = int(rows.pop("total"))
    assert total == sum(int(v) for k, v in rows.items() if k != "dataset") and total < 8 * 60
    stages = set(rows)
    script = CHECK.read_text()
    for name in stages - {"table"}:
        assert f"stage {name} " in script, name  # every budget is used by a stage
    assert "\ntimeout " in script  # ... and the table too


@pytest.mark.slow  # two train.py subprocesses
def test_concurrent_trainings_are_timed_epoch_by_epoch(tiny_data, tmp_path):
    out = gpu_check.train(tiny_data, tmp_path / "runs", [0, 1], 2, tmp_path / "logs", device="cpu", width=8,
                          batch_size=64)
    assert out["ok"], [r["tail"] for r in out["runs"]]
    for run in out["runs"]:
        assert run["images"] == 300 and len(run["epoch_s"]) == 1 and run["first_epoch_s"] > 0
        assert len(run["train_s"]) == 2 and run["steady_epoch_s"] >= run["train_s"][1]  # + evaluation and saves
        assert run["last_pt_bytes"] > 0
        assert "epoch 2/2" in (tmp_path / "logs" / f"seed{run['seed']}.log").read_text()
    assert out["aggregate_ips_wall"] == pytest.approx(sum(300 / r["steady_epoch_s"] for r in out["runs"]))
    assert out["projected_100_epochs_s"] == pytest.approx(out["first_epoch_s"] + 99 * out["steady_epoch_s"])

    saved = gpu_check.time_save(tmp_path / "runs" / "seed0" / "last.pt", repeats=2)
    assert saved["bytes"] > 0.9 * out["runs"][0]["last_pt_bytes"] and len(saved["seconds"]) == 2
    assert not (tmp_path / "runs" / "seed0" / "save_timing.pt").exists()


def fake_results(folder, bench_cpu):
    """A results folder as gpu_check.sh leaves it, from one real CPU bench and made-up timings."""
    folder.mkdir()
    (folder / "stages.tsv").write_text("install\t30\t0\t12000\npytest\t130\t1\t95000\nbench_bf16\t45\t0\t30000\n"
                                       "pack4\t40\t124\t40000\nbench_fp32_compile\t45\tskipped\t-\n")
    (folder / "pytest.xml").write_text('<testsuites><testsuite tests="11" failures="1" errors="0" skipped="0">'
                                       '<testcase name="test_a"/><testcase name="test_b"><failure/></testcase>'
                                       '</testsuite></testsuites>')
    (folder / "bench_bf16.json").write_text(json.dumps(bench_cpu))
    runs = [{"seed": 0, "returncode": 0, "first_epoch_s": 10.0, "steady_epoch_s": 2.0, "epoch_s": [2.0, 2.0],
             "train_s": [5.0, 1.6, 1.6], "images_per_s": [10000, 31250, 31250], "test_acc": [0.1, 0.2, 0.3],
             "images": 50000, "last_pt_bytes": 135e6}]
    (folder / "train.json").write_text(json.dumps(gpu_check.summarise_runs({"epochs": 3, "runs": runs})))
    (folder / "pack2.json").write_text(json.dumps(gpu_check.summarise_runs({"epochs": 2, "runs": [
        {**runs[0], "steady_epoch_s": 3.0, "images_per_s": [1, 20000]}, {**runs[0], "seed": 1, "steady_epoch_s": 3.0,
                                                                         "images_per_s": [1, 20000]}]})))
    (folder / "save.json").write_text(json.dumps({"bytes": 135e6, "median_s": 0.5, "repeats": 5}))


def test_the_table_reports_every_stage_and_figure(tmp_path):
    bench = load_script("bench")
    results = bench.main(["--device", "cpu", "--steps", "1", "--width", "4", "--n", "512", "--eval-n", "300",
                          "--data-batches", "2", "--threads", "1"])
    fake_results(tmp_path / "r", results)
    text, summary = gpu_check.table(tmp_path / "r")
    assert "pytest" in text and "10 passed, 1 failed, 0 errors, 0 skipped (test_b)" in text
    assert "TIMEOUT" in text and "skipped (no time left)" in text
    assert "2.00 s per epoch = 1.60 s training + 0.40 s evaluation" in text
    assert "projected 100 epochs: 208 s" in text  # 10 + 99 * 2
    assert "135 MB in 0.50 s" in text and "= 25.0% of an epoch" in text
    assert summary["packing"]["1"]["aggregate_ips_wall"] == 25000
    assert summary["packing"]["2"]["aggregate_ips_wall"] == pytest.approx(2 * 50000 / 3)
    assert "1.33x" in text and summary["packing"]["4"] is None
    assert summary["targets"]["projected_100_epochs_s"] == {"value": 208.0, "target": "< 180", "pass": False}
    assert summary["targets"]["train_ips"]["value"] == results["project"]["train_ips"]


def test_bench_reuses_a_measured_reference_only_for_the_same_setting(tmp_path):
    bench = load_script("bench")
    flags = ["--device", "cpu", "--steps", "1", "--width", "4", "--n", "512", "--eval-n", "300", "--data-batches",
             "2", "--threads", "1"]
    bench.main([*flags, "--json", str(tmp_path / "a.json")])
    reused = bench.main([*flags, "--no-reference", "--reference-json", str(tmp_path / "a.json")])
    measured = json.loads((tmp_path / "a.json").read_text())["reference"]
    assert reused["reference"] == measured and reused["reference_source"].startswith("from ")
    assert reused["ratios"]["train_ips"] == pytest.approx(reused["project"]["train_ips"] / measured["train_ips"])
    alone = bench.main([*flags, "--no-reference"])
    assert alone["reference"] is None and alone["ratios"] == {} and "train_ratio" not in alone["targets"]
    with pytest.raises(bench.UserError, match="measured width 4, this run 8"):
        bench.main([*flags[:5], "8", *flags[6:], "--no-reference", "--reference-json", str(tmp_path / "a.json")])


WHEELS = REPO / ".gpu_wheels"


@pytest.mark.skipif(not (WHEELS / "requirements.txt").exists(),
                    reason="no .gpu_wheels/ here: made by scripts/gpu_check.sh --prepare (needs PyPI)")
def test_the_wheel_folder_resolves_offline_for_the_gpu_machine():
    names = gpu_check.check_offline(WHEELS)
    assert {"snakemake", "jsonschema"} <= set(names)
    assert not {"torch", "numpy"} & set(names)  # nothing that the GPU machine's torch stack holds
