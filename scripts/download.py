#!/usr/bin/env python
"""Make sure a dataset is in place, and write the manifest that the workflow's rules depend on.

    python scripts/download.py --data-dir data                        # real CIFAR-100 (md5-checked)
    python scripts/download.py --data-dir data --dataset synthetic --num-classes 10
    python scripts/download.py --data-dir data --manifest results/datasets/cifar100.json

Real data lives in {data-dir}/cifar-100-python/; a synthetic set in its own folder,
{data-dir}/synthetic-<key>/cifar-100-python/, keyed by its settings. A complete folder is used as
it is and never written to (clusters pre-stage data, read-only is fine); a partial one is an error
naming the missing file. A missing one is written into a temporary folder and renamed into place
when complete, so two workflows sharing a data folder never see half a dataset or each other's
temporary files. The manifest (path, content version, file sizes, classes) is the only file of
this step that the workflow owns.
"""

import argparse
import json

from cifar100 import config, data
from cifar100.cli import run_cli
from cifar100.files import write_json

SYNTHETIC = ["train_size", "test_size", "num_classes", "num_coarse", "seed", "noise"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=config.default("data_dir"),
                   help="folder that holds the datasets (default: %(default)s)")
    p.add_argument("--dataset", choices=["cifar100", "synthetic"], default=config.default("dataset"),
                   help="the real data or a synthetic set (default: %(default)s)")
    p.add_argument("--synthetic", default="{}",
                   help="synthetic settings as JSON, any of " + ", ".join(SYNTHETIC) +
                   " (default: {}; missing keys take the config schema's defaults)")
    p.add_argument("--manifest", help="also write this manifest JSON (default: none)")
    return p.parse_args(argv)


def synthetic_settings(text: str) -> dict:
    """The synthetic section, validated and completed by the config schema."""
    try:
        given = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, or nested too deeply
        raise config.ConfigError(f"--synthetic: not valid JSON ({e or 'nested too deeply'})") from e
    return config.validate_section("synthetic", given)


def main(argv=None):
    a = parse_args(argv)
    if a.dataset == "synthetic":
        settings = synthetic_settings(a.synthetic)
        where = data.synthetic_dir(a.data_dir, settings)

        def write(tmp):
            data.write_synthetic(tmp, **settings)
    else:
        where = a.data_dir

        def write(tmp):
            data.download(tmp)

    if not data.dataset_dir(where).exists():
        data.put_in_place(where, write)  # says whether this copy or a racing writer's is used
    root = data.check_complete(where)
    ds = data.load(where)  # fail here, on the login node, rather than in a GPU job
    print(f"using {root}: {len(ds.train)} train / {len(ds.test)} test images, {ds.num_classes} classes")
    if a.manifest:
        write_json(a.manifest, {
            "data_dir": str(where), "folder": str(root.resolve()), "dataset": a.dataset,
            "version": data.content_version(where),
            "files": {f: (root / f).stat().st_size for f in data.FILES},
            "train_images": len(ds.train), "test_images": len(ds.test), "classes": ds.fine_names,
            "superclasses": ds.coarse_names,
        })


if __name__ == "__main__":
    run_cli(main)
