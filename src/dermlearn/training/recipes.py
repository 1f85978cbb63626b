"""Training recipes: every knob of a run in one dataclass, with the reference papers' protocols.

``get_recipe("esteva2017", epochs=3)`` returns the named recipe with fields overridden; a
YAML/JSON config file holds the same fields (``load_recipe(path)``). The resolved recipe is
saved with every run as ``config.json``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from dermlearn.errors import DermlearnError
from dermlearn.models.views import first_views

MODES = ("features", "finetune", "full", "progressive")
OPTIMIZERS = ("adamw", "sgd", "rmsprop")
SCHEDULERS = ("cosine", "step", "none")
AUGMENTATIONS = ("default", "esteva", "benedetti", "none")
SAMPLERS = ("none", "balanced")
HEADS = ("logreg", "mlp")
STRATEGIES = ("auto", "ddp", "ddp_spawn")
SELECT_METRICS = ("balanced_accuracy", "accuracy", "auc_macro")  # validation, higher is better
PRECISIONS = ("32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64", "64-true")


class RecipeError(DermlearnError):
    """A recipe name, field or value is invalid."""


@dataclass
class Recipe:
    """All settings of a training run (units: epochs, images, learning rate per step)."""

    name: str = "default"
    # model
    backbone: str = "efficientnet_lite0"
    weights: str = "default"
    image_size: int | list[int] | None = 176  # px: N (square), [H, W], or None: the backbone's
    crop_pct: float | None = None         # evaluation centre crop (shorter side resized to
                                          # size / crop_pct); 1: the whole frame; None: the
                                          # backbone's (0.875 for EfficientNet-Lite0)
    mode: str = "finetune"                # features | finetune | full | progressive
    unfreeze: int = 6                     # finetune: top N blocks trainable (see models.blocks)
    progressive_stages: int = 3           # progressive: head, then this many unfreezing steps
    progressive_lr_decay: float = 0.5     # progressive: lr factor per step deeper
    drop_rate: float = 0.2
    head: str = "logreg"                  # features mode: logreg | mlp
    metadata: bool = False                # fuse age/sex/site into the head
    # classes
    max_class_size: int | None = None     # Esteva's partitioning; None: one class per label
    # optimisation
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 5e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    rmsprop_alpha: float = 0.9            # RMSProp decay
    eps: float = 1e-8
    scheduler: str = "cosine"
    warmup_epochs: int = 1
    step_epochs: int = 30                 # step scheduler: divide lr by step_gamma every N epochs
    step_gamma: float = 1 / 16
    label_smoothing: float = 0.1
    ema_decay: float = 0.998              # > 0: validate and keep an exponential moving average
                                          # of the weights, updated every step after warmup
                                          # (decay lowered for short runs: callbacks.ema_schedule);
                                          # 0: off
    # imbalance and augmentation
    augment: str = "default"
    mixup_alpha: float = 0.0              # > 0: mixup (Zhang et al. 2018) with Beta(a, a) weights
    cutmix_alpha: float = 0.0             # > 0: CutMix (Yun et al. 2019); both: one or the other
                                          # per batch (timm's Mixup); 0 and 0: off
    mixup_prob: float = 1.0               # share of batches mixed
    class_weights: bool = True
    class_weight_power: float = 0.5       # weights (n / (C n_c)) ** power; 1 = fully balanced
    class_weights_from_epoch: int = 0     # deferred re-weighting (Cao et al. 2019): the loss is
                                          # unweighted before this epoch (0-based), weighted from it
    logit_adjustment: float = 0.0         # tau > 0: logit-adjusted loss (Menon et al. 2021), the
                                          # training logits plus tau * log(class prior of an
                                          # epoch); predictions stay unadjusted; 0: off
    sampler: str = "none"
    class_cap: int | None = None          # per-class images per epoch (undersample / oversample)
    # control
    select_metric: str = "balanced_accuracy"
    early_stopping: int | None = None     # patience in epochs
    second_round_epochs: int = 0          # Benedetti: a second round from the best checkpoint
    second_round_lr_factor: float = 0.1
    val_fraction: float = 0.2
    folds: int = 1
    seed: int = 0
    precision: str = "32"                 # "32" or "bf16-mixed" (slower for training on most CPUs)
    channels_last: bool = True
    num_workers: int = 2                  # data-loader workers per process
    image_cache: bool = True              # training images decoded+resized once, kept on disk
    # data-parallel (Lightning DDP; see docs/scaling.md): batch_size above is the *global*
    # batch, split evenly over devices x num_nodes processes, so lr keeps its meaning
    devices: int = 1                      # processes (CPU) or GPUs per node
    num_nodes: int = 1
    strategy: str = "auto"                # auto | ddp | ddp_spawn (auto: see training.distributed)
    tta: int = 1                          # features mode: views averaged per image (1-8)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _typed(f.name, f.type, getattr(self, f.name)))
        checks = [("mode", MODES), ("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS),
                  ("augment", AUGMENTATIONS), ("sampler", SAMPLERS), ("head", HEADS),
                  ("strategy", STRATEGIES), ("select_metric", SELECT_METRICS),
                  ("precision", PRECISIONS)]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise RecipeError(f"recipe field {name}={getattr(self, name)!r} is not one of "
                                  f"{', '.join(allowed)}")
        # (field, lowest, highest, whether the highest is allowed); None values mean "off"
        ranges = [("epochs", 1, None, True), ("batch_size", 1, None, True),
                  ("folds", 1, None, True), ("devices", 1, None, True),
                  ("num_nodes", 1, None, True), ("unfreeze", 0, None, True),
                  ("progressive_stages", 1, None, True), ("max_class_size", 1, None, True),
                  ("class_cap", 1, None, True), ("early_stopping", 1, None, True),
                  ("warmup_epochs", 0, None, True), ("step_epochs", 1, None, True),
                  ("second_round_epochs", 0, None, True), ("num_workers", 0, None, True),
                  ("seed", 0, 2**32 - 1, True), ("drop_rate", 0, 1, False),
                  ("label_smoothing", 0, 1, False), ("weight_decay", 0, None, True),
                  ("momentum", 0, None, True), ("rmsprop_alpha", 0, 1, False),
                  ("class_weight_power", 0, None, True)]
        for name, low, high, closed in ranges:
            value = getattr(self, name)
            if value is not None and (value < low or high is not None and
                                      (value > high or value == high and not closed)):
                span = (f">= {low}" if high is None else
                        f"in [{low}, {high}{']' if closed else ')'}")
                raise RecipeError(f"recipe field {name} must be {span}, not {value}")
        for name in ("eps", "step_gamma", "progressive_lr_decay", "second_round_lr_factor"):
            if getattr(self, name) <= 0:
                raise RecipeError(f"recipe field {name} must be > 0, not {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise RecipeError(f"val_fraction must be in (0, 1), not {self.val_fraction}")
        if self.batch_size % (self.devices * self.num_nodes):
            raise RecipeError(f"batch_size {self.batch_size} is the global batch and must be "
                              f"divisible by devices x num_nodes = "
                              f"{self.devices * self.num_nodes}")
        if not 0 <= self.ema_decay < 1:
            raise RecipeError(f"ema_decay must be in [0, 1) (0: off), not {self.ema_decay}")
        if self.class_weights_from_epoch < 0:
            raise RecipeError(f"class_weights_from_epoch must be >= 0, not "
                              f"{self.class_weights_from_epoch}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0 or not 0 <= self.mixup_prob <= 1:
            raise RecipeError(f"mixup_alpha and cutmix_alpha must be >= 0 and mixup_prob in "
                              f"[0, 1], not {self.mixup_alpha}, {self.cutmix_alpha}, "
                              f"{self.mixup_prob}")
        if (self.mixup_alpha or self.cutmix_alpha) and self.metadata:
            raise RecipeError("mixup/CutMix mixes images but not their metadata: use them "
                              "without metadata=true")
        if self.logit_adjustment < 0:
            raise RecipeError(f"logit_adjustment must be >= 0 (0: off), not "
                              f"{self.logit_adjustment}")
        if self.lr <= 0:
            raise RecipeError(f"lr must be > 0, not {self.lr}")
        self.image_size = _image_size(self.image_size)
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise RecipeError(f"crop_pct must be in (0, 1] (None: the backbone's), not "
                              f"{self.crop_pct}")
        try:
            first_views(self.tta)
        except DermlearnError as exc:
            raise RecipeError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> "Recipe":
        return _apply(self, overrides)


def _typed(name: str, annotation: str, value: Any) -> Any:
    """``value`` as the field's annotated type ("float", "int | None", ...); numbers written as
    text ("5e-4", which YAML 1.1 reads as a string) become numbers; anything else a RecipeError."""
    kinds = [part.strip() for part in annotation.split("|")]
    if value is None and "None" in kinds or "dict" in kinds or "list[int]" in kinds:
        return value  # dicts are free-form; image_size has its own parser (_image_size)
    if "bool" in kinds and isinstance(value, bool):
        return value
    if not isinstance(value, bool):
        if "int" in kinds and isinstance(value, int):
            return value
        if "float" in kinds:
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if math.isfinite(number):
                return number
        if "str" in kinds and isinstance(value, (str, int, float)):
            return str(value)
    wanted = " or ".join({"float": "a number", "int": "an integer", "bool": "true/false",
                          "str": "a string", "None": "null"}.get(k, k) for k in kinds)
    finite = " (finite)" if "float" in kinds else ""
    raise RecipeError(f"recipe field {name} must be {wanted}{finite}, not {value!r}")


def _image_size(value: Any) -> int | list[int] | None:
    """``image_size`` checked: None, a side N (square) or [H, W] (also "HxW"), each >= 16 px."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.lower().split("x")
    sides = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        ints = [int(v) for v in sides if not isinstance(v, bool) and float(v) == int(v)]
    except (TypeError, ValueError):
        ints = []
    if len(ints) != len(sides) or len(ints) not in (1, 2) or min(ints) < 16:
        raise RecipeError(f"image_size must be a side in px (>= 16), [H, W] or 'HxW', not "
                          f"{value!r}")
    return ints[0] if len(set(ints)) == 1 else ints


