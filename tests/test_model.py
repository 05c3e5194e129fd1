import torch

from cifar100.model import count_parameters, resnet18


def test_parameter_count_matches_the_notebook():
    assert count_parameters(resnet18(num_classes=100, width=64)) == 11_220_132


def test_width_and_classes_scale_the_model():
    m = resnet18(num_classes=7, width=16)
    assert count_parameters(m) < 11_220_132 / 10
    out = m(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 7)
    assert m.layer4[-1].conv2.out_channels == 8 * 16


def test_cifar_stem_keeps_resolution():
    m = resnet18(num_classes=10, width=4).eval()
    seen = {}
    for name in ("layer1", "layer4"):
        getattr(m, name).register_forward_hook(lambda mod, i, o, name=name: seen.update({name: o.shape}))
    m(torch.randn(1, 3, 32, 32))
    assert seen["layer1"][-2:] == (32, 32)  # 3x3 stride-1 stem, no max-pool
    assert seen["layer4"][-2:] == (4, 4)
