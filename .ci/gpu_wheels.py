#!/usr/bin/env python
"""Wheels for scripts/gpu_check.sh on a GPU machine without network (standard library only).

    python .ci/gpu_wheels.py prepare .gpu_wheels                    # here, with PyPI: download, check offline
    python .ci/gpu_wheels.py install .gpu_wheels /tmp/gpu_check_site   # there: what its python3 lacks

The GPU machine's python3 (CPython 3.12, x86-64 Linux) holds torch, numpy, pytest, pyyaml, ...
but not snakemake or jsonschema. They are pinned to the versions installed here, which the CPU
suite runs with, and installed into a folder put on PYTHONPATH, so pip never touches its packages.
"""

import json
import re
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

MISSING = ["snakemake", "jsonschema"]
TARGET = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--platform",
          "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64"]
LIMIT_MB = 40  # the folder travels with the working tree to the GPU machine (64 MiB in all)


def pip(*args, check=True, isolated=True) -> subprocess.CompletedProcess:
    # --isolated: no pip config or PIP_* variables (extra indexes, find-links), so that what resolves
    # offline resolves from the folder alone; downloads use this machine's configuration.
    cmd = [sys.executable, "-m", "pip", *(["--isolated"] if isolated else []), *args]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode:
        sys.exit(f"gpu_wheels: pip {' '.join(args[:3])} ... failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()  # a distribution's name as wheel files spell it


def resolve(wheels: Path, for_gpu_machine: bool) -> set[str]:
    """What pip would install from the folder alone (dry run): for the GPU machine's Python and
    platform, or for the running python3, against its installed packages."""
    with tempfile.TemporaryDirectory() as tmp:
        target = ["--ignore-installed", "--target", f"{tmp}/site", *TARGET] if for_gpu_machine else []
        pip("install", "--dry-run", "--no-index", "--find-links", str(wheels), "--report", f"{tmp}/r.json", *target,
            "-r", str(wheels / "requirements.txt"))
        return {norm(item["metadata"]["name"]) for item in json.loads(Path(tmp, "r.json").read_text())["install"]}


def prepare(wheels: Path) -> None:
    wheels.mkdir(exist_ok=True)
    (wheels / "requirements.txt").write_text("".join(f"{n}=={version(n)}\n" for n in MISSING))
    built = []
    while True:  # each round builds one pure-Python wheel that PyPI has as a source only
        p = pip("download", "-d", str(wheels), "--find-links", str(wheels), *TARGET, "-r",
                str(wheels / "requirements.txt"), check=False, isolated=False)
        if p.returncode == 0:
            break
        m = re.search(r"satisfies the requirement (\S+)", p.stderr)
        if not m or m[1] in built:
            sys.exit(f"gpu_wheels: pip download failed:\n{p.stderr[-3000:]}")
        built.append(m[1])
        pip("wheel", "--no-deps", "-w", str(wheels), m[1], isolated=False)
    names = resolve(wheels, for_gpu_machine=True)
    size = sum(f.stat().st_size for f in wheels.iterdir()) / 2**20
    print(f"{wheels}: {len(names)} packages resolve offline for CPython 3.12, {size:.1f} MB")
    if size > LIMIT_MB:
        sys.exit(f"gpu_wheels: {wheels} is {size:.1f} MB, over the {LIMIT_MB} MB it may take")


def install(wheels: Path, site: Path) -> None:
    """Only what pip would add to the running python3 (resolved against its packages) goes to ``site``."""
    names = resolve(wheels, for_gpu_machine=False)
    files = [str(f) for f in sorted(wheels.glob("*.whl")) if norm(f.name.split("-")[0]) in names]
    if len(files) != len(names):
        sys.exit(f"gpu_wheels: pip resolved {sorted(names)}, but {wheels} holds {files}")
    if files:
        pip("install", "--no-index", "--no-deps", "--no-compile", "--target", str(site), *files)
    print(f"installed into {site}: {', '.join(sorted(names)) or 'nothing (all present)'}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["prepare"] and len(sys.argv) == 3:
        prepare(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["install"] and len(sys.argv) == 4:
        install(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
