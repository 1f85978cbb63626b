"""The Lightning module: loss, freezing modes, optimiser and schedule of a recipe.

Lightning owns the loop, checkpoints, early stopping, precision and multi-process; this
module only says what one step is and which parameters learn at which rate.
"""
from __future__ import annotations

import math
import warnings

import lightning as L
import numpy as np
import torch
from torch import nn

from dermlearn.evaluation.metrics import classification_metrics
from dermlearn.models.backbones import blocks
from dermlearn.models.lesion_classifier import LesionClassifier
from dermlearn.training.recipes import Recipe


def trainable_blocks(recipe: Recipe, n_blocks: int, epoch: int) -> int:
    """How many top backbone blocks learn at ``epoch`` (0-based) under the recipe's mode."""
    if recipe.mode == "full":
        return n_blocks
    if recipe.mode == "finetune":
        return min(recipe.unfreeze, n_blocks)
    if recipe.mode == "progressive":  # head only, then `unfreeze` blocks in `stages` steps
        stages = max(1, recipe.progressive_stages)
        stage = min(stages, epoch * (stages + 1) // max(1, recipe.epochs))
        return min(n_blocks, math.ceil(min(recipe.unfreeze, n_blocks) * stage / stages))
    return 0  # features: frozen backbone


def _mixup(recipe: Recipe, num_classes: int):
    """timm's batch Mixup/CutMix for the recipe (it also applies the label smoothing), or
    None when both alphas are 0."""
    if not (recipe.mixup_alpha or recipe.cutmix_alpha):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha,
                 prob=recipe.mixup_prob, label_smoothing=recipe.label_smoothing,
                 num_classes=num_classes)


