"""Grad-CAM: the formula against a direct per-image computation, hooks, the sanity check, image
utilities, the figure's artists, and the two scripts end to end on a tiny checkpoint: gradcam.py
(the GPU rule: maps only) and gradcam_figures.py (the CPU rule: figures and statistics)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from cifar100 import cam, cam_images, checkpoint, data, engine, metrics, plots  # noqa: E402
from cifar100.cli import run_cli  # noqa: E402
from cifar100.exceptions import UserError  # noqa: E402
from cifar100.model import resnet18  # noqa: E402
from helpers import load_script  # noqa: E402



def all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


@pytest.fixture(scope="module")
def tiny():
    """A random 5-class ResNet-18 of width 4, six images, and classes whose maps are not constant."""
    torch.manual_seed(0)
    model = resnet18(num_classes=5, width=4).eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        # With random weights the bias dominates the logits; the class with the largest
        # weight-dependent part has a positive mean map, so its map is never all zeros.
        classes = (model(x) - model.fc.bias).argmax(1)
    return model, x, classes


def direct_grad_cam(model, x, classes):
    """The formula, one image at a time, with the forward pass written out by hand."""
    maps = []
    for xi, c in zip(x, classes):
        h = F.relu(model.bn1(model.conv1(xi[None])))
        acts = model.layer4(model.layer3(model.layer2(model.layer1(h))))
        logit = model.fc(acts.mean(dim=(2, 3)))[0, c]  # global average pool, then the head
        (g,) = torch.autograd.grad(logit, acts)
        alpha = g.mean(dim=(2, 3))  # [1, K]
        cam = F.relu((alpha[:, :, None, None] * acts).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
        lo, hi = cam.min(), cam.max()
        maps.append((cam - lo) / (hi - lo) if hi > lo else torch.zeros_like(cam))
    return torch.stack(maps).detach()


def test_grad_cam_matches_direct_formula(tiny):
    model, x, classes = tiny
    maps = cam.grad_cam(model, x, classes, "layer4")
    expected = direct_grad_cam(model, x, classes)
    assert maps.shape == (6, 32, 32) and maps.dtype == torch.float32
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-4)
    assert torch.allclose(maps.flatten(1).amax(1), torch.ones(6))  # all non-constant, scaled to [0, 1]
    assert maps.min() >= 0


def test_grad_cam_batching_module_and_name_agree(tiny):
    model, x, classes = tiny
    whole = cam.grad_cam(model, x, classes, "layer4")
    torch.testing.assert_close(cam.grad_cam(model, x, classes, model.layer4, batch_size=4), whole)
    maps, logits = cam.grad_cam(model, x, classes.tolist(), "layer4", return_logits=True)
    torch.testing.assert_close(maps, whole)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))


def test_grad_cam_leaves_model_as_found(tiny):
    model, x, classes = tiny
    model.train()
    try:
        with torch.no_grad():  # a caller's no_grad must not break it
            maps = cam.grad_cam(model, x, classes, "layer3")
        assert model.training
    finally:
        model.eval()
    assert maps.shape == (6, 32, 32) and 0 <= maps.min() and maps.max() <= 1
    assert all(p.grad is None for p in model.parameters())
    assert all_hooks(model) == 0


def test_hooks_removed_after_an_exception(tiny):
    model, x, classes = tiny
    with pytest.raises(UserError, match=r"\[N, C, H, W\]"):
        cam.grad_cam(model, x, classes, "fc")  # a 2-d output: refused inside the hook's lifetime
    assert all_hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with cam.capture_activations(model.layer4):
            assert len(model.layer4._forward_hooks) == 1
            raise RuntimeError("boom")
    assert all_hooks(model) == 0


def test_unknown_layer_and_bad_classes(tiny):
    model, x, classes = tiny
    with pytest.raises(UserError, match="unknown layer 'layer9'.*layer4"):
        cam.grad_cam(model, x, classes, "layer9")
    with pytest.raises(ValueError, match="one class per image"):
        cam.grad_cam(model, x, classes[:2], "layer4")
    assert cam.grad_cam(model, x[:0], classes[:0]).shape == (0, 32, 32)


def test_constant_maps_become_zeros():
    maps = torch.stack([torch.full((32, 32), 3.0), torch.arange(1024.0).view(32, 32)])
    out = cam._minmax(maps)
    assert torch.equal(out[0], torch.zeros(32, 32))
    assert out[1].min() == 0 and out[1].max() == 1


def test_randomised_maps(tiny):
    model, x, classes = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = cam.randomised_maps(model, x, classes, "layer4", seed=0)
    assert maps.shape == (6, 32, 32)
    torch.testing.assert_close(maps, cam.grad_cam(cam.randomised_copy(model, "layer4", seed=0), x, classes))
    assert not torch.equal(maps, cam.grad_cam(model, x, classes))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    clone = cam.randomised_copy(model, "layer4", seed=0)
    changed = {k for k, v in clone.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("layer4.") for k in changed)
    again = cam.randomised_copy(model, "layer4", seed=0)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in clone.state_dict().items())  # seeded


def average_ranks(x):
    """Ranks 1..n with ties given their mean rank, written out directly."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def test_map_rank_correlations_are_spearman_with_ties():
    rng = np.random.default_rng(0)
    a = rng.random((4, 8, 8))
    b = a + rng.normal(0, 0.3, a.shape)
    a[1, :4] = 0  # ties, as ReLU leaves them
    b[2, 2:] = 0.5
    rho = metrics.map_rank_correlations(a, b)
    expected = [np.corrcoef(average_ranks(x.ravel()), average_ranks(y.ravel()))[0, 1] for x, y in zip(a, b)]
    np.testing.assert_allclose(rho, expected, atol=1e-12)
    np.testing.assert_allclose(metrics.map_rank_correlations(a, -a), -1)
    assert np.isnan(metrics.map_rank_correlations(np.zeros((1, 4, 4)), a[:1, :4, :4]))[0]


