"""Cutout, mixup and CutMix against their definitions; the generators behind every draw; flip
test-time augmentation, warm-up and multi-step learning rates, and the weights' moving average
against direct computations."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from cifar100 import engine, model, numerics, pipeline
from cifar100.pipeline import PAD, PLAIN, SIZE, Augment, DeviceSplit, epoch_plan, train_batches

P_MIN = 1e-3  # a distribution test fails below this p-value (the draws are fixed: no flaky reruns)


def random_images(n, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8), rng.integers(0, num_classes, n)


def epoch(split, augment, batch_size=32, seed=5, e=1, **kw):
    return list(train_batches(split, batch_size, seed, e, augment=augment, **kw))


# ---- the generators -------------------------------------------------------------------------

def test_every_stream_seed_and_epoch_has_its_own_generator():
    draws = {}
    for stream in ("init", "order", "augment"):
        for seed in (0, 1, 2**32 - 1, engine.FIXED_SEED):
            for e in (0, 1):
                draws[stream, seed, e] = tuple(pipeline.generator(stream, seed, e).integers(0, 2**63, 4))
    assert len(set(draws.values())) == len(draws)
    # The fixed seed is not seed 0 in disguise, as it would be for torch's generator (low 32 bits).
    assert torch.equal(torch.randperm(50, generator=torch.Generator().manual_seed(engine.FIXED_SEED)),
                       torch.randperm(50, generator=torch.Generator().manual_seed(0)))
    again = pipeline.generator("order", 7, 3).permutation(100)
    assert np.array_equal(again, pipeline.generator("order", 7, 3).permutation(100))


def test_order_and_augmentation_come_from_their_own_seeds():
    a = epoch_plan(1000, 32, 1, order_seed=1, augment_seed=2)
    same_order = epoch_plan(1000, 32, 1, order_seed=1, augment_seed=3)
    same_augment = epoch_plan(1000, 32, 1, order_seed=4, augment_seed=2)
    assert torch.equal(a.order, same_order.order) and not torch.equal(a.offsets, same_order.offsets)
    # Per-image draws are indexed by image: a new order leaves every image's crop and flip as it was.
    assert not torch.equal(a.order, same_augment.order)
    assert torch.equal(a.offsets, same_augment.offsets) and torch.equal(a.flips, same_augment.flips)


def test_cutout_and_mixing_leave_the_crops_and_flips_of_the_same_seed():
    plain = epoch_plan(500, 32, 2, 9, 9)
    for aug in (Augment(cutout=8), Augment(mixup=1.0, num_classes=10), Augment(cutmix=1.0, num_classes=10)):
        other = epoch_plan(500, 32, 2, 9, 9, aug)
        assert all(torch.equal(getattr(plain, k), getattr(other, k)) for k in ("order", "offsets", "flips"))


@pytest.mark.parametrize("vary, varied", [("all", "iod"), ("init", "i"), ("data", "od"), ("order", "o"),
                                          ("augment", "d"), ("none", "")])
def test_vary_decides_which_seeds_follow_the_run_seed(vary, varied):
    spec = engine.RunSpec(recipe={"vary": vary}, recipe_name="r", seed=3, selection="last", val_size=1,
                          deterministic=False, precision="fp32", compile=False)
    seeds = {"i": spec.init_seed, "o": spec.order_seed, "d": spec.augment_seed}
    assert seeds == {k: 3 if k in varied else engine.FIXED_SEED for k in "iod"}
    assert engine.FIXED_SEED > 2**32 - 1  # the schema's largest seed


def test_initialisation_has_pytorchs_default_distribution_from_its_own_stream():
    net = model.initialise(model.resnet18(10, 8), pipeline.generator("init", 0))
    for name, m in (("conv", net.layer2[0].conv1), ("fc", net.fc)):
        bound = 1 / math.sqrt(m.weight[0].numel())  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), ...)
        w = m.weight.detach().numpy().ravel()
        assert stats.kstest(w, stats.uniform(-bound, 2 * bound).cdf).pvalue > P_MIN, name
    assert stats.kstest(net.fc.bias.detach().numpy(), stats.uniform(-bound, 2 * bound).cdf).pvalue > P_MIN
    assert torch.equal(net.bn1.weight, torch.ones(8)) and torch.equal(net.bn1.bias, torch.zeros(8))
    fixed = model.initialise(model.resnet18(10, 8), pipeline.generator("init", engine.FIXED_SEED))
    again = model.initialise(model.resnet18(10, 8), pipeline.generator("init", 0))
    assert torch.equal(net.fc.weight, again.fc.weight) and not torch.equal(net.fc.weight, fixed.fc.weight)


# ---- cutout ---------------------------------------------------------------------------------

def reference_cutout_box(y, x, length):
    """uoguelph-mlrg/Cutout util/cutout.py, for one hole centred at (y, x) of a 32x32 image."""
    y1, y2 = np.clip(y - length // 2, 0, SIZE), np.clip(y + length // 2, 0, SIZE)
    x1, x2 = np.clip(x - length // 2, 0, SIZE), np.clip(x + length // 2, 0, SIZE)
    return [y1, y2, x1, x2]


@pytest.mark.parametrize("length", [8, 16, 5])
def test_cutout_boxes_are_the_cutout_repositorys_for_every_centre(length):
    centres = np.array([(y, x) for y in range(SIZE) for x in range(SIZE)])
    expected = np.array([reference_cutout_box(y, x, length) for y, x in centres])
    assert np.array_equal(pipeline.cutout_boxes(centres, length), expected)


def test_cutout_centres_are_uniform_anywhere_and_the_clipped_area_is_as_expected():
    n, length = 40_000, 8
    boxes = epoch_plan(n, 128, 1, 0, 0, Augment(cutout=length)).cutout.numpy()
    # Squares of full side: centres 4..28 on both axes; each of these 25 x 25 centres is equally likely.
    inside = (boxes[:, 1] - boxes[:, 0] == length) & (boxes[:, 3] - boxes[:, 2] == length)
    cy, cx = boxes[inside, 0] + length // 2, boxes[inside, 2] + length // 2
    counts = np.bincount((cy - 4) * 25 + (cx - 4), minlength=25 * 25)
    assert len(counts) == 25 * 25 and stats.chisquare(counts).pvalue > P_MIN
    assert stats.binomtest(int(inside.sum()), n, (25 / 32) ** 2).pvalue > P_MIN
    # The clipped area: its mean over all 1024 equally likely centres, computed directly.
    areas = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
    side = np.array([min(c + 4, SIZE) - max(c - 4, 0) for c in range(SIZE)])
    exact = np.outer(side, side).ravel()
    assert abs(areas.mean() - exact.mean()) < 4 * exact.std() / math.sqrt(n)
    assert set(np.unique(areas)) <= set(np.unique(exact)) and areas.max() == length**2


def test_cutout_zeroes_exactly_its_square_after_normalisation():
    split = DeviceSplit(*random_images(200), "cpu")
    aug = Augment(cutout=8)
    plan = epoch_plan(200, 32, 1, 5, 5, aug).in_visiting_order("cpu")
    for (step, xp, yp), (_, xc, yc) in zip(epoch(split, PLAIN), epoch(split, aug, channels_last=True)):
        assert torch.equal(yp, yc)
        for i, (y0, y1, x0, x1) in enumerate(plan.cutout[step * 32:(step + 1) * 32].tolist()):
            mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
            mask[y0:y1, x0:x1] = True
            assert torch.all(xc[i][:, mask] == 0) and torch.equal(xc[i][:, ~mask], xp[i][:, ~mask])


# ---- mixup ----------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_mixup_lambda_is_beta_alpha_alpha(alpha):
    lam = epoch_plan(40_000, 16, 1, 0, 0, Augment(mixup=alpha, num_classes=10)).lam
    assert len(lam) == 2500
    assert stats.kstest(lam, stats.beta(alpha, alpha).cdf).pvalue > P_MIN


def test_partners_are_uniform_permutations_of_each_batch_including_the_last():
    n, b = 1000, 64
    partners = pipeline.partner_permutations(np.random.default_rng(0), n, b)
    last = n - (len(partners) - 1) * b
    for row in partners[:-1]:
        assert sorted(row) == list(range(b))
    assert sorted(partners[-1, :last]) == list(range(last))
    many = pipeline.partner_permutations(np.random.default_rng(1), 64 * 4000, 4)
    # 24 permutations of 4 positions, equally likely.
    codes = np.unique(many @ np.array([64, 16, 4, 1]), return_counts=True)[1]
    assert len(codes) == 24 and stats.chisquare(codes).pvalue > P_MIN


def test_mixup_blends_images_and_labels_with_the_same_lambda_and_partner():
    n, b, c = 200, 32, 10
    split = DeviceSplit(*random_images(n, c), "cpu")
    aug = Augment(mixup=1.0, num_classes=c)
    plan = epoch_plan(n, b, 1, 5, 5, aug)
    for (step, xp, yp), (_, xm, tm) in zip(epoch(split, PLAIN), epoch(split, aug)):
        lam, partner = plan.lam[step], plan.partners[step, :len(yp)]
        torch.testing.assert_close(xm, lam * xp + (1 - lam) * xp[partner], rtol=0, atol=1e-5)
        onehot = torch.eye(c)[yp]
        torch.testing.assert_close(tm, lam * onehot + (1 - lam) * onehot[partner], rtol=0, atol=1e-6)
        torch.testing.assert_close(tm.sum(1), torch.ones(len(yp)))


def test_soft_targets_with_label_smoothing_are_the_mixture_of_smoothed_losses():
    """Cross-entropy with label smoothing on a mixed target = lam * smoothed loss of y + (1 - lam) * of y'."""
    g = torch.Generator().manual_seed(0)
    out, y, y2 = torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g), torch.arange(16) % 10
    lam, eps = 0.3, 0.1
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=eps)
    target = lam * torch.eye(10)[y] + (1 - lam) * torch.eye(10)[y2]
    direct = lam * criterion(out, y) + (1 - lam) * criterion(out, y2)
    torch.testing.assert_close(criterion(out, target), direct)


