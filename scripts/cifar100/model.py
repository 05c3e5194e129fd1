"""ResNet-18 for 32x32 inputs (He et al. 2016, the CIFAR variant of the notebook).

CIFAR stem: one 3x3 convolution at stride 1 and no max-pool, so layer1 sees 32x32 maps.
At width 64 and 100 classes it has exactly 11,220,132 parameters; ``width`` scales every
channel count (16 gives a model small enough for CPU tests).
"""

import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 100, width: int = 64):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.layer1 = self._stage(w, w, 1)
        self.layer2 = self._stage(w, 2 * w, 2)
        self.layer3 = self._stage(2 * w, 4 * w, 2)
        self.layer4 = self._stage(4 * w, 8 * w, 2)
        self.fc = nn.Linear(8 * w, num_classes)

    @staticmethod
    def _stage(cin, cout, stride):
        return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # Global average pooling (= AdaptiveAvgPool2d(1)) as a mean: its backward is deterministic
        # on CUDA, adaptive_avg_pool2d's is not, and deterministic: true would refuse to run.
        return self.fc(x.mean(dim=(2, 3)))


def resnet18(num_classes: int = 100, width: int = 64) -> ResNet18:
    return ResNet18(num_classes=num_classes, width=width)


@torch.no_grad()
def initialise(model: nn.Module, rng: np.random.Generator) -> nn.Module:
    """Draw every weight again from ``rng``, with PyTorch's default distributions: convolution and
    linear weights and linear biases uniform on +-1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5));
    batch norm keeps scale 1 and shift 0. The run's own init stream (pipeline.generator), not
    torch's global generator: that one keeps only 32 bits of its seed, too few to keep a fixed
    initialisation apart from every varied one."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bound = 1.0 / math.sqrt(m.weight[0].numel())
            for t in (m.weight, m.bias):
                if t is not None:
                    t.copy_(torch.from_numpy(rng.uniform(-bound, bound, tuple(t.shape)).astype(np.float32)))
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