def test_scale_and_overlay():
    maps = np.stack([np.full((4, 4), 2.0), np.arange(16.0).reshape(4, 4)])
    s = cam_images.scale(maps)
    assert s.dtype == np.float32 and np.all(s[0] == 0) and s[1].min() == 0 and s[1].max() == 1
    assert cam_images.scale(maps, size=(32, 32)).shape == (2, 32, 32)
    assert cam_images.scale(maps[1]).shape == (4, 4)
    image = np.full((32, 32, 3), 100, np.uint8)
    heat = np.zeros((32, 32), np.float32)
    heat[:16] = 1.0
    out = cam_images.overlay(image, heat, alpha=1.0)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] > 100 and out[0, 0, 2] < 50  # JET at 1 is red (RGB order)
    assert out[-1, -1, 2] > 100 and out[-1, -1, 0] < 50  # JET at 0 is blue
    assert np.array_equal(cam_images.overlay(image, heat, alpha=0.0), image)
    assert cam_images.overlay(image, heat[:8, :8], 0.5).shape == (32, 32, 3)  # resized to the image
    with pytest.raises(ValueError):
        cam_images.overlay(image.astype(np.float32), heat)


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_gradcam_pairs_figure():
    imgs = [np.zeros((32, 32, 3), np.uint8)] * 3
    fig = plots.gradcam_pairs(imgs, imgs, ["true: a\npred: a (0.90)"] * 3, ["green"] * 3, "Grad-CAM", "only 3")
    axes = image_axes(fig)
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes[:2]] == ["true: a\npred: a (0.90)", "Grad-CAM"]
    assert fig._suptitle.get_text() == "Grad-CAM"
    assert any(t.get_text() == "only 3" for t in fig.texts)
    empty = plots.gradcam_pairs([], [], [], title="none", note="no incorrect predictions")
    assert not image_axes(empty)
    assert any("no incorrect" in t.get_text() for ax in empty.axes for t in ax.texts)


