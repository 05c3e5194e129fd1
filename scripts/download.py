#!/usr/bin/env python
"""Put CIFAR-100 in {data_dir}/cifar-100-python/: download it, or generate a synthetic stand-in.

    python scripts/download.py --data-dir data                        # real data (md5-checked)
    python scripts/download.py --data-dir data --dataset synthetic --num-classes 10

An existing folder with train, test and meta is used as it is (clusters pre-stage data), after a
check that it loads.
"""

import argparse

from cifar100 import data
from cifar100.cli import run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data", help="folder that holds cifar-100-python/ (default: %(default)s)")
    p.add_argument("--dataset", choices=["cifar100", "synthetic"], default="cifar100",
                   help="download the real data or write a synthetic set (default: %(default)s)")
    p.add_argument("--train-size", type=int, default=2000, help="synthetic: training images (default: %(default)s)")
    p.add_argument("--test-size", type=int, default=500, help="synthetic: test images (default: %(default)s)")
    p.add_argument("--num-classes", type=int, default=10, help="synthetic: classes (default: %(default)s)")
    p.add_argument("--num-coarse", type=int, default=5, help="synthetic: superclasses (default: %(default)s)")
    p.add_argument("--synthetic-seed", type=int, default=0, help="synthetic: generator seed (default: %(default)s)")
    p.add_argument("--noise", type=float, default=0.35, help="synthetic: pixel noise std (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    root = data.dataset_dir(a.data_dir)
    if all((root / f).is_file() for f in ("train", "test", "meta")):
        ds = data.load(a.data_dir)
        print(f"using existing {root}: {len(ds.train)} train / {len(ds.test)} test images, {ds.num_classes} classes")
        return
    if a.dataset == "synthetic":
        data.write_synthetic(a.data_dir, a.train_size, a.test_size, a.num_classes, a.num_coarse,
                             a.synthetic_seed, a.noise)
        print(f"wrote synthetic dataset to {root}")
    else:
        data.download(a.data_dir)
        print(f"downloaded CIFAR-100 to {root}")
    data.load(a.data_dir)  # fail here, on the login node, rather than in a GPU job


if __name__ == "__main__":
    run_cli(main)