def _apply(recipe: Recipe, overrides: Mapping[str, Any]) -> Recipe:
    known = {f.name: f for f in fields(Recipe)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise RecipeError(f"unknown recipe field(s) {unknown}; known: {', '.join(known)}")
    values = recipe.to_dict()
    values.update(overrides)
    return Recipe(**values)


RECIPES: dict[str, Recipe] = {
    # What trains best on a 2-core CPU in reasonable time: EfficientNet-Lite0 with its bundled
    # ImageNet weights, stem and first two stages frozen, 176 px, class-weighted loss, AdamW
    # with cosine decay, an exponential moving average of the weights, selection on balanced
    # accuracy.
    "default": Recipe(),
    # Esteva et al. 2017: Inception v3 at 299, all layers fine-tuned, RMSProp (decay 0.9,
    # momentum 0.9, epsilon 0.1), lr 1e-3 divided by 16 every 30 epochs, rotations 0-359 cropped
    # to the largest inscribed upright rectangle and vertical flips; training classes from the
    # partitioning algorithm (max class size 1000), evaluation at coarser levels by PA.
    "esteva2017": Recipe(
        name="esteva2017", backbone="inception_v3", image_size=299, mode="full",
        optimizer="rmsprop", lr=1e-3, momentum=0.9, rmsprop_alpha=0.9, eps=0.1,
        weight_decay=4e-5, scheduler="step", step_epochs=30, step_gamma=1 / 16,
        warmup_epochs=0, label_smoothing=0.0, augment="esteva", class_weights=False,
        max_class_size=1000, epochs=60, batch_size=32, drop_rate=0.0, ema_decay=0.0),
    # Benedetti et al. 2020: Inception-ResNet-v2 at 299, top layers fine-tuned, SGD with
    # Nesterov momentum, lr 6e-4, batch 10, class weights, per-class cap 450 with augmentation
    # (flips, translations, rotations, shear), early stopping (patience 15), then a second
    # round of 20 epochs from the best checkpoint.
    "benedetti2020": Recipe(
        name="benedetti2020", backbone="inception_resnet_v2", image_size=299, mode="finetune",
        unfreeze=4, optimizer="sgd", lr=6e-4, momentum=0.9, nesterov=True, weight_decay=0.0,
        scheduler="none", warmup_epochs=0, label_smoothing=0.0, batch_size=10,
        class_weights=True, class_weight_power=1.0, class_cap=450, augment="benedetti", early_stopping=15,
        second_round_epochs=20, second_round_lr_factor=0.1, epochs=100, drop_rate=0.0,
        ema_decay=0.0),
}


def get_recipe(name: str = "default", /, **overrides: Any) -> Recipe:
    """The named recipe with ``overrides`` (field name -> value, ``name`` included) applied."""
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return _apply(RECIPES[name], overrides)


def load_recipe(path: str | Path, **overrides: Any) -> Recipe:
    """A recipe from a YAML/JSON file: ``recipe: NAME`` (base, default ``default``) plus fields."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except FileNotFoundError:
        raise RecipeError(f"{path}: config file not found") from None
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid YAML/JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of recipe fields")
    if "recipe" in data:  # the base recipe, by name; "name" alone may be the run's own name
        base = data.pop("recipe")
        if not isinstance(base, str) or base not in RECIPES:
            raise RecipeError(f"{path}: unknown recipe {base!r}; choose one of "
                              f"{', '.join(RECIPES)}")
    else:
        name = data.get("name")
        base = name if isinstance(name, str) and name in RECIPES else "default"
    try:
        recipe = get_recipe(base, **data)
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    return recipe.replace(**overrides)
