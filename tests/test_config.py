"""The config as the Snakefile reads it (config.yaml, then each --configfile merged over it by
Snakemake's own loader and merge, then the Snakefile's checks), in this process: every bad value
of a config file stops the workflow with one line naming its key. tests/test_workflow.py gives one
of them to snakemake itself."""

import pytest
from helpers import REPO, check_config_as_the_snakefile_does

from cifar100.exceptions import ConfigError

TINY = REPO / "tests" / "tiny.yaml"
BAD_CONFIGS = [
    ("seeds: []", "config key seeds"),
    ("runs: [baseline, adamw]", "recipe 'adamw' is not defined"),
    ("recipes: {baseline: {epochs: 2.0}}", "config key recipes/baseline/epochs: 2.0 is not of type 'integer'"),
    ("recipes: {baseline: {width: 8.0}}", "config key recipes/baseline/width"),
    ("seeds: [4294967296]", "config key seeds/0"),
    ("recipes: {baseline: {lr: .nan}}", "config key recipes/baseline/lr"),
    ("recipes: {baseline: {lr: .inf}}", "config key recipes/baseline/lr"),
    ("recipes: {baseline: {width: 100000}}", "config key recipes/baseline/width"),
    ("analysis: {ece_bins: 1000000000}", "config key analysis/ece_bins"),
    ("analysis: {gradcam_layer: layer9}", "config key analysis/gradcam_layer"),
    ("selection: best_val\nval_size: 600", "config key val_size: 600 held-out images leave nothing"),
    ("compile: true\ndeterministic: true", "config key compile"),
    ("runs: ['base;touch x']", "config key runs/0"),
    ("synthetic: {num_coarse: 20}", "config key synthetic/num_coarse"),
]


@pytest.mark.parametrize("text, message", BAD_CONFIGS, ids=[b[0].split(":")[0] for b in BAD_CONFIGS])
def test_bad_config_is_one_line_naming_the_key(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        check_config_as_the_snakefile_does(tmp_path, TINY, bad)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_tiny_configs_pass_and_merge_over_config_yaml(tmp_path):
    """The checks above pass a good config: tests/tiny.yaml's keys replace config.yaml's, key by key."""
    config = check_config_as_the_snakefile_does(tmp_path, TINY)
    assert config["seeds"] == [0, 1] and config["dataset"] == "synthetic"
    assert config["recipes"]["baseline"]["epochs"] == 3 and config["recipes"]["baseline"]["momentum"] == 0.9
    assert "cosine" in config["recipes"]  # from config.yaml, untouched
    check_config_as_the_snakefile_does(tmp_path, TINY, REPO / "tests" / "study.yaml")
