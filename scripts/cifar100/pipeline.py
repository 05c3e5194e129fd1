"""The data pipeline: whole splits as uint8 tensors on the device, augmented in batches.

The notebook's per-image PIL transforms (RandomCrop(32, padding=4), RandomHorizontalFlip,
ToTensor, Normalize) become one gather per batch: each image gets a crop offset uniform in
0..8 on both axes of its zero-padded 40x40 copy and a flip with probability 0.5, and the
normalisation is one fused multiply-add. Same distribution as the notebook, ~10x+ faster.

A recipe may add, still batched on the device: cutout (DeVries & Taylor 2017: a square of side
``cutout`` set to zero after normalisation, its centre uniform over the image, clipped at the
border), mixup (Zhang et al. 2018: each batch blended with a permutation of itself, weight
lambda ~ Beta(alpha, alpha)) or CutMix (Yun et al. 2019: with probability ``cutmix_prob`` a box of
area about (1 - lambda) of the image pasted from the permuted batch, lambda then set to the
box's clipped area). Mixed batches come with soft targets, lambda * onehot(y) + (1 - lambda) *
onehot(y of the partner), which cross-entropy with label smoothing takes as they are.

Every random draw of an epoch comes from one of two CPU generators keyed by (seed, epoch): the
order generator draws the shuffle, the augment generator every augmentation (crop offsets,
flips, cutout squares, mixing lambdas, partners and boxes), so ``vary`` can fix either one and a
resumed epoch replays the same batches. Per-image draws are indexed by image, not by position:
with the augment seed fixed, an image gets the same crop, flip and square whatever the order.
Mixing draws are per step (lambda, box, partner position), so a new order pairs other images.
Crop offsets and flips are drawn first, so recipes that differ only in cutout or mixing share
them for the same seed.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
PAD = 4
SIZE = 32
# Stream ids of the generators: the same seed gives independent streams for each purpose.
STREAMS = {"init": 0, "order": 1, "augment": 2}


class DeviceSplit:
    """Images (uint8, zero-padded by PAD, NCHW) and labels held on ``device``."""

    def __init__(self, images_nhwc, labels, device):
        x = torch.as_tensor(images_nhwc).permute(0, 3, 1, 2)
        self.padded = torch.nn.functional.pad(x, (PAD,) * 4).contiguous().to(device)
        self.labels = torch.as_tensor(labels, dtype=torch.long).to(device)
        self.device = torch.device(device)
        std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -torch.tensor(MEAN, device=device).view(1, 3, 1, 1) / std

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> torch.Tensor:
        """The unpadded uint8 images (a view)."""
        return self.padded[:, :, PAD:PAD + SIZE, PAD:PAD + SIZE]

    def normalise(self, x_uint8: torch.Tensor, memory_format=torch.preserve_format) -> torch.Tensor:
        # One float copy, straight into ``memory_format`` (also from a strided view), then in
        # place: (x / 255 - mean) / std as a single multiply-add.
        x = x_uint8.to(torch.float32, memory_format=memory_format, copy=True)
        return x.mul_(self.scale).add_(self.shift)


@dataclass(frozen=True)
class Augment:
    """A recipe's augmentations beyond crop and flip; 0 turns one off."""

    cutout: int = 0  # side of the zeroed square, in pixels
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha)
    cutmix: float = 0.0  # alpha of CutMix's Beta(alpha, alpha)
    cutmix_prob: float = 0.5  # share of batches CutMix is applied to
    num_classes: int = 0  # width of the soft targets of mixed batches

    @classmethod
    def from_recipe(cls, r: dict, num_classes: int) -> "Augment":
        return cls(r.get("cutout", 0), r.get("mixup", 0.0), r.get("cutmix", 0.0), r.get("cutmix_prob", 0.5),
                   num_classes)

    def __post_init__(self):
        if self.mixup and self.cutmix:
            raise ValueError("mixup and cutmix are alternatives: set one of them to 0")
        if self.mixes and self.num_classes < 2:
            raise ValueError("mixed batches need num_classes for their soft targets")

    @property
    def mixes(self) -> bool:
        return bool(self.mixup or self.cutmix)


PLAIN = Augment()


def generator(stream: str, seed: int, epoch: int = 0) -> np.random.Generator:
    """A CPU generator that depends only on (stream, seed, epoch): resuming mid-run needs no stored state.

    numpy's PCG64 through a SeedSequence of four 32-bit words (stream, epoch, the seed's low and
    high word): every key gives its own 128-bit state. torch's CPU generator would not do:
    it keeps only the low 32 bits of its seed, so engine.FIXED_SEED (2**32) would replay seed 0.
    Always on the CPU: how a CUDA generator's Philox stream maps to elements depends on the
    launch grid (capped by the GPU's SM count), so a resume on another GPU model could replay
    another permutation. On the CPU the plan is the same on every machine and device.
    """
    if not (0 <= seed < 2**64 and 0 <= epoch < 2**32):
        raise ValueError(f"seed {seed} / epoch {epoch} out of range")
    words = [STREAMS[stream], epoch, seed & 0xFFFF_FFFF, seed >> 32]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def _boxes(centres: np.ndarray, half) -> np.ndarray:
    """Rows [y0, y1, x0, x1] from centre - half to centre + half on both axes, clipped to the image."""
    lo, hi = np.clip(centres - half, 0, SIZE), np.clip(centres + half, 0, SIZE)
    return np.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]], axis=1)


