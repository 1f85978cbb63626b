"""Fitting one fold with Lightning: the fold's data loaders, the Trainer and its callbacks, one or
two rounds (Benedetti's second round from the best checkpoint), resuming from ``last.ckpt``,
and the final model's validation probabilities.

Works in one process or in every process of a data-parallel run (Lightning DDP over
``recipe.devices x num_nodes``); only global rank 0 returns probabilities and writes files.
"""
from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dermlearn import __version__
from dermlearn.data import Manifest
from dermlearn.models.backbones import create_backbone
from dermlearn.models.lesion_classifier import LesionClassifier, MetadataEncoder
from dermlearn.models.preprocessing import PreprocessConfig
from dermlearn.training.recipes import Recipe
from dermlearn.training.runs import FoldData, RunSetup

__all__ = ["fit_fold", "model_config", "preprocess_config", "resumed_epoch",
           "training_image_cache", "validation_probabilities"]


def preprocess_config(backbone: torch.nn.Module, recipe: Recipe) -> PreprocessConfig:
    """The backbone's preprocessing with the recipe's input size, evaluation crop and colour
    constancy."""
    cfg = PreprocessConfig.from_model(backbone)
    if recipe.image_size:
        h, w = (recipe.image_size, recipe.image_size) if isinstance(recipe.image_size, int) \
            else recipe.image_size
        cfg = dataclasses.replace(cfg, input_size=(3, h, w))
    if recipe.crop_pct is not None:
        cfg = dataclasses.replace(cfg, crop_pct=recipe.crop_pct)
    if recipe.color_constancy is not None:
        cfg = dataclasses.replace(cfg, color_constancy=recipe.color_constancy)
    return cfg


def training_image_cache(cfg: PreprocessConfig, root: str | Path | None = None):
    """The decoded-image cache for training images at ``cfg``'s input size."""
    from dermlearn.training.image_cache import ImageCache, cache_side

    return ImageCache(root, side=cache_side(max(cfg.image_size), cfg.crop_pct),
                      interpolation=cfg.interpolation)


def model_config(recipe: Recipe, manifest: Manifest, fold: FoldData, classes: list[str],
                 cfg: PreprocessConfig, backbone: torch.nn.Module,
                 encoder: MetadataEncoder | None) -> dict[str, Any]:
    """The model's config.json; ``training_data`` counts the images this fold's model learned
    from (its validation part and any test part excluded)."""
    return {
        "dermlearn_version": __version__,
        "backbone": recipe.backbone,
        "weights": getattr(backbone, "dermlearn_weights", recipe.weights),
        "classes": classes,
        "class_names": {c: manifest.taxonomy.display_name(c) for c in classes},
        "taxonomy": manifest.taxonomy.to_dict(),
        "preprocess": cfg.to_dict(),
        "metadata": encoder.to_dict() if encoder else None,
        "temperature": 1.0,
        "recipe": recipe.to_dict(),
        "training_data": training_data(manifest, fold.train_rows, fold.val_rows),
    }


def training_data(manifest: Manifest, train_rows: np.ndarray,
                  val_rows: np.ndarray) -> dict[str, Any]:
    """The model card's summary of the images a model learned from and those held out."""
    train = manifest.subset(train_rows)
    return {"source": manifest.source, "format": manifest.format, "n_images": len(train),
            "n_lesions": train.n_lesions, "classes": train.class_counts(),
            "n_validation": len(val_rows)}


