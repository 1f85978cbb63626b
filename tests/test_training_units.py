"""Pure pieces of training: recipes, the Esteva crop, samplers, class weights, freezing schedule."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from dermlearn.models.preprocessing import PreprocessConfig
from dermlearn.training.augment import (
    CoverCrop,
    RandomRightAngle,
    RotateInscribedCrop,
    inscribed_rectangle,
    train_transform,
)
from dermlearn.training.callbacks import EMA_START_WEIGHT, ema_schedule
from dermlearn.training.module import trainable_blocks
from dermlearn.training.recipes import RECIPES, RecipeError, get_recipe, load_recipe
from dermlearn.training.sampler import EpochSampler, class_weights


def test_recipes_follow_their_papers():
    esteva, bene = RECIPES["esteva2017"], RECIPES["benedetti2020"]
    assert (esteva.backbone, esteva.image_size, esteva.mode, esteva.optimizer) == \
        ("inception_v3", 299, "full", "rmsprop")
    assert (esteva.rmsprop_alpha, esteva.momentum, esteva.eps, esteva.lr) == (0.9, 0.9, 0.1, 1e-3)
    assert (esteva.step_epochs, esteva.step_gamma, esteva.max_class_size) == (30, 1 / 16, 1000)
    assert (bene.backbone, bene.optimizer, bene.nesterov, bene.lr, bene.batch_size) == \
        ("inception_resnet_v2", "sgd", True, 6e-4, 10)
    assert (bene.class_cap, bene.early_stopping, bene.second_round_epochs) == (450, 15, 20)
    assert esteva.ema_decay == bene.ema_decay == 0.0  # the papers averaged no weights
    assert RECIPES["default"].ema_decay == 0.998


def test_ema_starts_after_warmup_and_forgets_its_start():
    # HAM10000's hold-out split: 200 steps per epoch; the cap (0.99846) leaves 0.998 alone.
    assert ema_schedule(0.998, epochs=10, warmup_epochs=1, steps_per_epoch=200) == (200, 0.998)
    # PH2's folds: 5 steps per epoch, 45 averaged steps -> decay lowered to (1/16) ** (1/45).
    start, decay = ema_schedule(0.998, epochs=10, warmup_epochs=1, steps_per_epoch=5)
    assert start == 5 and decay == pytest.approx(EMA_START_WEIGHT ** (1 / 45))
    assert decay ** 45 <= EMA_START_WEIGHT * (1 + 1e-9)
    # No epoch after warm-up (and a second round, which has none): average the last epoch.
    assert ema_schedule(0.998, epochs=1, warmup_epochs=1, steps_per_epoch=4)[0] == 0
    assert ema_schedule(0.998, epochs=3, warmup_epochs=5, steps_per_epoch=4)[0] == 8
    assert ema_schedule(0.998, epochs=20, warmup_epochs=0, steps_per_epoch=200) == (0, 0.998)


@pytest.mark.parametrize("n, cap", [(23, None), (21, None), (7, None), (23, 5)])
def test_sampler_counts_the_steps_every_process_takes(n, cap):
    from torch.utils.data import DataLoader

    targets = np.arange(n) % 3
    for processes, batch in ((1, 8), (2, 4), (4, 2)):
        for drop_last in (True, False):
            sampler = EpochSampler(targets, seed=0, class_cap=cap, num_replicas=processes,
                                   rank=processes - 1)
            loader = DataLoader(range(n), batch_size=batch, sampler=sampler,
                                drop_last=drop_last)
            assert EpochSampler(targets, class_cap=cap).steps(batch, processes, drop_last) == \
                len(loader)


def test_recipe_overrides_and_files(tmp_path):
    r = get_recipe("esteva2017", epochs=3, backbone="efficientnet_lite0")
    assert r.epochs == 3 and r.optimizer == "rmsprop" and r.name == "esteva2017"
    with pytest.raises(RecipeError, match="unknown recipe field"):
        get_recipe("default", epohcs=3)
    with pytest.raises(RecipeError, match="mode='frozen' is not one of"):
        get_recipe("default", mode="frozen")
    with pytest.raises(RecipeError, match="unknown recipe 'nope'"):
        get_recipe("nope")
    with pytest.raises(RecipeError, match="ema_decay must be in"):
        get_recipe("default", ema_decay=1.0)
    cfg = tmp_path / "r.yaml"
    cfg.write_text("recipe: benedetti2020\nepochs: 2\nbatch_size: 4\n")
    r = load_recipe(cfg, lr=0.01)
    assert (r.name, r.epochs, r.batch_size, r.lr, r.optimizer) == ("benedetti2020", 2, 4, 0.01, "sgd")
    (tmp_path / "bad.yaml").write_text("epochs: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    # YAML 1.1 reads 5e-4 as text: such numbers are taken; values of the wrong type are named
    (tmp_path / "e.yaml").write_text("lr: 5e-4\nclass_cap: 450\nprecision: 32\n")
    r = load_recipe(tmp_path / "e.yaml")
    assert (r.lr, r.class_cap, r.precision) == (5e-4, 450, "32")
    for name, bad, wanted in [("lr", "big", "a number"), ("epochs", 2.5, "an integer"),
                              ("class_cap", "many", "an integer or null"),
                              ("metadata", "yes please", "true/false"),
                              ("crop_pct", "big", "a number or null"),
                              ("epochs", True, "an integer")]:
        with pytest.raises(RecipeError, match=f"recipe field {name} must be {wanted}"):
            get_recipe("default", **{name: bad})
    (tmp_path / "typo.yaml").write_text("recipe: estevaa2017\nepochs: 2\n")
    with pytest.raises(RecipeError, match="unknown recipe 'estevaa2017'"):
        load_recipe(tmp_path / "typo.yaml")
    (tmp_path / "named.yaml").write_text("name: my-run\nepochs: 2\n")  # a run's own name
    assert load_recipe(tmp_path / "named.yaml").optimizer == "adamw"


@pytest.mark.parametrize("field, bad", [
    ("drop_rate", 2.0), ("drop_rate", 1.0), ("label_smoothing", 3.0), ("weight_decay", -1.0),
    ("eps", -1.0), ("eps", 0.0), ("momentum", -1.0), ("seed", -1), ("seed", 2**32),
    ("num_workers", -1), ("class_cap", -1), ("class_cap", 0), ("early_stopping", 0),
    ("second_round_epochs", -1), ("second_round_lr_factor", 0.0), ("max_class_size", 0),
    ("unfreeze", -1), ("warmup_epochs", -1), ("rmsprop_alpha", 1.0), ("lr", float("nan")),
    ("lr", "inf"), ("select_metric", "foo"), ("precision", "64x")])
def test_recipe_values_out_of_range_are_named_before_training(field, bad):
    with pytest.raises(RecipeError, match=f"recipe field {field}"):
        get_recipe("default", **{field: bad})


def test_recipe_values_at_their_limits_are_taken():
    r = get_recipe("default", drop_rate=0.0, label_smoothing=0.0, weight_decay=0.0,
                   seed=2**32 - 1, num_workers=0, class_cap=None, unfreeze=0,
                   select_metric="auc_macro", precision="bf16-mixed", second_round_epochs=0)
    assert (r.seed, r.select_metric, r.precision) == (2**32 - 1, "auc_macro", "bf16-mixed")


def test_image_size_is_a_side_or_height_by_width():
    assert get_recipe("default", image_size="150x200").image_size == [150, 200]
    assert get_recipe("default", image_size=[150, 200]).image_size == [150, 200]
    assert get_recipe("default", image_size="176").image_size == 176
    assert get_recipe("default", image_size=[176, 176]).image_size == 176
    assert get_recipe("default", image_size=None).image_size is None
    for bad in ("big", 8, [150, 200, 3], 150.5, "150x", True, []):
        with pytest.raises(RecipeError, match="image_size must be"):
            get_recipe("default", image_size=bad)
    assert get_recipe("default", crop_pct=1.0).crop_pct == 1.0
    with pytest.raises(RecipeError, match="crop_pct must be in"):
        get_recipe("default", crop_pct=1.5)


@pytest.mark.parametrize("source", [(200, 150), (150, 200), (640, 480)])
def test_non_square_training_crops_keep_the_inputs_shape_and_orientation(source):
    import random

    import torch

    cfg = PreprocessConfig(input_size=(3, 48, 64), crop_pct=1.0)
    transform = train_transform("default", cfg)
    img = Image.new("RGB", source, (120, 80, 60))
    for seed in range(12):
        random.seed(seed)
        torch.manual_seed(seed)
        assert transform(img).shape == (3, 48, 64)
    for seed in range(12):  # only 0 or 180 degrees: a landscape photo stays landscape
        random.seed(seed)
        assert RandomRightAngle(keep_orientation=True)(img).size == source
    turned = set()
    for seed in range(12):
        random.seed(seed)
        turned.add(RandomRightAngle()(img).size)
    assert turned == {source, source[::-1]}


@pytest.mark.parametrize("size", [(64, 64), (48, 64), (64, 48)])
def test_paper_augmentations_keep_a_round_lesion_round(size):
    """Esteva's and Benedetti's crops keep the aspect ratio, as evaluation does: a round
    lesion in a 200x150 photo stays round instead of being squashed into the input shape."""
    import random

    import torch
    from PIL import ImageDraw

    img = Image.new("RGB", (200, 150), (255, 255, 255))
    ImageDraw.Draw(img).ellipse((70, 45, 130, 105), fill=(0, 0, 0))  # a disc 60 px across

    def extent(out: np.ndarray) -> tuple[int, int]:
        rows, cols = np.nonzero(out < 128)
        return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1

    out = np.asarray(CoverCrop(size)(img).convert("L"))
    assert out.shape == size
    height, width = extent(out)
    assert abs(height - width) <= 1
    cfg = PreprocessConfig(input_size=(3, *size), mean=(0.0,) * 3, std=(1.0,) * 3)
    for kind in ("esteva", "benedetti"):
        for seed in range(5):
            random.seed(seed)
            torch.manual_seed(seed)
            tensor = train_transform(kind, cfg)(img)
            assert tensor.shape == (3, *size)
            if kind == "esteva":  # rotation and flip leave a disc round
                height, width = extent(tensor.mean(0).numpy() * 255)
                assert abs(height - width) <= 2, (kind, seed, height, width)


@pytest.mark.parametrize("w, h, deg", [(200, 150, 0), (200, 150, 30), (150, 200, 45),
                                       (300, 100, 10), (300, 100, 80), (100, 100, 45)])
def test_inscribed_rectangle_fits_and_is_tight(w, h, deg):
    a = math.radians(deg)
    rw, rh = inscribed_rectangle(w, h, a)
    # All four corners of the centred crop, rotated back, must lie inside the original image.
    for sx, sy in [(-1, -1), (-1, 1), (1, -1), (1, 1)]:
        x, y = sx * rw / 2, sy * rh / 2
        xr, yr = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
        assert abs(xr) <= w / 2 + 1e-6 and abs(yr) <= h / 2 + 1e-6
    if deg == 0:
        assert (rw, rh) == pytest.approx((w, h))
    # Tight: growing it by 2% in both directions leaves the image.
    grown = [(sx * rw * 1.01, sy * rh * 1.01) for sx, sy in [(-1, -1), (-1, 1), (1, -1), (1, 1)]]
    assert any(abs(x * math.cos(a) + y * math.sin(a)) > w / 2 or
               abs(-x * math.sin(a) + y * math.cos(a)) > h / 2 for x, y in grown)


def test_rotate_crop_has_no_black_corners():
    img = Image.new("RGB", (200, 150), (200, 150, 120))
    import random
    random.seed(3)
    for _ in range(10):
        out = np.asarray(RotateInscribedCrop()(img))
        assert out.min() > 100  # no fill colour from outside the photo


def test_epoch_sampler_is_a_pure_function_of_seed_and_epoch():
    targets = np.array([0] * 50 + [1] * 10 + [2] * 3)
    s = EpochSampler(targets, seed=5)
    s.set_epoch(2)
    first = list(s)
    s.set_epoch(0)
    s.set_epoch(2)
    assert list(s) == first and sorted(r for r, _ in first) == list(range(len(targets)))
    s.set_epoch(3)
    assert list(s) != first
    capped = EpochSampler(targets, seed=1, class_cap=8)
    rows = [r for r, _ in capped]
    assert len(rows) == len(capped) == 24
    assert np.bincount(targets[rows]).tolist() == [8, 8, 8]
    balanced = EpochSampler(np.array([0] * 900 + [1] * 100), seed=0, balanced=True)
    share = np.mean([np.array([0] * 900 + [1] * 100)[r] for r, _ in balanced])
    assert 0.4 < share < 0.6
    eval_rows = list(EpochSampler(targets, shuffle=False))
    assert eval_rows == [(i, None) for i in range(len(targets))]


def test_class_weights():
    w = class_weights([0, 0, 0, 1], 3)
    assert w.tolist() == pytest.approx([4 / 6, 2.0, 0.0])
    assert class_weights([0, 0, 0, 1], 3, power=0.5).tolist() == pytest.approx(
        [math.sqrt(4 / 6), math.sqrt(2.0), 0.0])


def test_freezing_schedules():
    assert trainable_blocks(get_recipe(mode="full"), 9, 0) == 9
    assert trainable_blocks(get_recipe(mode="finetune", unfreeze=4), 9, 5) == 4
    assert trainable_blocks(get_recipe(mode="features"), 9, 0) == 0
    r = get_recipe(mode="progressive", unfreeze=6, progressive_stages=3, epochs=8)
    schedule = [trainable_blocks(r, 9, e) for e in range(8)]
    assert schedule[0] == 0 and schedule[-1] == 6
    assert schedule == sorted(schedule) and len(set(schedule)) == 4


def test_deferred_reweighting_weights_the_loss_from_its_epoch():
    import torch

    from dermlearn.models import create_backbone
    from dermlearn.models.lesion_classifier import LesionClassifier
    from dermlearn.training.module import LesionModule

    with pytest.raises(RecipeError, match="class_weights_from_epoch"):
        get_recipe("default").replace(class_weights_from_epoch=-1)
    recipe = get_recipe("default").replace(class_weights_from_epoch=2, label_smoothing=0.0)
    model = LesionClassifier(create_backbone("efficientnet_lite0", weights="none", num_classes=0), 2)
    module = LesionModule(model, recipe, ["a", "b"], class_weights=np.array([1.0, 9.0]))
    module.eval()  # no dropout or batch-norm updates: the same logits at every epoch
    torch.manual_seed(0)
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 0, 1])
    logits = module(images).detach()
    plain = torch.nn.functional.cross_entropy(logits, targets)
    weighted = torch.nn.functional.cross_entropy(logits, targets, weight=torch.tensor([1.0, 9.0]))

    class Trainer:  # what training_step reads of Lightning's trainer
        world_size = 1
        current_epoch = 0

    module._trainer = trainer = Trainer()
    module.log = lambda *a, **k: None
    for epoch, expected in ((0, plain), (1, plain), (2, weighted), (5, weighted)):
        trainer.current_epoch = epoch
        loss = module.training_step((images, None, targets), 0)["loss"]
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5), epoch
    assert not torch.isclose(plain, weighted)


def test_class_prior_is_the_epochs_label_distribution():
    targets = [0, 0, 0, 1, 2, 2]
    np.testing.assert_allclose(EpochSampler(targets).class_prior(4), [0.5, 1 / 6, 1 / 3, 0])
    for kw in ({"class_cap": 2}, {"balanced": True}):  # every present class equally often
        np.testing.assert_allclose(EpochSampler(targets, **kw).class_prior(4), [1 / 3] * 3 + [0])


def test_logit_adjusted_loss_shifts_training_logits_by_tau_log_prior():
    import torch

    from dermlearn.models import create_backbone
    from dermlearn.models.lesion_classifier import LesionClassifier
    from dermlearn.training.module import LesionModule

    with pytest.raises(RecipeError, match="logit_adjustment"):
        get_recipe("default").replace(logit_adjustment=-0.5)
    recipe = get_recipe("default").replace(logit_adjustment=0.5, class_weights=False,
                                            label_smoothing=0.0)
    model = LesionClassifier(create_backbone("efficientnet_lite0", weights="none", num_classes=0), 2)
    with pytest.raises(ValueError, match="class_prior"):
        LesionModule(model, recipe, ["a", "b"])
    prior = np.array([0.9, 0.1])
    module = LesionModule(model, recipe, ["a", "b"], class_prior=prior)
    module.eval()
    torch.manual_seed(0)
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 0, 1])
    logits = module(images).detach()
    adjusted = logits + 0.5 * torch.log(torch.tensor(prior, dtype=torch.float32))
    expected = torch.nn.functional.cross_entropy(adjusted, targets)

    class Trainer:  # what training_step reads of Lightning's trainer
        world_size = 1
        current_epoch = 0

    module._trainer = Trainer()
    module.log = lambda *a, **k: None
    loss = module.training_step((images, None, targets), 0)["loss"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() != pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item())
    assert torch.equal(module(images).detach(), logits)  # predictions are not adjusted
    assert "logit_offset" not in module.state_dict()  # derived from the data, not saved


def test_soft_target_loss_is_weighted_cross_entropy_and_mixup_mixes():
    import torch

    from dermlearn.models import create_backbone
    from dermlearn.models.lesion_classifier import LesionClassifier
    from dermlearn.training.module import LesionModule

    for bad in ({"mixup_alpha": -1.0}, {"mixup_prob": 1.5}, {"cutmix_alpha": 1.0, "metadata": True}):
        with pytest.raises(RecipeError, match="mixup"):
            get_recipe("default").replace(**bad)
    weight = np.array([1.0, 9.0])
    model = LesionClassifier(create_backbone("efficientnet_lite0", weights="none", num_classes=0), 2)
    plain = LesionModule(model, get_recipe("default"), ["a", "b"], class_weights=weight)
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 2), torch.tensor([0, 1, 0, 0])
    one_hot = torch.nn.functional.one_hot(targets, 2).float()
    loss, _ = plain._soft_loss(logits, one_hot, world=1)
    expected = torch.nn.functional.cross_entropy(logits, targets, weight=torch.tensor(weight).float())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)

    recipe = get_recipe("default").replace(mixup_alpha=0.4, cutmix_alpha=1.0, label_smoothing=0.0)
    module = LesionModule(model, recipe, ["a", "b"], class_weights=weight)
    images = torch.randn(4, 3, 32, 32)
    np.random.seed(0)
    mixed, soft = module.mixup(images.clone(), targets)
    assert soft.shape == (4, 2) and torch.allclose(soft.sum(dim=1), torch.ones(4))
    assert not torch.equal(mixed, images) and not torch.equal(soft, one_hot)
    np.random.seed(0)  # the draw is a function of numpy's seed (set per epoch by the module)
    again, soft_again = module.mixup(images.clone(), targets)
    assert torch.equal(again, mixed) and torch.equal(soft_again, soft)