def cutout_boxes(centres: np.ndarray, length: int) -> np.ndarray:
    """The zeroed square around each (y, x) centre as the Cutout repository computes it: side
    ``length`` (even) where it fits, clipped at the border."""
    return _boxes(centres, length // 2)


def cutmix_boxes(lam: np.ndarray, centres: np.ndarray):
    """CutMix's rand_bbox for every step: a box of side int(SIZE * sqrt(1 - lam)) around each
    (y, x) centre, clipped to the image. Returns (boxes [y0, y1, x0, x1], lambda recomputed from
    the clipped area: the weight of each image's own label)."""
    cut = (SIZE * np.sqrt(1.0 - lam)).astype(np.int64)
    boxes = _boxes(centres, cut[:, None] // 2)
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
    return boxes, 1.0 - area / SIZE**2


def partner_permutations(g: np.random.Generator, n: int, batch_size: int) -> np.ndarray:
    """[steps, batch_size]: row s is a uniform random permutation of step s's batch positions
    (argsort of uniform keys); the last, partial batch's row permutes its first entries only."""
    keys = g.random((num_batches(n, batch_size), batch_size))
    partners = np.argsort(keys, axis=1)
    last = n - (len(keys) - 1) * batch_size
    partners[-1, :last] = np.argsort(keys[-1, :last])
    return partners


@dataclass
class EpochPlan:
    """Every random choice of one epoch. Per-image rows (offsets, flips, cutout) are indexed by
    image until ``in_visiting_order``; per-step rows (lam, partners, boxes) by step."""

    order: torch.Tensor  # [n] image visited at each position
    offsets: torch.Tensor  # [n, 2] crop offsets (row, column), 0..2*PAD
    flips: torch.Tensor  # [n] bool
    cutout: torch.Tensor | None = None  # [n, 4] zeroed square y0, y1, x0, x1
    lam: np.ndarray | None = None  # [steps] weight of each image's own label (mixing only)
    partners: torch.Tensor | None = None  # [steps, batch] partner positions (mixing only)
    boxes: np.ndarray | None = None  # [steps, 4] CutMix box y0, y1, x0, x1 (empty: not applied)

    def in_visiting_order(self, device) -> "EpochPlan":
        """Per-image rows put in visiting order once on the CPU (a step then only slices), and
        every tensor copied to ``device`` once. lam and boxes stay on the host: a step reads
        them as Python numbers, with no device sync."""
        o = self.order

        def move(t):
            return None if t is None else t.to(device)

        return EpochPlan(o.to(device), self.offsets[o].to(device), self.flips[o].to(device),
                         None if self.cutout is None else self.cutout[o].to(device), self.lam,
                         move(self.partners), self.boxes)


def epoch_plan(n: int, batch_size: int, epoch: int, order_seed: int, augment_seed: int,
               augment: Augment = PLAIN) -> EpochPlan:
    """Draw one epoch's plan on the CPU (a few milliseconds for 50,000 images)."""
    order = torch.from_numpy(generator("order", order_seed, epoch).permutation(n))
    g = generator("augment", augment_seed, epoch)
    plan = EpochPlan(order, torch.from_numpy(g.integers(0, 2 * PAD + 1, (n, 2))), torch.from_numpy(g.random(n) < 0.5))
    if augment.cutout:
        plan.cutout = torch.from_numpy(cutout_boxes(g.integers(0, SIZE, (n, 2)), augment.cutout))
    if augment.mixes:
        steps = num_batches(n, batch_size)
        plan.lam = g.beta(augment.mixup or augment.cutmix, augment.mixup or augment.cutmix, steps)
        plan.partners = torch.from_numpy(partner_permutations(g, n, batch_size))
        if augment.cutmix:
            applied = g.random(steps) < augment.cutmix_prob
            boxes, lam = cutmix_boxes(plan.lam, g.integers(0, SIZE, (steps, 2)))
            boxes[~applied] = 0
            plan.boxes, plan.lam = boxes, np.where(applied, lam, 1.0)
    return plan


@functools.lru_cache(maxsize=16)
def _window_offsets(channels: int, height: int, width: int, device: torch.device,
                    channels_last: bool, dtype: torch.dtype) -> torch.Tensor:
    """Flat offsets of the SIZE x SIZE window at (0, 0) of one padded image: [plain, mirrored]."""
    ar = torch.arange(SIZE, device=device)
    plane = torch.arange(channels, device=device)[:, None, None] * (height * width)
    rows = (ar * width)[None, :, None]
    table = torch.stack([plane + rows + ar, plane + rows + (SIZE - 1 - ar)])  # [2, C, SIZE, SIZE]
    if channels_last:
        table = table.permute(0, 2, 3, 1)
    return table.reshape(2, -1).to(dtype)


def crop_flip(padded: torch.Tensor, idx, offsets, flips, channels_last: bool = False) -> torch.Tensor:
    """Gather SIZE x SIZE windows of ``padded[idx]`` at ``offsets``, mirrored where ``flips``.

    One flat ``index_select`` per batch: an image's window is a fixed table of offsets
    (mirrored or not) shifted by its start. int32 indices where they fit make the gather
    several times faster on the CPU than four broadcast index tensors. With ``channels_last``
    the result is written in NHWC order (a channels_last NCHW tensor), saving a copy.
    """
    _, c, h, w = padded.shape
    itype = torch.int32 if padded.numel() < 2**31 else torch.int64
    table = _window_offsets(c, h, w, padded.device, channels_last, itype)
    start = (idx * (c * h * w) + offsets[:, 0] * w + offsets[:, 1]).to(itype)
    flat = start[:, None] + table.index_select(0, flips.long())
    out = padded.reshape(-1).index_select(0, flat.reshape(-1))
    if channels_last:
        return out.view(len(idx), SIZE, SIZE, c).permute(0, 3, 1, 2)
    return out.view(len(idx), c, SIZE, SIZE)


def cutout_(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero (the mean, after normalisation) each image's square boxes[i] = [y0, y1, x0, x1], in place."""
    ar = torch.arange(SIZE, device=x.device)
    rows = (ar >= boxes[:, 0:1]) & (ar < boxes[:, 1:2])
    cols = (ar >= boxes[:, 2:3]) & (ar < boxes[:, 3:4])
    return x.masked_fill_((rows[:, :, None] & cols[:, None, :])[:, None], 0.0)


def mix(x: torch.Tensor, y: torch.Tensor, lam: float, partner: torch.Tensor, box, num_classes: int):
    """(images, soft targets) of a mixed batch: each image blended with (mixup, ``box`` None) or
    pasted inside ``box`` from (CutMix) image ``partner[i]`` of the same batch; the target is
    lam * onehot(y) + (1 - lam) * onehot(y[partner])."""
    if box is None:
        other = x[partner]  # before x changes; keeps channels_last
        x = x.mul_(lam).add_(other, alpha=1.0 - lam)
    else:
        y0, y1, x0, x1 = (int(v) for v in box)
        x[:, :, y0:y1, x0:x1] = x[partner, :, y0:y1, x0:x1]
    onehot = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)
    return x, onehot * lam + onehot[partner] * (1.0 - lam)


def num_batches(n: int, batch_size: int) -> int:
    """Like DataLoader(drop_last=False): the last, partial batch is kept."""
    return math.ceil(n / batch_size)


def train_batches(split: DeviceSplit, batch_size: int, seed: int, epoch: int, start: int = 0,
                  channels_last: bool = False, *, augment_seed: int | None = None, augment: Augment = PLAIN):
    """Yield (step, x, y) of one augmented training epoch, from step ``start`` on. ``seed`` draws
    the order, ``augment_seed`` (default: ``seed``) the augmentations. y holds labels, or soft
    targets [batch, num_classes] when the recipe mixes."""
    n = len(split)
    plan = epoch_plan(n, batch_size, epoch, seed, seed if augment_seed is None else augment_seed, augment)
    plan = plan.in_visiting_order(split.device)
    labels = split.labels[plan.order]
    for step in range(start, num_batches(n, batch_size)):
        sl = slice(step * batch_size, (step + 1) * batch_size)
        # crop_flip already writes the layout the model wants; normalise keeps it.
        x = split.normalise(crop_flip(split.padded, plan.order[sl], plan.offsets[sl], plan.flips[sl], channels_last))
        y = labels[sl]
        if plan.cutout is not None:
            cutout_(x, plan.cutout[sl])
        if augment.mixes:
            box = None if plan.boxes is None else plan.boxes[step]
            x, y = mix(x, y, float(plan.lam[step]), plan.partners[step, :len(y)], box, augment.num_classes)
        yield step, x, y


def eval_batches(split: DeviceSplit, batch_size: int = 1000, channels_last: bool = False):
    """Yield (x, y) of the un-augmented split in order."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images = split.images
    for i in range(0, len(split), batch_size):
        yield split.normalise(images[i:i + batch_size], fmt), split.labels[i:i + batch_size]