# --- the script ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Tiny synthetic dataset, a random width-4 checkpoint in the project's format, its predictions."""
    d = tmp_path_factory.mktemp("gradcam_run")
    data.write_synthetic(d, train_size=50, test_size=20, num_classes=5, num_coarse=5)
    ds = data.load(d)
    test, names, coarse = ds.test, ds.fine_names, ds.coarse_names
    torch.manual_seed(0)
    model = resnet18(num_classes=5, width=4).eval()
    torch.nn.init.zeros_(model.fc.bias)  # see `tiny`: keeps the predicted class's map non-constant
    checkpoint.save(d / "model.pt", {
        "model_args": {"num_classes": 5, "width": 4}, "recipe": {"width": 4}, "recipe_name": "tiny", "seed": 0,
        "selection": "last", "epoch": 1, "fine_names": names, "coarse_names": coarse or [],
        "versions": checkpoint.versions(), "state_dict": model.state_dict(), "metrics": {},
        "fingerprint": {"data": engine.data_version(ds)}})
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 5)).astype(np.float32)
    np.savez(d / "predictions.npz", logits=logits, labels=test.labels)
    np.savez(d / "all_correct.npz", logits=np.eye(5, dtype=np.float32)[test.labels] * 5, labels=test.labels)
    np.savez(d / "wrong_labels.npz", logits=logits, labels=(test.labels + 1) % 5)
    return d


def args(d, out, predictions="predictions.npz", *extra):
    """gradcam.py's command line, writing the workflow's file name into ``out``."""
    return [str(x) for x in ["--checkpoint", d / "model.pt", "--predictions", d / predictions, "--data-dir", d,
                             "--maps", out / "gradcam_maps.npz", "--device", "cpu", *extra]]


def figures(d, out, predictions, *extra):
    """gradcam.py, then gradcam_figures.py on its maps: the two rules' jobs in order."""
    load_script("gradcam").main(args(d, out, predictions, *extra))
    load_script("gradcam_figures").main([str(x) for x in [
        "--maps", out / "gradcam_maps.npz", "--data-dir", d, "--correct", out / "gradcam_correct.png",
        "--incorrect", out / "gradcam_incorrect.png", "--summary", out / "gradcam_summary.json"]])
    return json.loads((out / "gradcam_summary.json").read_text())


def flags_without_default(help_text):
    """Options whose help entry does not mention a default (or required)."""
    entries, current = [], None
    for line in help_text.splitlines():
        if line.startswith("  -"):
            current = [line]
            entries.append(current)
        elif current is not None and line.startswith("    "):
            current.append(line)
        else:
            current = None
    return [e[0].split()[0] for e in entries
            if not e[0].lstrip().startswith("-h") and not any(w in " ".join(e) for w in ("default", "required"))]


@pytest.mark.parametrize("name", ["gradcam", "gradcam_figures"])
def test_help(capsys, name):
    with pytest.raises(SystemExit) as e:
        load_script(name).main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--maps" in out
    assert flags_without_default(out) == []