def resumed_epoch(checkpoint: Path) -> int:
    """The epoch (0-based) a fit resumed from Lightning ``checkpoint`` runs first."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    try:
        return int(state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):  # a checkpoint without loop state: the epoch after it
        return int(state.get("epoch", -1)) + 1


def _epochs_trained(checkpoint: Path) -> int:
    """How many epochs the weights of a Lightning ``checkpoint`` had trained."""
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True).get("epoch", -1)) + 1


def _score(checkpoint: Path, metric: str) -> float:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for cb_state in state.get("callbacks", {}).values():
        if isinstance(cb_state, dict) and "best_model_score" in cb_state:
            score = cb_state["best_model_score"]
            return float(score) if score is not None else float("-inf")
    return float("-inf")


def validation_probabilities(model: LesionClassifier, config: dict, manifest: Manifest,
                             rows: np.ndarray, recipe: Recipe, device: str) -> np.ndarray:
    """Probabilities (N, C) of a fold's validation images by its final model, through the one
    scoring loop with the saved model's preprocessing (so ``predict`` with the torch backend
    reproduces them bit for bit). The model is left on the CPU, contiguous."""
    from dermlearn.inference import Predictor, score_images

    predictor = Predictor([model], config, device)
    table = manifest.table.iloc[rows]
    probs = score_images(predictor, table["path"].astype(str).tolist(),
                         metadata=predictor.encode_metadata(table),
                         batch_size=recipe.batch_size * 2, num_workers=recipe.num_workers,
                         skip_unreadable=False, device=device).probabilities
    model.to("cpu").to(memory_format=torch.contiguous_format)
    return probs


class _FoldData:
    """The fold's datasets, sampler and loaders (each loader with its own generator, so
    starting workers never shifts the global random state that dropout draws from)."""

    def __init__(self, setup: RunSetup, fold: FoldData, cfg: PreprocessConfig,
                 meta: np.ndarray | None, device: str, recipe: Recipe):
        from dermlearn.data.dataset import ImageDataset, make_loader
        from dermlearn.models.preprocessing import eval_transform
        from dermlearn.parallel import per_process_batch
        from dermlearn.training.augment import train_transform
        from dermlearn.training.sampler import EpochSampler

        targets = setup.targets
        paths = setup.manifest.table["path"].to_numpy()

        def dataset(rows, transform, image_cache=None):
            return ImageDataset(paths[rows], transform, targets=targets[rows],
                                metadata=meta[rows] if meta is not None else None,
                                image_cache=image_cache)

        # Training images only: validation keeps the exact eval transform of the original.
        image_cache = training_image_cache(cfg) if recipe.image_cache else None
        train_ds = dataset(fold.train_rows, train_transform(recipe.augment, cfg), image_cache)
        val_ds = dataset(fold.val_rows, eval_transform(cfg))
        workers = recipe.num_workers
        loader_kw = dict(num_workers=workers, persistent_workers=workers > 0,
                         pin_memory=device == "cuda", seed=recipe.seed)
        # recipe.batch_size is the global batch; under DDP each process takes its share of
        # every step, its samplers sharding the same seeded order (EpochSampler) -- so one
        # step holds the same images at any process count.
        self.world = recipe.devices * recipe.num_nodes
        self.batch = per_process_batch(recipe.batch_size, self.world)
        self.sampler = EpochSampler(targets[fold.train_rows], seed=recipe.seed,
                                    class_cap=recipe.class_cap,
                                    balanced=recipe.sampler == "balanced")
        self.train = make_loader(train_ds, batch_size=self.batch, sampler=self.sampler,
                                 drop_last=self.sampler.epoch_size > recipe.batch_size,
                                 **loader_kw)
        # A refit (every training image, no validation part) trains without validating.
        self.val = make_loader(val_ds, batch_size=self.batch * 2,
                               sampler=EpochSampler(targets[fold.val_rows], shuffle=False),
                               **loader_kw) if len(fold.val_rows) else None

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps(self.batch, self.world, self.train.drop_last)


def _fit_round(setup: RunSetup, fold: FoldData, data: _FoldData, module, round_: int,
               epochs: int, start_from: Path | None, progress: bool) -> tuple[Path, bool]:
    """One Lightning fit of ``epochs`` epochs (resumed from the round's ``last.ckpt`` when it
    exists); returns (best checkpoint, whether this process is global rank 0)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from dermlearn.parallel import accelerator, lightning_strategy
    from dermlearn.training.callbacks import (
        AtomicCheckpointIO,
        HistoryWriter,
        ImagesPerSecondBar,
        ThreadsPerProcess,
        weight_ema,
    )

    recipe, out, device = module.recipe, setup.plan.out, setup.plan.device
    rdir = out / "checkpoints" / f"fold_{fold.fold}" / f"round{round_}"
    # Every epoch (Lightning's save_last only follows an improved best): --resume's start.
    latest = ModelCheckpoint(dirpath=rdir, filename="last", enable_version_counter=False)
    callbacks = [latest, HistoryWriter(out / "history.csv", fold.fold, round_),
                 ThreadsPerProcess()]
    checkpoint = None
    if data.val is not None:  # the best epoch by validation; a refit keeps its last
        checkpoint = ModelCheckpoint(dirpath=rdir, filename="best", monitor="val_" +
                                     recipe.select_metric, mode="max")
        callbacks.insert(0, checkpoint)
    if progress:
        callbacks.append(ImagesPerSecondBar(recipe.batch_size))
    if recipe.early_stopping and round_ == 1 and data.val is not None:
        callbacks.append(EarlyStopping(monitor="val_" + recipe.select_metric, mode="max",
                                       patience=recipe.early_stopping))
    ema = weight_ema(module.recipe, epochs, data.steps_per_epoch)
    if ema is not None:  # validation, checkpoints and the final model use the average
        callbacks.append(ema)
    trainer = L.Trainer(
        accelerator=accelerator(device), devices=recipe.devices, num_nodes=recipe.num_nodes,
        strategy=lightning_strategy(recipe.strategy, data.world, device,
                                    find_unused_parameters=recipe.mode == "progressive"),
        sync_batchnorm=data.world > 1 and device == "cuda",  # CPU: per-process BN statistics
        use_distributed_sampler=False,  # EpochSampler shards itself
        precision=recipe.precision, max_epochs=epochs, callbacks=callbacks,
        plugins=[AtomicCheckpointIO()], logger=False, enable_model_summary=False,
        enable_progress_bar=progress, num_sanity_val_steps=0, default_root_dir=str(out),
        log_every_n_steps=10)
    last = rdir / "last.ckpt"
    resume_from = last if last.exists() else None
    # Lightning creates the training iterator, whose workers start prefetching at once, before
    # it calls set_epoch; so the sampler must already hold the epoch that runs first: 0, or
    # the one a resumed run continues with.
    data.sampler.set_epoch(resumed_epoch(resume_from) if resume_from else 0)
    if resume_from is None and start_from is not None:
        state = torch.load(start_from, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
        warnings.filterwarnings("ignore", ".*can run with static graph optimizations.*")
        warnings.filterwarnings("ignore", ".*self.log.'train_loss'.*sync_dist=True.*")
        warnings.filterwarnings("ignore", ".*validation_step.*no .val_dataloader.*")  # a refit
        trainer.fit(module, data.train, data.val, ckpt_path=resume_from, weights_only=True)
        trainer.strategy.barrier("dermlearn.fit")  # checkpoints written before anyone reads
    best = Path(checkpoint.best_model_path) if checkpoint and checkpoint.best_model_path \
        else last
    return (best if best.exists() else last), trainer.is_global_zero


def fit_fold(setup: RunSetup, fold: FoldData, progress: bool, recipe: Recipe | None = None
             ) -> tuple[LesionClassifier, dict, np.ndarray | None]:
    """Fit one fold with Lightning (``recipe``: the run's unless given, e.g. a refit's); returns
    (model, config, validation probabilities (N, C)). The probabilities are None in every DDP
    process but global rank 0, which alone writes the run's files. The config records
    ``selected_epochs``: how many epochs of the first round the kept weights had trained."""
    import lightning as L

    from dermlearn.training.module import LesionModule
    from dermlearn.training.sampler import class_weights

    recipe = recipe or setup.plan.recipe
    manifest, classes = setup.manifest, setup.classes
    L.seed_everything(recipe.seed, workers=False, verbose=False)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    backbone = create_backbone(recipe.backbone, weights=recipe.weights, num_classes=0)
    cfg = preprocess_config(backbone, recipe)
    table = manifest.table
    encoder = MetadataEncoder.fit(table["site"].to_numpy()[fold.train_rows]) \
        if recipe.metadata else None
    model = LesionClassifier(backbone, len(classes), metadata_dim=encoder.dim if encoder else 0,
                             drop_rate=recipe.drop_rate)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if recipe.compile:  # in place: parameter names, checkpoints and the saved model unchanged
        model.compile()
    data = _FoldData(setup, fold, cfg, encoder.encode_table(table) if encoder else None,
                     setup.plan.device, recipe)
    train_targets = setup.targets[fold.train_rows]
    weights = class_weights(train_targets, len(classes), recipe.class_weight_power) \
        if recipe.class_weights else None
    prior = data.sampler.class_prior(len(classes))
    soft = None
    if recipe.teacher:  # the rows of the training dataset, in its order
        from dermlearn.training.distill import teacher_probabilities

        soft = teacher_probabilities(setup, progress)[fold.train_rows]
    module = LesionModule(model, recipe, classes, weights, prior, soft)
    best, is_zero = _fit_round(setup, fold, data, module, 1, recipe.epochs, None, progress)
    selected_epochs = _epochs_trained(best)
    if recipe.second_round_epochs:
        second = recipe.replace(lr=recipe.lr * recipe.second_round_lr_factor,
                                epochs=recipe.second_round_epochs, warmup_epochs=0,
                                class_weights_from_epoch=0)
        module2 = LesionModule(model, second, classes, weights, prior, soft)
        best2, is_zero = _fit_round(setup, fold, data, module2, 2, second.epochs, best,
                                    progress)
        best = max([best, best2], key=lambda p: _score(p, recipe.select_metric))
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    if not is_zero:
        return module.model.eval(), {}, None
    config = model_config(recipe, manifest, fold, classes, cfg, backbone, encoder)
    config["selected_epochs"] = selected_epochs
    model = module.model.eval()
    probs = validation_probabilities(model, config, manifest, fold.val_rows, recipe,
                                     setup.plan.device)
    return model, config, probs
