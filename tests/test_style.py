"""What the Snakemake community checks in CI: the linter, the formatter, and ruff on the Python code."""

import subprocess
import sys

import pytest
from helpers import REPO


def run(*cmd):
    return subprocess.run([*cmd], capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.mark.slow  # runs snakemake
def test_snakemake_lint_is_clean():
    p = run(sys.executable, "-m", "snakemake", "--lint", "--configfile", "tests/tiny.yaml")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def test_snakefmt_check_passes():
    p = run(sys.executable, "-m", "snakefmt", "--check", "Snakefile")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def test_ruff_check_is_clean():
    p = run(sys.executable, "-m", "ruff", "check", "scripts", "tests")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