def test_the_gpu_half_writes_maps_only(run_dir, tmp_path):
    load_script("gradcam").main(args(run_dir, tmp_path, "predictions.npz", "--n", "3"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gradcam_maps.npz"]
    with np.load(tmp_path / "gradcam_maps.npz") as f:
        maps, idx = f["maps"], f["indices"]
        assert maps.dtype == np.float32 and maps.shape == f["maps_randomised"].shape == (len(idx), 32, 32)
        assert 0 <= maps.min() and maps.max() <= 1 and len(idx) == 6 and str(f["layer"]) == "layer4"
        with np.load(run_dir / "predictions.npz") as p:
            pred = p["logits"].argmax(1)
        assert np.array_equal(f["classes"], pred[idx])  # the predicted class is explained
        assert f["correct"][:3].all() and not f["correct"][3:].any()


def test_smoke_writes_every_output(run_dir, tmp_path):
    s = figures(run_dir, tmp_path, "predictions.npz", "--n", "3")
    names = {"gradcam_correct.png", "gradcam_incorrect.png", "gradcam_maps.npz", "gradcam_summary.json"}
    assert names == {p.name for p in tmp_path.iterdir()}  # and no temp files: atomic writes
    assert s["layer"] == "layer4" and s["n"] == 3 and 0 <= s["prediction_agreement"] <= 1
    with np.load(tmp_path / "gradcam_maps.npz") as f:
        assert f["indices"].tolist() == s["indices"] and s["n_correct"] + s["n_incorrect"] == 6
        rho = metrics.map_rank_correlations(f["maps"], f["maps_randomised"])
    got = [np.nan if r is None else r for r in s["rank_correlation_randomised_per_image"]]  # JSON null = NaN
    np.testing.assert_allclose(got, rho)
    assert s["mean_rank_correlation_randomised"] == pytest.approx(np.nanmean(rho))


def test_fewer_than_n_and_none_of_a_kind(run_dir, tmp_path):
    s = figures(run_dir, tmp_path, "all_correct.npz", "--n", "4")
    assert (s["n_correct"], s["n_incorrect"]) == (4, 0)
    assert (tmp_path / "gradcam_incorrect.png").is_file()


def test_figure_shows_fewer_with_a_note(run_dir, tmp_path):
    load_script("gradcam").main(args(run_dir, tmp_path, "predictions.npz", "--n", "5"))
    script = load_script("gradcam_figures")
    test, names, _, _ = data.load_test(run_dir)
    with np.load(tmp_path / "gradcam_maps.npz") as f:
        m = {k: f[k] for k in f.files}
    rows = np.flatnonzero(~m["correct"])[:2]
    m["n_requested"] = np.int64(5)
    fig = script.figure("incorrect", rows, m, test.images, names, 20)
    assert len(image_axes(fig)) == 6  # image, overlay, randomised overlay per image
    i = m["indices"][rows[0]]
    assert image_axes(fig)[0].get_title() == (f"true: {names[test.labels[i]]}\npred: {names[m['classes'][rows[0]]]} "
                                              f"({m['confidence'][rows[0]]:.2f})")
    assert any("only 2 incorrect" in t.get_text() for t in fig.texts)


def test_a_model_of_other_data_is_refused(run_dir, tmp_path, capsys):
    other = tmp_path / "other"
    data.write_synthetic(other, train_size=50, test_size=20, num_classes=5, num_coarse=5, seed=1)
    (other / "cifar-100-python" / "meta").write_bytes((run_dir / "cifar-100-python" / "meta").read_bytes())
    a = args(run_dir, tmp_path)
    a[a.index("--data-dir") + 1] = str(other)
    with pytest.raises(SystemExit) as e:
        run_cli(load_script("gradcam").main, a)
    assert e.value.code == 2 and "trained on other data" in capsys.readouterr().err


@pytest.mark.parametrize("case, pattern", [
    ("missing_checkpoint", "checkpoint not found"),
    ("corrupt_checkpoint", "unreadable or unsafe checkpoint"),
    ("wrong_labels", "labels do not match"),
    ("truncated_predictions", "unreadable predictions"),
])
def test_bad_input_exits_2_with_one_line(run_dir, tmp_path, capsys, case, pattern):
    a = args(run_dir, tmp_path)
    if case == "missing_checkpoint":
        a[1] = str(tmp_path / "nope.pt")
    elif case == "corrupt_checkpoint":
        (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
        a[1] = str(tmp_path / "bad.pt")
    elif case == "wrong_labels":
        a[3] = str(run_dir / "wrong_labels.npz")
    elif case == "truncated_predictions":
        (tmp_path / "cut.npz").write_bytes((run_dir / "predictions.npz").read_bytes()[:100])
        a[3] = str(tmp_path / "cut.npz")
    with pytest.raises(SystemExit) as e:
        run_cli(load_script("gradcam").main, a)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error: " in err and pattern in err


def test_unknown_layer_is_refused_by_the_command_line(run_dir, tmp_path, capsys):
    """The layer is a choice (the config schema's enum), so a typo stops before any work."""
    with pytest.raises(SystemExit) as e:
        load_script("gradcam").main(args(run_dir, tmp_path) + ["--layer", "layer7"])
    assert e.value.code == 2 and "invalid choice: 'layer7'" in capsys.readouterr().err