class LesionModule(L.LightningModule):
    """Trains a :class:`LesionClassifier` with the recipe's loss, freezing and optimiser."""

    def __init__(self, model: LesionClassifier, recipe: Recipe, classes: list[str],
                 class_weights: np.ndarray | None = None,
                 class_prior: np.ndarray | None = None,
                 soft_targets: np.ndarray | None = None):
        """``class_weights`` (C,): the loss's class weights or None; ``class_prior`` (C,): the
        epoch's label distribution, needed when the recipe's ``logit_adjustment`` is on;
        ``soft_targets`` (N, C): a teacher's probabilities for each row of the training
        dataset (distillation, :mod:`dermlearn.training.distill`), or None."""
        super().__init__()
        self.model = model
        self.recipe = recipe
        self.classes = classes
        self.blocks = blocks(model.backbone)
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None \
            else None
        self.loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=recipe.label_smoothing)
        offset = None
        if recipe.logit_adjustment:
            if class_prior is None:
                raise ValueError("logit_adjustment needs the class_prior of the training draw")
            prior = torch.as_tensor(np.asarray(class_prior, dtype=np.float64))
            offset = (recipe.logit_adjustment * torch.log(prior.clamp_min(1e-12))).float()
        self.register_buffer("logit_offset", offset, persistent=False)
        self.register_buffer("soft_targets", None if soft_targets is None else
                             torch.as_tensor(np.asarray(soft_targets), dtype=torch.float32),
                             persistent=False)
        self.mixup = _mixup(recipe, len(classes))
        self._val_probs: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []
        self.last_val_metrics: dict = {}
        self.last_val_loss: float | None = None
        self.last_val_probs: np.ndarray | None = None
        self.model.train()
        self.apply_freezing(0)

    # -- freezing ----------------------------------------------------------------------
    def apply_freezing(self, epoch: int) -> int:
        """Set requires_grad per block for ``epoch``; frozen blocks also keep BN statistics."""
        n = trainable_blocks(self.recipe, len(self.blocks), epoch)
        self._n_trainable = n
        for i, block in enumerate(self.blocks):
            learn = i >= len(self.blocks) - n
            for p in block.parameters():
                p.requires_grad_(learn)
        return n

    def _set_frozen_eval(self) -> None:
        for block in self.blocks[: len(self.blocks) - self._n_trainable]:
            block.eval()

    def setup(self, stage: str) -> None:
        """Under DDP (which records the trainable parameters once, when it wraps the model),
        mark every block that will ever learn in this run as trainable before the wrap; the
        epoch's freezing is applied again at each epoch start (progressive mode)."""
        if stage == "fit" and self.trainer.world_size > 1:
            n = max(trainable_blocks(self.recipe, len(self.blocks), e)
                    for e in range(max(1, self.recipe.epochs)))
            for block in self.blocks[len(self.blocks) - n:]:
                for p in block.parameters():
                    p.requires_grad_(True)

    def on_train_epoch_start(self) -> None:
        self.apply_freezing(self.current_epoch)
        self._set_frozen_eval()
        # Dropout and any other in-step randomness: a pure function of (seed, epoch).
        torch.manual_seed(self.recipe.seed * 100_003 + self.current_epoch)
        if self.mixup is not None:  # timm's Mixup draws from numpy's global generator
            np.random.seed((self.recipe.seed * 100_003 + self.current_epoch) % 2**32)

    # -- steps ---------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(images, metadata if self.model.metadata is not None else None)

    def _to_device_layout(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) \
            if self.recipe.channels_last else images

    def loss_weight(self) -> torch.Tensor | None:
        """The class weights (C,) of this epoch's loss: None before ``class_weights_from_epoch``
        (deferred re-weighting) or without class weights."""
        weighted = self.current_epoch >= self.recipe.class_weights_from_epoch  # 0 without a trainer
        return self.loss.weight if weighted else None

    def training_step(self, batch, batch_idx):
        images, metadata, targets = batch[:3]  # an ImageItem batch
        mixed = None
        if self.mixup is not None and len(targets) % 2 == 0:  # (N, C) soft targets
            images, mixed = self.mixup(images, targets)
        logits = self(self._to_device_layout(images), metadata)
        if self.logit_offset is not None:  # logit adjustment: a larger margin for rare classes
            logits = logits + self.logit_offset
        world = self.trainer.world_size if self._trainer is not None else 1
        if mixed is not None:
            loss, batch_loss = self._soft_loss(logits.float(), mixed, world)
        elif world == 1:
            loss = nn.functional.cross_entropy(logits.float(), targets, weight=self.loss_weight(),
                                               label_smoothing=self.loss.label_smoothing)
            batch_loss = loss.detach()
        else:
            loss, batch_loss = self._distributed_loss(logits.float(), targets, world)
        if self.soft_targets is not None:  # distillation: the teacher's share of the loss
            from dermlearn.training.distill import distillation_loss

            share = self.recipe.distill_weight
            soft = distillation_loss(logits.float(), self.soft_targets[batch[3]],
                                     self.recipe.distill_temperature)
            loss = (1 - share) * loss + share * soft
            batch_loss = (1 - share) * batch_loss + share * soft.detach()
        self.log("train_loss", batch_loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(targets))  # under DDP already the global batch's loss
        return {"loss": loss, "batch_loss": batch_loss}

    def _distributed_loss(self, logits: torch.Tensor, targets: torch.Tensor,
                          world: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(this process's loss term, the global batch's loss) under DDP.

        The loss of a global batch is sum_i l_i / sum_i w_(y_i) over all processes (l_i: the
        class-weighted, label-smoothed per-image loss; w = 1 without class weights), exactly
        what one process computes with reduction "mean". DDP averages gradients over the W
        processes, so each returns W * sum_(i in its part) l_i / (global sum of weights).
        """
        weight = self.loss_weight()
        per_image = nn.functional.cross_entropy(
            logits, targets, weight=weight, reduction="none",
            label_smoothing=self.loss.label_smoothing)
        weights = weight[targets] if weight is not None else torch.ones_like(per_image)
        return self._reduce(per_image, weights, world)

    def _soft_loss(self, logits: torch.Tensor, soft: torch.Tensor,
                   world: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss term, batch loss) for soft targets (N, C) (mixup/CutMix, label smoothing
        included): l_i = -sum_c w_c t_ic log p_ic over sum_i sum_c w_c t_ic, which for one-hot
        targets is the class-weighted cross-entropy."""
        weight = self.loss_weight()
        weighted = soft * weight if weight is not None else soft
        per_image = -(weighted * torch.log_softmax(logits, dim=1)).sum(dim=1)
        return self._reduce(per_image, weighted.sum(dim=1), world)

    def _reduce(self, per_image: torch.Tensor, weights: torch.Tensor,
                world: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sum l_i / sum w_i over the global batch, and this process's share of it."""
        if world == 1:
            loss = per_image.sum() / weights.sum()
            return loss, loss.detach()
        local = torch.stack([weights.sum(), per_image.detach().sum()]).double()
        total = self.trainer.strategy.reduce(local.clone(), reduce_op="sum")
        loss = per_image.sum() * (world / total[0].float())
        return loss, (total[1] / total[0]).float()

    def validation_step(self, batch, batch_idx):
        images, metadata, targets = batch[:3]  # an ImageItem batch
        logits = self(self._to_device_layout(images), metadata).float()
        self._val_probs.append(torch.softmax(logits, dim=1).cpu())
        self._val_targets.append(targets.cpu())

    def on_validation_epoch_start(self) -> None:
        self._val_probs, self._val_targets = [], []

    def on_validation_epoch_end(self) -> None:
        if not self._val_probs:
            return
        probs = torch.cat(self._val_probs)
        targets = torch.cat(self._val_targets)
        if self.trainer.world_size > 1:  # every process: the whole validation set, in order
            sampler = self.trainer.val_dataloaders.sampler
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", ".*all_gather is deprecated.*")
                gathered = self.all_gather(probs), self.all_gather(targets)  # (W, n, ...)
            probs, targets = (torch.from_numpy(sampler.merge_shards(g.cpu().numpy()))
                              for g in gathered)
        probs = probs.numpy().astype(np.float64)
        targets = targets.numpy()
        self.last_val_loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(targets)),
                                                                  targets], 1e-12, None))))
        metrics = classification_metrics(targets, probs, self.classes)
        self.last_val_metrics, self.last_val_probs = metrics, probs
        self.log("val_loss", self.last_val_loss, sync_dist=True)
        for key in ("accuracy", "balanced_accuracy", "auc_macro"):
            value = metrics[key]
            self.log(f"val_{key}", float(value) if value == value else 0.0, prog_bar=True,
                     sync_dist=True)  # identical in every process: the mean changes nothing

    # -- optimisation --------------------------------------------------------------------
    def _param_groups(self) -> list[dict]:
        """Head at the recipe's lr; in progressive mode each deeper block at lr * decay^depth."""
        r = self.recipe
        head = [p for n, p in self.model.named_parameters() if not n.startswith("backbone.")]
        groups = [{"params": head, "lr": r.lr}]
        decay = r.progressive_lr_decay if r.mode == "progressive" else 1.0
        for depth, block in enumerate(reversed(self.blocks)):
            params = list(block.parameters())
            if params:
                groups.append({"params": params, "lr": r.lr * decay ** (depth + 1 if
                                                                        decay != 1.0 else 0)})
        return groups

    def configure_optimizers(self):
        r = self.recipe
        groups = self._param_groups()
        if r.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=r.lr, weight_decay=r.weight_decay, eps=r.eps)
        elif r.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov,
                                        weight_decay=r.weight_decay)
        else:
            optimizer = torch.optim.RMSprop(groups, lr=r.lr, alpha=r.rmsprop_alpha, eps=r.eps,
                                            momentum=r.momentum, weight_decay=r.weight_decay)
        total = max(1, r.epochs)

        def factor(epoch: int) -> float:
            if r.scheduler == "step":
                return r.step_gamma ** (epoch // max(1, r.step_epochs))
            if epoch < r.warmup_epochs:
                return (epoch + 1) / (r.warmup_epochs + 1)
            if r.scheduler == "cosine":
                progress = (epoch - r.warmup_epochs) / max(1, total - r.warmup_epochs)
                return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
            return 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "epoch"}}
