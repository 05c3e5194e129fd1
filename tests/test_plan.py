"""What the Snakefile works out from the config before it plans a job (cifar100.plan)."""

import copy

import pytest

from cifar100 import config as cfg
from cifar100 import data, plan


@pytest.fixture
def conf():
    c = copy.deepcopy(cfg.load(cfg.REPO_CONFIG))
    c["runs"] = ["baseline"]
    return c


def test_official_data_writes_to_results_and_other_data_apart(conf, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the md5 cache goes to ./.snakemake
    assert plan.data_version(conf, tmp_path / "not yet downloaded") == data.OFFICIAL
    assert plan.results_root(data.OFFICIAL) == "results"
    version = plan.data_version(conf, tiny_data)  # a copy that is not the official files
    assert version.startswith("md5-") and plan.results_root(version) == f"results/{version}"
    assert (tmp_path / plan.MD5_CACHE).is_file()
    conf.update(dataset="synthetic", data_dir="shared data")
    folder = plan.data_dir(conf)
    assert folder.startswith("shared data/synthetic-") and plan.data_version(conf, folder) == folder.split("/")[-1]


def test_val_size_is_passed_only_when_the_selection_holds_images_out(conf):
    conf.update(selection="best_test", val_size=5000)
    assert plan.val_size_args(conf) == []
    conf["selection"] = "best_val"
    assert plan.val_size_args(conf) == ["--val-size", 5000]


def test_study_figures_join_the_report_only_with_something_to_show(conf):
    base = conf["recipes"]["baseline"]
    conf["recipes"].update(a=dict(base), b={**base, "lr": 0.05}, a_init={**base, "vary": "init"})
    conf["runs"] = ["a"]
    assert not plan.has_pairs(conf) and not plan.has_families(conf)
    conf["runs"] = ["a", "a_init"]  # one recipe and its one-source variant: a family, no pair
    assert not plan.has_pairs(conf) and plan.has_families(conf)
    conf["runs"] = ["a", "b"]
    assert plan.has_pairs(conf) and plan.runs_json(conf).startswith('{"a": ')
    conf["runs"], conf["study"]["pairs"] = ["a"], [["a", "baseline"]]
    assert plan.has_pairs(conf) and plan.pairs_args(conf) == ["a:baseline"]
