"""The tensor pipeline is the notebook's augmentation: same windows, same distribution, same batches.

Plus a smoke run of scripts/bench.py with tiny flags.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from cifar100.pipeline import (MEAN, PAD, SIZE, STD, DeviceSplit, crop_flip,  # noqa: E402
                               epoch_plan, eval_batches, num_batches, train_batches)

CHI2_8DOF_P001 = 26.12  # chi-square critical value, 8 degrees of freedom, p = 0.001


def random_images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8), rng.integers(0, 100, n)


def coordinate_images(n):
    """Channel 0 holds row + 1, channel 1 holds column + 1 (1..32), channel 2 is 200: padding reads 0."""
    ar = np.arange(1, SIZE + 1, dtype=np.uint8)
    img = np.stack([np.repeat(ar[:, None], SIZE, 1), np.repeat(ar[None, :], SIZE, 0),
                    np.full((SIZE, SIZE), 200, np.uint8)], axis=-1)
    return np.repeat(img[None], n, 0), np.arange(n)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


def chi2_uniform(values, k):
    counts = np.bincount(values, minlength=k)
    expected = len(values) / k
    return ((counts - expected) ** 2 / expected).sum()


def test_offsets_and_flips_have_the_notebooks_distribution():
    """Read back every crop's offsets and flip from coordinate images, through train_batches."""
    n = 4096
    split = DeviceSplit(*coordinate_images(n), "cpu")
    oy, ox, flipped = [], [], []
    for epoch in (1, 2):
        for _, x, _ in train_batches(split, 128, seed=3, epoch=epoch):
            u = to_uint8(x).long()
            # Output row PAD reads image row oy (always inside the image); column 16 likewise.
            oy.append(u[:, 0, PAD, SIZE // 2] - 1)
            mirrored = u[:, 1, SIZE // 2, PAD] > u[:, 1, SIZE // 2, SIZE - 1 - PAD]  # both inside the image
            # Unflipped, output column PAD shows image column ox; flipped, output column SIZE-1-PAD does.
            col = torch.where(mirrored, u[:, 1, SIZE // 2, SIZE - 1 - PAD], u[:, 1, SIZE // 2, PAD])
            ox.append(col - 1)
            flipped.append(mirrored)
    oy, ox, flipped = (torch.cat(v).numpy() for v in (oy, ox, flipped))
    draws = 2 * n
    assert oy.min() == 0 and oy.max() == 2 * PAD and ox.min() == 0 and ox.max() == 2 * PAD
    assert chi2_uniform(oy, 2 * PAD + 1) < CHI2_8DOF_P001
    assert chi2_uniform(ox, 2 * PAD + 1) < CHI2_8DOF_P001
    # Independence of the two axes: the 81 joint cells are uniform too (80 dof, p = 0.001: 124.8).
    assert chi2_uniform(oy * 9 + ox, 81) < 124.8
    assert abs(flipped.mean() - 0.5) < 4 * math.sqrt(0.25 / draws)
    # Flips independent of offsets: the flip rate is ~0.5 at either end of the offset range.
    for cells in (ox <= 3, ox >= 5):
        assert abs(flipped[cells].mean() - 0.5) < 4 * math.sqrt(0.25 / cells.sum())


def test_epoch_plan_draws_uniform_offsets_and_fair_flips():
    plan = epoch_plan(20_000, 128, 1, order_seed=0, augment_seed=0)
    for axis in range(2):
        assert chi2_uniform(plan.offsets[:, axis].numpy(), 9) < CHI2_8DOF_P001
    assert abs(plan.flips.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / 20_000)
    assert torch.equal(plan.order.sort().values, torch.arange(20_000))


@pytest.mark.parametrize("channels_last", [False, True])
def test_crops_are_the_padded_images_windows(channels_last):
    split = DeviceSplit(*random_images(50), "cpu")
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 50, (64,), generator=g)
    offsets = torch.randint(0, 2 * PAD + 1, (64, 2), generator=g)
    offsets[:4] = torch.tensor([[0, 0], [8, 8], [0, 8], [8, 0]])  # the corners
    flips = torch.rand(64, generator=g) < 0.5
    flips[:2] = torch.tensor([True, False])
    out = crop_flip(split.padded, idx, offsets, flips, channels_last=channels_last)
    assert out.shape == (64, 3, SIZE, SIZE) and out.dtype == torch.uint8
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for k in range(64):
        (r, c), i = offsets[k].tolist(), idx[k]
        window = split.padded[i, :, r:r + SIZE, c:c + SIZE]
        expected = window.flip(-1) if flips[k] else window
        assert torch.equal(out[k], expected), f"crop {k}"


def test_padding_is_zero_and_the_centre_is_the_image():
    images, labels = random_images(8)
    split = DeviceSplit(images, labels, "cpu")
    assert split.padded.shape == (8, 3, SIZE + 2 * PAD, SIZE + 2 * PAD)
    assert torch.equal(split.images.permute(0, 2, 3, 1), torch.from_numpy(images))
    border = split.padded.clone()
    border[:, :, PAD:PAD + SIZE, PAD:PAD + SIZE] = 0
    assert border.sum() == 0


def test_matches_torchvision_transforms_for_the_same_crop_and_flip():
    """RandomCrop(padding=4) + RandomHorizontalFlip + ToTensor + Normalize with fixed parameters."""
    images, labels = random_images(16, seed=5)
    split = DeviceSplit(images, labels, "cpu")
    idx = torch.arange(16)
    offsets = torch.randint(0, 2 * PAD + 1, (16, 2), generator=torch.Generator().manual_seed(2))
    flips = torch.arange(16) % 2 == 0
    ours = split.normalise(crop_flip(split.padded, idx, offsets, flips))
    to_tensor_norm = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    for k in range(16):
        img = TF.crop(TF.pad(Image.fromarray(images[k]), PAD, fill=0), *offsets[k].tolist(), SIZE, SIZE)
        if flips[k]:
            img = TF.hflip(img)
        torch.testing.assert_close(ours[k], to_tensor_norm(img), atol=1e-5, rtol=0)


def test_eval_batches_are_torchvision_normalised_and_in_order():
    images, labels = random_images(300, seed=7)
    split = DeviceSplit(images, labels, "cpu")
    xs, ys = zip(*eval_batches(split, batch_size=128))
    assert [len(y) for y in ys] == [128, 128, 44]
    expected = torch.stack([T.Normalize(MEAN, STD)(T.ToTensor()(im)) for im in images])
    torch.testing.assert_close(torch.cat(xs), expected, atol=1e-5, rtol=0)
    assert torch.equal(torch.cat(ys), torch.as_tensor(labels))


@pytest.mark.parametrize("n, batch_size", [(1000, 128), (1024, 128), (50_000, 128), (7, 128)])
def test_batches_like_a_dataloader_without_drop_last(n, batch_size):
    loader = torch.utils.data.DataLoader(torch.arange(n), batch_size=batch_size, shuffle=True, drop_last=False)
    assert num_batches(n, batch_size) == len(loader)
    if n > 2000:
        return
    split = DeviceSplit(*coordinate_images(n), "cpu")
    sizes = [len(y) for _, _, y in train_batches(split, batch_size, seed=0, epoch=1)]
    assert sizes == [len(b) for b in loader]


def test_each_epoch_is_a_permutation():
    n = 1000
    split = DeviceSplit(*coordinate_images(n), "cpu")  # labels are the image indices
    orders = []
    for epoch in (1, 2):
        y = torch.cat([y for _, _, y in train_batches(split, 128, seed=0, epoch=epoch)])
        assert torch.equal(y.sort().values, torch.arange(n))
        orders.append(y)
    assert not torch.equal(orders[0], orders[1])


def test_same_seed_and_epoch_give_the_same_batches():
    split = DeviceSplit(*random_images(500, seed=1), "cpu")

    def epoch(seed, e, start=0):
        return [(s, x, y) for s, x, y in train_batches(split, 128, seed=seed, epoch=e, start=start)]

    a, b = epoch(0, 1), epoch(0, 1)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (_, xa, ya), (_, xb, yb) in zip(a, b))
    other = epoch(0, 2)
    assert not torch.equal(torch.cat([x for _, x, _ in a]), torch.cat([x for _, x, _ in other]))
    other_seed = epoch(1, 1)
    assert not torch.equal(torch.cat([y for _, _, y in a]), torch.cat([y for _, _, y in other_seed]))
    # Resuming at step 2 replays exactly the rest of the epoch.
    resumed = epoch(0, 1, start=2)
    assert [s for s, _, _ in resumed] == [2, 3]
    assert all(torch.equal(xa, xr) for (_, xa, _), (_, xr, _) in zip(a[2:], resumed))


def test_channels_last_batches_hold_the_same_values():
    split = DeviceSplit(*random_images(300, seed=2), "cpu")
    plain = list(train_batches(split, 128, seed=0, epoch=1))
    cl = list(train_batches(split, 128, seed=0, epoch=1, channels_last=True))
    for (_, xp, yp), (_, xc, yc) in zip(plain, cl):
        assert xc.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(xp, xc) and torch.equal(yp, yc)


def test_bench_runs_end_to_end_and_writes_json(tmp_path):
    import bench

    out = tmp_path / "bench.json"
    results = bench.main(["--device", "cpu", "--steps", "2", "--width", "4", "--n", "512", "--eval-n", "300",
                          "--data-batches", "3", "--threads", "1", "--json", str(out)])
    written = json.loads(out.read_text())
    assert written["device"] == "cpu" and written["width"] == 4 and written["n"] == 512
    for pipeline in ("project", "reference"):
        for key in ("data_ips", "train_ips", "eval_ips", "peak_memory_bytes", "projected_100_epochs_s"):
            assert written[pipeline][key] > 0, (pipeline, key)
    for key in ("data_ips", "train_ips", "eval_ips"):
        assert written["ratios"][key] == pytest.approx(written["project"][key] / written["reference"][key])
    assert set(written["targets"]) == {"data_ratio", "train_ratio", "eval_ratio"}
    # Each recipe augmentation timed beside plain crop+flip, its extra time as a share of a step.
    a = written["project"]
    assert set(a["augmentations"]) == set(bench.AUGMENTATIONS)
    for aug in a["augmentations"].values():
        assert aug["data_ips"] > 0
        assert aug["extra_us_per_image"] == pytest.approx(1e6 * (1 / aug["data_ips"] - 1 / a["augment_plain_ips"]))
        assert aug["overhead_pct"] == pytest.approx(100 * aug["extra_us_per_image"] * 1e-6 * a["train_ips"])
    assert written["ratios"] == pytest.approx(results["ratios"])


def test_bench_help_states_every_default():
    import bench

    for action in bench.build_parser()._actions:
        if action.dest != "help":
            assert "default" in action.help, action.dest