# ---- CutMix ---------------------------------------------------------------------------------

def reference_rand_bbox(lam, cy, cx):
    """clovaai/CutMix-PyTorch train.py rand_bbox for a 32x32 image, with the centre given."""
    cut = int(SIZE * np.sqrt(1.0 - lam))
    y1, y2 = np.clip(cy - cut // 2, 0, SIZE), np.clip(cy + cut // 2, 0, SIZE)
    x1, x2 = np.clip(cx - cut // 2, 0, SIZE), np.clip(cx + cut // 2, 0, SIZE)
    return [y1, y2, x1, x2], 1 - ((y2 - y1) * (x2 - x1) / (SIZE * SIZE))


def test_cutmix_boxes_and_lambda_are_the_papers_rand_bbox():
    rng = np.random.default_rng(0)
    lam, centres = rng.beta(1.0, 1.0, 2000), rng.integers(0, SIZE, (2000, 2))
    boxes, adjusted = pipeline.cutmix_boxes(lam, centres)
    for k in range(2000):
        box, lam_k = reference_rand_bbox(lam[k], *centres[k])
        assert boxes[k].tolist() == box and adjusted[k] == pytest.approx(lam_k, abs=1e-15)


def test_cutmix_applies_at_its_rate_and_lambda_is_one_minus_the_box_area():
    aug = Augment(cutmix=1.0, cutmix_prob=0.5, num_classes=10)
    plan = epoch_plan(320_000, 16, 1, 0, 0, aug)
    area = (plan.boxes[:, 1] - plan.boxes[:, 0]) * (plan.boxes[:, 3] - plan.boxes[:, 2])
    np.testing.assert_allclose(plan.lam, 1 - area / SIZE**2, rtol=0, atol=1e-15)
    applied = area > 0
    assert stats.binomtest(int(applied.sum()), len(area), 0.5).pvalue > P_MIN
    # Unclipped boxes (centre far enough from the border) have the even side 2 * (int(32 sqrt(1 - lam)) // 2):
    # with lam ~ Beta(1, 1) = U(0, 1), P(side >= s) = P(32 sqrt(1 - lam) >= s) = 1 - (s / 32)^2.
    side = plan.boxes[:, 1] - plan.boxes[:, 0]
    cy = (plan.boxes[:, 0] + plan.boxes[:, 1]) // 2
    free = applied & (cy == 16)  # boxes centred on row 16: never clipped (half side <= 16)
    for s in (8, 16, 24):
        share = (side[free] >= s).mean()
        expected = 1 - (s / SIZE) ** 2
        assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / free.sum()), s


def test_cutmix_pastes_the_partners_box_and_mixes_labels_by_area():
    n, b, c = 256, 32, 10
    split = DeviceSplit(*random_images(n, c), "cpu")
    aug = Augment(cutmix=1.0, cutmix_prob=0.5, num_classes=c)
    plan = epoch_plan(n, b, 1, 5, 5, aug)
    for (step, xp, yp), (_, xm, tm) in zip(epoch(split, PLAIN), epoch(split, aug, channels_last=True)):
        y0, y1, x0, x1 = plan.boxes[step]
        partner, lam = plan.partners[step, :len(yp)], plan.lam[step]
        expected = xp.clone()
        expected[:, :, y0:y1, x0:x1] = xp[partner][:, :, y0:y1, x0:x1]
        assert torch.equal(xm, expected)
        onehot = torch.eye(c)[yp]
        torch.testing.assert_close(tm, lam * onehot + (1 - lam) * onehot[partner], rtol=0, atol=1e-6)


def test_mixup_and_cutmix_together_are_refused():
    with pytest.raises(ValueError, match="alternatives"):
        Augment(mixup=1.0, cutmix=1.0, num_classes=10)


# ---- flip test-time augmentation ------------------------------------------------------------

def test_flip_tta_is_the_mean_of_the_image_and_mirror_logits():
    torch.manual_seed(0)
    net = model.resnet18(10, 8).eval()
    images, labels = random_images(70, seed=3)
    split = DeviceSplit(images, labels, "cpu")
    amp = numerics.autocast_for(torch.device("cpu"), "fp32")
    tta = engine.predict(net, split, amp, batch_size=32, flip=True)
    x = torch.cat([xb for xb, _ in pipeline.eval_batches(split, 70)])
    with torch.no_grad():
        expected = (net(x) + net(torch.flip(x, dims=[3]))) / 2
    torch.testing.assert_close(tta, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(tta, engine.predict(net, split, amp, batch_size=32))


# ---- schedules ------------------------------------------------------------------------------

def lrs(recipe, steps_per_epoch, epochs):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=recipe["lr"], momentum=0.9)
    sched = engine.make_scheduler(opt, {"epochs": epochs, **recipe}, steps_per_epoch)
    out = []
    for _ in range(epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


def test_multistep_with_warmup_follows_the_formula():
    spe, epochs, warm = 7, 12, 3
    r = {"lr": 0.1, "schedule": "multistep", "milestones": [4, 8, 10], "gamma": 0.2, "warmup_epochs": warm}
    t = np.arange(spe * epochs)
    done = t // spe  # epochs finished before step t
    expected = 0.1 * 0.2 ** np.searchsorted([4, 8, 10], done, side="right") * np.minimum(1, (t + 1) / (warm * spe))
    np.testing.assert_allclose(lrs(r, spe, epochs), expected, rtol=1e-12)


@pytest.mark.parametrize("schedule, extra", [("step", {"step_size": 3, "gamma": 0.5}), ("cosine", {}),
                                             ("constant", {}), ("onecycle", {})])
def test_warmup_multiplies_every_schedule_and_is_exact_without_it(schedule, extra):
    spe, epochs = 5, 9
    r = {"lr": 0.2, "schedule": schedule, **extra}
    plain = lrs({**r, "warmup_epochs": 0}, spe, epochs)
    t = np.arange(spe * epochs)
    if schedule == "cosine":  # CosineAnnealingLR, per epoch
        np.testing.assert_allclose(plain, 0.2 * (1 + np.cos(np.pi * (t // spe) / epochs)) / 2, rtol=1e-12, atol=1e-15)
    if schedule == "step":
        np.testing.assert_allclose(plain, 0.2 * 0.5 ** ((t // spe) // 3), rtol=1e-12)
    if schedule == "onecycle":  # torch's own, stepped per batch
        opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.2, momentum=0.9)
        ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=spe * epochs)
        torch_lrs = []
        for _ in t:
            torch_lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            ref.step()
        assert plain.tolist() == torch_lrs
    warmed = lrs({**r, "warmup_epochs": 2}, spe, epochs)
    np.testing.assert_allclose(warmed, plain * np.minimum(1, (t + 1) / (2 * spe)), rtol=1e-12)


def test_the_schedule_resumes_mid_warmup_exactly():
    r = {"lr": 0.1, "schedule": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 2, "epochs": 6}
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    sched = engine.make_scheduler(opt, r, 4)
    for _ in range(6):
        opt.step()
        sched.step()
    state_opt, state_sched = opt.state_dict(), sched.state_dict()
    opt2 = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    sched2 = engine.make_scheduler(opt2, r, 4)
    opt2.load_state_dict(state_opt)
    sched2.load_state_dict(state_sched)
    for _ in range(14):
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
        opt.step()
        opt2.step()
        sched.step()
        sched2.step()


# ---- the weights' moving average ------------------------------------------------------------

def test_ema_is_the_exponentially_weighted_sum_of_the_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    decay, steps = 0.8, 12
    ema = engine.EMA(net, decay)
    seen = [{k: v.double().clone() for k, v in net.state_dict().items()}]
    for _ in range(steps):
        loss = net(torch.randn(8, 4)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update()
        seen.append({k: v.double().clone() for k, v in net.state_dict().items()})
    for key, value in ema.state_dict().items():
        if not value.is_floating_point():  # batch counts: copied
            assert torch.equal(value, net.state_dict()[key])
            continue
        direct = decay**steps * seen[0][key] + sum((1 - decay) * decay ** (steps - t) * seen[t][key]
                                                   for t in range(1, steps + 1))
        torch.testing.assert_close(value.double(), direct, rtol=1e-5, atol=1e-6)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())


def test_last_epochs_accuracy_is_the_mean_of_the_selected_models_last_ten():
    history = [{"epoch": e, "test_acc": 0.01 * e, "ema_test_acc": 0.02 * e} for e in range(1, 26)]
    assert engine.last_epochs_accuracy(history, {}) == pytest.approx(np.mean([0.01 * e for e in range(16, 26)]))
    assert engine.last_epochs_accuracy(history, {"ema_model": True}) == pytest.approx(
        np.mean([0.02 * e for e in range(16, 26)]))
    assert engine.last_epochs_accuracy(history[:3], {}) == pytest.approx(0.02)


def test_crop_offsets_stay_uniform_with_the_new_generator():
    offsets = epoch_plan(20_000, 128, 1, 0, 0).offsets.numpy()
    for axis in range(2):
        assert stats.chisquare(np.bincount(offsets[:, axis], minlength=2 * PAD + 1)).pvalue > P_MIN


def test_the_report_gives_the_tta_accuracy_beside_the_plain_one(tmp_path):
    import json

    from cifar100 import data
    from cifar100.files import write_json, write_npz
    from helpers import load_script

    data.write_synthetic(tmp_path / "data", train_size=50, test_size=40, num_classes=10, num_coarse=5, seed=0)
    labels = data.load(tmp_path / "data").test.labels
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((40, 10)).astype(np.float32)
    logits[np.arange(40), labels] += 1.0
    tta = (logits + rng.standard_normal((40, 10))).astype(np.float32)
    write_npz(tmp_path / "p.npz", logits=logits, labels=labels, logits_tta=tta)
    write_json(tmp_path / "m.json", {"recipe": "r", "seed": 0, "n": 40, "num_classes": 10, "selection": "last",
                                     "selected_epoch": 1})
    out = {k: tmp_path / k for k in ("r.csv", "r.json", "r.txt", "rel.png", "s.json")}
    load_script("report").main(["--predictions", str(tmp_path / "p.npz"), "--metrics", str(tmp_path / "m.json"),
                                "--data-dir", str(tmp_path / "data"), "--report-csv", str(out["r.csv"]),
                                "--report-json", str(out["r.json"]), "--report-txt", str(out["r.txt"]),
                                "--reliability", str(out["rel.png"]), "--summary", str(out["s.json"])])
    s = json.loads(out["s.json"].read_text())
    assert s["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert s["top1_tta"] == pytest.approx(np.mean(tta.argmax(1) == labels))
    assert s["tta_gain"] == pytest.approx(s["top1_tta"] - s["top1"]) and s["top1_tta"] != s["top1"]
