"""Training recipes: every knob of a run in one pydantic model, and the papers' protocols.

``get_recipe("esteva2017", epochs=3)`` returns the named recipe with fields overridden; a
YAML/JSON config file holds the same fields (``load_recipe(path)``). The resolved recipe is
saved with every run as ``config.json``. Each field declares its type, range and meaning
(``Recipe.model_fields``); ``dermlearn train``'s recipe flags are generated from them
(:mod:`dermlearn.training.recipe_flags`). A wrong value raises :class:`RecipeError` naming the
field and what it wants.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import yaml
from pydantic import ConfigDict, Field, field_validator, model_validator

from dermlearn.errors import DermlearnError
from dermlearn.errors.validation import ValidatedModel, problem
from dermlearn.parallel import STRATEGIES

Mode = Literal["features", "finetune", "full", "progressive"]
Optimizer = Literal["adamw", "sgd", "rmsprop"]
Scheduler = Literal["cosine", "step", "none"]
Augmentation = Literal["default", "esteva", "benedetti", "none"]
Sampler = Literal["none", "balanced"]
Head = Literal["logreg", "mlp"]
Strategy = Literal[STRATEGIES]  # Lightning launchers (dermlearn.parallel)
SelectMetric = Literal["balanced_accuracy", "accuracy", "auc_macro"]  # validation, higher is better
Precision = Literal["32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64",
                    "64-true"]

MODES = get_args(Mode)
OPTIMIZERS = get_args(Optimizer)
SCHEDULERS = get_args(Scheduler)
AUGMENTATIONS = get_args(Augmentation)
SAMPLERS = get_args(Sampler)
HEADS = get_args(Head)
SELECT_METRICS = get_args(SelectMetric)
PRECISIONS = get_args(Precision)


class RecipeError(DermlearnError):
    """A recipe name, field or value is invalid."""


class Recipe(ValidatedModel):
    """All settings of a training run (units: epochs, images, learning rate per step).

    Immutable: ``recipe.replace(epochs=3)`` is a checked copy with fields changed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    error: ClassVar[type[DermlearnError]] = RecipeError
    what: ClassVar[str] = "recipe field"

    name: str = Field("default", description="the recipe's name (a run may give its own)")
    # model
    backbone: str = Field(
        "efficientnet_lite0", description="timm model name or preset (efficientnet_lite0/1/2, "
        "inception_v3, resnet50, vgg16, inception_resnet_v2, ...)")
    weights: str = Field("default", description="pretrained weights: default | bundled | timm "
                         "| none | PATH")
    image_size: int | list[int] | None = Field(
        176, description="input size in px: N (square), [H, W] or 'HxW' (e.g. 150x200), each "
        ">= 16; None: the backbone's")
    crop_pct: float | None = Field(
        None, gt=0, le=1, description="evaluation centre crop (shorter side resized to size / "
        "crop_pct); 1: the whole frame; None: the backbone's (0.875 for EfficientNet-Lite0)")
    color_constancy: float | None = Field(
        None, ge=1, description="Shades of Gray colour constancy (Minkowski norm p; 6 as the ISIC "
        "2019 winners) applied to every photograph in training and prediction; None: off")
    mode: Mode = Field("finetune", description="features: a head on frozen features | "
                       "finetune: the top `unfreeze` blocks trained | full: every layer | "
                       "progressive: the head, then deeper blocks in stages")
    unfreeze: int = Field(6, ge=0, description="finetune/progressive: top N blocks trainable "
                          "(see models.blocks)")
    progressive_stages: int = Field(3, ge=1, description="progressive: head, then this many "
                                    "unfreezing steps")
    progressive_lr_decay: float = Field(0.5, gt=0, description="progressive: lr factor per "
                                        "step deeper")
    drop_rate: float = Field(0.2, ge=0, lt=1, description="dropout rate before the classifier")
    head: Head = Field("logreg", description="features mode: the head trained on the features")
    metadata: bool = Field(False, description="fuse age, sex and site into the head")
    # classes
    max_class_size: int | None = Field(
        None, ge=1, description="training classes by Esteva's partitioning algorithm (largest "
        "class size); None: one class per label")
    # optimisation
    epochs: int = Field(10, ge=1, description="training epochs")
    batch_size: int = Field(32, ge=1, description="the global batch: split evenly over devices "
                            "x num_nodes processes, so lr keeps its meaning")
    optimizer: Optimizer = Field("adamw", description="the optimiser")
    lr: float = Field(5e-4, gt=0, description="learning rate (peak, after warm-up)")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay (decoupled for AdamW)")
    momentum: float = Field(0.9, ge=0, description="SGD and RMSProp momentum")
    nesterov: bool = Field(False, description="SGD: Nesterov momentum")
    rmsprop_alpha: float = Field(0.9, ge=0, lt=1, description="RMSProp decay")
    eps: float = Field(1e-8, gt=0, description="optimiser epsilon (AdamW, RMSProp)")
    scheduler: Scheduler = Field("cosine", description="learning-rate schedule after warm-up: "
                                 "cosine decay | step (see step_epochs) | none (constant)")
    warmup_epochs: int = Field(1, ge=0, description="epochs of linear learning-rate warm-up")
    step_epochs: int = Field(30, ge=1, description="step scheduler: multiply lr by step_gamma "
                             "every N epochs")
    step_gamma: float = Field(1 / 16, gt=0, description="step scheduler: lr factor per step")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the loss")
    ema_decay: float = Field(
        0.998, ge=0, lt=1, description="> 0: validate and keep an exponential moving average of "
        "the weights, updated every step after warmup (decay lowered for short runs: "
        "callbacks.ema_schedule); 0: off")
    # imbalance and augmentation
    augment: Augmentation = Field("default", description="training augmentation: default | "
                                  "esteva (rotations, inscribed crop, flips) | benedetti "
                                  "(flips, translations, rotations, shear) | none")
    mixup_alpha: float = Field(0.0, ge=0, description="> 0: mixup (Zhang et al. 2018) with "
                               "Beta(a, a) weights; 0: off")
    cutmix_alpha: float = Field(0.0, ge=0, description="> 0: CutMix (Yun et al. 2019); with "
                                "mixup_alpha too: one or the other per batch (timm's Mixup); "
                                "0: off")
    mixup_prob: float = Field(1.0, ge=0, le=1, description="share of batches mixed")
    class_weights: bool = Field(True, description="class-weighted loss")
    class_weight_power: float = Field(0.5, ge=0, description="class weights (n / (C n_c)) ** "
                                      "power; 1: fully balanced")
    class_weights_from_epoch: int = Field(
        0, ge=0, description="deferred re-weighting (Cao et al. 2019): the loss is unweighted "
        "before this epoch (0-based), weighted from it")
    logit_adjustment: float = Field(
        0.0, ge=0, description="tau > 0: logit-adjusted loss (Menon et al. 2021), the training "
        "logits plus tau * log(class prior of an epoch); predictions stay unadjusted; 0: off")
    sampler: Sampler = Field("none", description="images per epoch: none (each once) | balanced "
                             "(drawn with replacement, every class equally often)")
    class_cap: int | None = Field(None, ge=1, description="images per class per epoch "
                                  "(undersample / oversample); None: all")
    # control
    select_metric: SelectMetric = Field("balanced_accuracy", description="validation metric "
                                        "that selects the best checkpoint (higher is better)")
    early_stopping: int | None = Field(None, ge=1, description="patience in epochs; None: off")
    second_round_epochs: int = Field(0, ge=0, description="Benedetti: a second round of N "
                                     "epochs from the best checkpoint; 0: off")
    second_round_lr_factor: float = Field(0.1, gt=0, description="second round: lr factor")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="lesion-grouped validation share")
    folds: int = Field(1, ge=1, description="train K lesion-grouped folds (an ensemble)")
    refit: bool = Field(False, description="after the validation part (or the folds) has chosen "
                        "the number of epochs, train the final model on every training image "
                        "for that many epochs (as scikit-learn's search refits); the validation "
                        "figures then estimate this procedure")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed (splits, sampling, "
                      "initialisation)")
    precision: Precision = Field("32", description="Lightning precision; bf16-mixed is slower "
                                 "for training on most CPUs")
    channels_last: bool = Field(True, description="channels-last memory format")
    compile: bool = Field(False, description="torch.compile the network for training (worth "
                          "it on a GPU for long runs; the first steps are slower; the saved "
                          "model is the same)")
    num_workers: int = Field(2, ge=0, description="data-loader workers per process")
    image_cache: bool = Field(True, description="training images decoded and resized once, "
                              "kept on disk")
    # data-parallel (Lightning DDP; see docs/scaling.md)
    devices: int = Field(1, ge=1, description="data-parallel processes (CPU) or GPUs per node; "
                         "batch_size is the global batch, divided among the processes")
    num_nodes: int = Field(1, ge=1, description="machines (launch with torchrun or srun, see "
                           "docs/scaling.md)")
    strategy: Strategy = Field("auto", description="Lightning launcher (auto: ddp from the "
                               "command line, see docs/scaling.md)")
    tta: int = Field(1, ge=1, description="features mode: test-time views averaged per image "
                     "(1-8)")
    # knowledge distillation (Hinton et al. 2015)
    teacher: str | None = Field(None, description="a model (or run) folder whose probabilities "
                                "the network also learns from: soft targets on the training "
                                "images, computed once per image over the test-time views")
    distill_weight: float = Field(0.5, ge=0, le=1, description="with a teacher: the soft "
                                  "targets' share of the loss (the labels' is 1 - it)")
    distill_temperature: float = Field(2.0, gt=0, description="with a teacher: the temperature "
                                       "both distributions are softened by")
    extra: dict[str, Any] = Field(default_factory=dict, description="free-form notes kept with "
                                  "the run")

    @field_validator("image_size", mode="before")
    @classmethod
    def _check_image_size(cls, value: Any) -> int | list[int] | None:
        return _image_size(value)

    @field_validator("tta")
    @classmethod
    def _check_tta(cls, value: int) -> int:
        from dermlearn.models.views import first_views  # torch: imported when a run needs it

        try:
            first_views(value)
        except DermlearnError as exc:
            raise problem(f"recipe field {exc}") from None
        return value

    @model_validator(mode="after")
    def _check_together(self) -> Recipe:
        if self.batch_size % (self.devices * self.num_nodes):
            raise problem(f"recipe field batch_size={self.batch_size} is the global batch and "
                          f"must be divisible by devices x num_nodes = "
                          f"{self.devices * self.num_nodes}")
        if (self.mixup_alpha or self.cutmix_alpha) and self.metadata:
            raise problem("recipe fields mixup_alpha/cutmix_alpha and metadata: mixup/CutMix "
                          "mixes images but not their metadata; use them without metadata=true")
        if self.teacher and (self.mixup_alpha or self.cutmix_alpha):
            raise problem("recipe fields teacher and mixup_alpha/cutmix_alpha: a teacher's soft "
                          "targets belong to unmixed images; distil without mixup/CutMix")
        if self.teacher and self.mode == "features":
            raise problem("recipe fields teacher and mode=features: distillation trains the "
                          "network; use mode finetune, full or progressive")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain JSON-safe dict (``Recipe(**d)`` reads it back)."""
        return self.model_dump()

    def replace(self, **overrides: Any) -> Recipe:
        """A checked copy with ``overrides`` (field name -> value) applied."""
        return _apply(self, overrides)


def _image_size(value: Any) -> int | list[int] | None:
    """``image_size`` checked: None, a side N (square) or [H, W] (also "HxW"), each >= 16 px."""
    if value is None:
        return None
    original = value
    if isinstance(value, str):
        value = value.lower().split("x")
    sides = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        ints = [int(v) for v in sides if not isinstance(v, bool) and float(v) == int(v)]
    except (TypeError, ValueError, OverflowError):
        ints = []
    if len(ints) != len(sides) or len(ints) not in (1, 2) or min(ints) < 16:
        raise problem(f"recipe field image_size must be a side in px (>= 16), [H, W] or "
                      f"'HxW', not {original!r}")
    return ints[0] if len(set(ints)) == 1 else ints


def _apply(recipe: Recipe, overrides: Mapping[str, Any]) -> Recipe:
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
        class_weights=True, class_weight_power=1.0, class_cap=450, augment="benedetti",
        early_stopping=15, second_round_epochs=20, second_round_lr_factor=0.1, epochs=100,
        drop_rate=0.0, ema_decay=0.0),
}


#: Recipes that train several networks on one split and combine them into one model
#: (``dermlearn ensemble``): name -> {member: the default recipe's fields it changes}.
ENSEMBLE_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    # Issue 21: the three ImageNet backbones that install offline (EfficientNet-Lite0/1/2), each
    # on the whole native 150x200 HAM10000 frame (one preprocessing, so they combine) for 4
    # epochs (the tried whole-frame run peaked at epoch 4), to fit the three in about 2 h on
    # 2 CPU cores.
    "ensemble3": {f"lite{k}": {"name": f"ensemble3-lite{k}",
                               "backbone": f"efficientnet_lite{k}", "image_size": [150, 200],
                               "crop_pct": 1.0, "epochs": 4} for k in range(3)},
}


def get_recipe(name: str = "default", /, **overrides: Any) -> Recipe:
    """The named recipe with ``overrides`` (field name -> value, ``name`` included) applied."""
    if name in ENSEMBLE_RECIPES:
        raise RecipeError(f"recipe {name!r} trains {len(ENSEMBLE_RECIPES[name])} networks: give "
                          f"it to train (dermlearn train DATA --recipe {name}), not get_recipe")
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}; choose one of "
                          f"{', '.join([*RECIPES, *ENSEMBLE_RECIPES])}")
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
