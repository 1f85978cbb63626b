"""``train()``: one call from a dataset to a saved, validated model directory.

A run directory ``RUN`` holds:

* ``run.json`` -- what was asked (data, recipe, device), so ``--resume RUN`` can continue;
* ``config.json`` -- the resolved recipe; ``splits.csv`` -- the lesion-grouped folds used;
* ``checkpoints/fold_K/`` -- Lightning checkpoints (atomic; ``last.ckpt`` for resuming);
* ``model/`` -- ``model.safetensors`` + ``config.json`` (an ensemble of ``members/K`` with
  ``--folds K``); ``history.csv``; ``val_predictions.csv`` (ISIC format plus ``label``,
  ``fold``); ``metrics.json`` (accuracy, balanced accuracy, per-class AUC, taxonomy levels).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermlearn import __version__
from dermlearn.atomic import check_output_dir
from dermlearn.data import Manifest, load
from dermlearn.data.loading import parse_spec
from dermlearn.errors import DataError, DermlearnError
from dermlearn.evaluation.calibration import (TEMPERATURE_BOUNDS, apply_temperature,
                                              expected_calibration_error, fit_temperature)
from dermlearn.evaluation.levels import level_metrics
from dermlearn.evaluation.metrics import classification_metrics
from dermlearn.models.backbones import create_backbone
from dermlearn.models.lesion_classifier import (LesionClassifier, MetadataEncoder, read_config,
                                                save_model, update_config)
from dermlearn.models.preprocessing import PreprocessConfig
from dermlearn.models.views import first_views
from dermlearn.splits import TEST, check_no_leakage, load_splits, make_splits, save_splits
from dermlearn.taxonomy import Taxonomy, assign_classes, partition
from dermlearn.parallel import env_rank, resolve_device
from dermlearn.training.recipes import Recipe, get_recipe

log = logging.getLogger("dermlearn.training")


class RunError(DermlearnError):
    """A run directory cannot be created or resumed."""


@dataclasses.dataclass
class FoldData:
    """Everything one fold's training needs (indices into the manifest)."""

    fold: str
    train_rows: np.ndarray
    val_rows: np.ndarray


def _preprocess_config(backbone: torch.nn.Module, recipe: Recipe) -> PreprocessConfig:
    cfg = PreprocessConfig.from_model(backbone)
    if recipe.image_size:
        h, w = (recipe.image_size, recipe.image_size) if isinstance(recipe.image_size, int) \
            else recipe.image_size
        cfg = dataclasses.replace(cfg, input_size=(3, h, w))
    if recipe.crop_pct is not None:
        cfg = dataclasses.replace(cfg, crop_pct=recipe.crop_pct)
    return cfg


def training_image_cache(cfg: PreprocessConfig, root: str | Path | None = None):
    """The decoded-image cache for training images at ``cfg``'s input size."""
    from dermlearn.training.image_cache import ImageCache, cache_side

    return ImageCache(root, side=cache_side(max(cfg.image_size), cfg.crop_pct),
                      interpolation=cfg.interpolation)


def training_classes(manifest: Manifest, rows: np.ndarray, recipe: Recipe) -> list[str]:
    """Leaf labels present in ``rows`` or, with ``max_class_size``, Esteva's partitioning."""
    labels = manifest.table["label"].to_numpy()[rows]
    counts = pd.Series(labels).value_counts().to_dict()
    if recipe.max_class_size:
        return partition(manifest.taxonomy, counts, recipe.max_class_size)
    return [c for c in manifest.classes if c in counts]


def _resolve_splits(manifest: Manifest, recipe: Recipe, splits: str | Path | None,
                    out: Path, reuse_saved: bool = True) -> pd.DataFrame:
    """The run's split table: its saved ``splits.csv`` when ``reuse_saved`` (a resumed run, or
    a worker process reading what rank 0 wrote) and it exists, else ``splits`` (a split file),
    else lesion-grouped automatic splits. Nothing is written here (see :func:`_save_splits`)."""
    saved = out / "splits.csv"
    if reuse_saved and saved.exists():
        table = load_splits(saved, manifest)
    elif splits is not None:
        table = load_splits(splits, manifest)
    else:
        n_parts = recipe.folds if recipe.folds > 1 else max(2, int(round(1 / recipe.val_fraction)))
        try:
            table = make_splits(manifest, n_parts, group="lesion", seed=recipe.seed)
        except DataError as exc:
            asked = (f"--folds {recipe.folds}" if recipe.folds > 1 else
                     f"val_fraction {recipe.val_fraction} (1 part in {n_parts})")
            raise RunError(f"{asked} needs at least {n_parts} lesions: {exc}") from None
    table = table.set_index("image_id").loc[manifest.table["image_id"]].reset_index()
    check_no_leakage(table, manifest=manifest)
    return table


def _save_splits(table: pd.DataFrame, out: Path) -> None:
    """``out/splits.csv``, atomically: other processes of a data-parallel run may read it."""
    saved = out / "splits.csv"
    tmp = saved.with_name(f".{saved.name}.tmp")
    save_splits(table, tmp)
    os.replace(tmp, saved)


def absolute_data_spec(spec: str | Path) -> str:
    """``spec`` (a path or ``FORMAT:PATH``) with its path made absolute, the prefix kept as
    written: what ``run.json`` records, so that the run means the same data from any folder."""
    fmt, path = parse_spec(spec)
    absolute = str(path.resolve())
    return f"{str(spec).partition(':')[0]}:{absolute}" if fmt else absolute


def _resumed_data(state: dict, run_file: Path) -> str:
    """The dataset of a resumed run. Runs written before run.json held absolute paths recorded
    the path as given, relative to the folder ``train`` was started in."""
    data = state.get("data")
    if not data:
        raise RunError(f"{run_file}: no 'data' recorded; cannot resume")
    _, path = parse_spec(data)
    if not path.exists():
        if not path.is_absolute():
            raise RunError(f"{run_file}: the run's data {data!r} is a path relative to the folder "
                           f"the run was started in and is not found from {Path.cwd()}; resume "
                           f"from that folder, or write its absolute path into {run_file}")
        raise RunError(f"{run_file}: the run's data {data} is no longer there (moved?); put it "
                       f"back, or write its new path into {run_file}")
    return data


def _resumed_splits(state: dict, run_file: Path, out: Path,
                    splits: str | Path | None) -> str | None:
    """The split file a resumed run was started with (None: automatic splits)."""
    if "splits" not in state and not (out / "splits.csv").exists():
        # A run.json of an older dermlearn, written before its splits were resolved: whether
        # it was given --splits is unknown, and nothing was trained yet.
        raise RunError(f"{run_file}: the run stopped before its splits were made and does not "
                       f"record a --splits file; start it again (remove {out} or choose "
                       f"another --out)")
    recorded = state.get("splits")
    if splits is not None and (recorded is None
                               or Path(splits).resolve() != Path(recorded).resolve()):
        raise RunError(f"{run_file}: the run was started with "
                       + (f"--splits {recorded}" if recorded else "automatic splits")
                       + f"; it cannot be resumed with --splits {splits}")
    return recorded


def _folds(table: pd.DataFrame, recipe: Recipe) -> list[FoldData]:
    fold = table["fold"].astype(str).to_numpy()
    parts = sorted(set(fold) - {TEST})
    usable = fold != TEST
    chosen = parts if recipe.folds > 1 else parts[:1]
    if recipe.folds > 1 and len(parts) != recipe.folds:
        raise RunError(f"the split file has {len(parts)} folds but the recipe asks for "
                       f"{recipe.folds}")
    return [FoldData(k, np.flatnonzero(usable & (fold != k)), np.flatnonzero(fold == k))
            for k in chosen]


def _model_config(recipe: Recipe, manifest: Manifest, fold: FoldData, classes: list[str],
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
        "training_data": _training_data(manifest, fold.train_rows, fold.val_rows),
    }


def _training_data(manifest: Manifest, train_rows: np.ndarray,
                   val_rows: np.ndarray) -> dict[str, Any]:
    """The model card's summary of the images a model learned from and those held out."""
    train = manifest.subset(train_rows)
    return {"source": manifest.source, "format": manifest.format, "n_images": len(train),
            "n_lesions": train.n_lesions, "classes": train.class_counts(),
            "n_validation": len(val_rows)}


def _train_fold_lightning(manifest: Manifest, fold: FoldData, targets: np.ndarray,
                          classes: list[str], recipe: Recipe, out: Path, device: str,
                          progress: bool) -> tuple[LesionClassifier, dict, np.ndarray | None]:
    """Fit one fold with Lightning (one process, or DDP over ``recipe.devices x num_nodes``).

    Returns (model, config, validation probabilities); the probabilities are None in every DDP
    process but global rank 0, which alone writes the run's files.
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from dermlearn.data.dataset import ImageDataset, make_loader
    from dermlearn.training.augment import train_transform
    from dermlearn.models.preprocessing import eval_transform
    from dermlearn.training.callbacks import (AtomicCheckpointIO, HistoryWriter,
                                              ImagesPerSecondBar, ThreadsPerProcess, weight_ema)
    from dermlearn.parallel import accelerator, lightning_strategy, per_process_batch
    from dermlearn.training.sampler import EpochSampler, class_weights
    from dermlearn.training.module import LesionModule

    L.seed_everything(recipe.seed, workers=False, verbose=False)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    backbone = create_backbone(recipe.backbone, weights=recipe.weights, num_classes=0)
    cfg = _preprocess_config(backbone, recipe)
    table = manifest.table
    encoder = MetadataEncoder.fit(table["site"].to_numpy()[fold.train_rows]) \
        if recipe.metadata else None
    meta = encoder.encode_table(table) if encoder else None
    model = LesionClassifier(backbone, len(classes), metadata_dim=encoder.dim if encoder else 0,
                             drop_rate=recipe.drop_rate)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    paths = table["path"].to_numpy()

    def dataset(rows, transform, image_cache=None):
        return ImageDataset(paths[rows], transform, targets=targets[rows],
                            metadata=meta[rows] if meta is not None else None,
                            image_cache=image_cache)

    # Training images only: validation keeps the exact eval transform of the original image.
    image_cache = training_image_cache(cfg) if recipe.image_cache else None
    train_ds = dataset(fold.train_rows, train_transform(recipe.augment, cfg), image_cache)
    val_ds = dataset(fold.val_rows, eval_transform(cfg))
    workers = recipe.num_workers
    # Each loader has its own generator (make_loader): starting workers never shifts the global
    # random state, so a run resumed mid-way draws what an uninterrupted one draws.
    loader_kw = dict(num_workers=workers, persistent_workers=workers > 0,
                     pin_memory=device == "cuda", seed=recipe.seed)
    # recipe.batch_size is the global batch; under DDP each process takes its share of every
    # step, its samplers sharding the same seeded order (EpochSampler) -- so one step holds the
    # same images at any process count.
    world = recipe.devices * recipe.num_nodes
    batch = per_process_batch(recipe.batch_size, world)
    sampler = EpochSampler(targets[fold.train_rows], seed=recipe.seed,
                           class_cap=recipe.class_cap, balanced=recipe.sampler == "balanced")
    train_dl = make_loader(train_ds, batch_size=batch, sampler=sampler,
                           drop_last=sampler.epoch_size > recipe.batch_size, **loader_kw)
    val_dl = make_loader(val_ds, batch_size=batch * 2,
                         sampler=EpochSampler(targets[fold.val_rows], shuffle=False), **loader_kw)
    weights = class_weights(targets[fold.train_rows], len(classes), recipe.class_weight_power) \
        if recipe.class_weights else None
    prior = sampler.class_prior(len(classes))
    module = LesionModule(model, recipe, classes, weights, prior)
    ckpt_dir = out / "checkpoints" / f"fold_{fold.fold}"
    history = out / "history.csv"

    def fit(round_: int, epochs: int, module: LesionModule,
            start_from: Path | None) -> tuple[Path, bool]:
        """(best checkpoint, whether this process is global rank 0)."""
        rdir = ckpt_dir / f"round{round_}"
        checkpoint = ModelCheckpoint(dirpath=rdir, filename="best", monitor="val_" +
                                     recipe.select_metric, mode="max")
        # Every epoch (Lightning's save_last only follows an improved best): --resume's start.
        latest = ModelCheckpoint(dirpath=rdir, filename="last", enable_version_counter=False)
        callbacks = [checkpoint, latest, HistoryWriter(history, fold.fold, round_),
                     ThreadsPerProcess()]
        if progress:
            callbacks.append(ImagesPerSecondBar(recipe.batch_size))
        if recipe.early_stopping and round_ == 1:
            callbacks.append(EarlyStopping(monitor="val_" + recipe.select_metric, mode="max",
                                           patience=recipe.early_stopping))
        ema = weight_ema(module.recipe, epochs, sampler.steps(batch, world, train_dl.drop_last))
        if ema is not None:  # validation, checkpoints and the final model use the average
            callbacks.append(ema)
        trainer = L.Trainer(
            accelerator=accelerator(device), devices=recipe.devices, num_nodes=recipe.num_nodes,
            strategy=lightning_strategy(recipe.strategy, world, device,
                                        find_unused_parameters=recipe.mode == "progressive"),
            sync_batchnorm=world > 1 and device == "cuda",  # CPU: per-process BN statistics
            use_distributed_sampler=False,  # EpochSampler shards itself
            precision=recipe.precision, max_epochs=epochs, callbacks=callbacks,
            plugins=[AtomicCheckpointIO()], logger=False, enable_model_summary=False,
            enable_progress_bar=progress, num_sanity_val_steps=0, default_root_dir=str(out),
            log_every_n_steps=10)
        last = rdir / "last.ckpt"
        resume_from = last if last.exists() else None
        # Lightning creates the training iterator, whose workers start prefetching at once,
        # before it calls set_epoch; so the sampler must already hold the epoch that runs
        # first: 0, or the one a resumed run continues with.
        sampler.set_epoch(resumed_epoch(resume_from) if resume_from else 0)
        if resume_from is None and start_from is not None:
            state = torch.load(start_from, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
            warnings.filterwarnings("ignore", ".*can run with static graph optimizations.*")
            warnings.filterwarnings("ignore", ".*self.log.'train_loss'.*sync_dist=True.*")
            trainer.fit(module, train_dl, val_dl, ckpt_path=resume_from, weights_only=True)
            trainer.strategy.barrier("dermlearn.fit")  # checkpoints written before anyone reads
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else rdir / "last.ckpt"
        return (best if best.exists() else rdir / "last.ckpt"), trainer.is_global_zero

    best, is_zero = fit(1, recipe.epochs, module, None)
    if recipe.second_round_epochs:
        second = recipe.replace(lr=recipe.lr * recipe.second_round_lr_factor,
                                epochs=recipe.second_round_epochs, warmup_epochs=0,
                                class_weights_from_epoch=0)
        module2 = LesionModule(model, second, classes, weights, prior)
        best2, is_zero = fit(2, second.epochs, module2, best)
        best = max([best, best2], key=lambda p: _score(p, recipe.select_metric))
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    if not is_zero:
        return module.model.eval(), {}, None
    config = _model_config(recipe, manifest, fold, classes, cfg, backbone, encoder)
    model = module.model.eval().to(memory_format=torch.contiguous_format)
    probs = validation_probabilities(model, config, manifest, fold.val_rows, recipe, device)
    return model, config, probs


def resumed_epoch(checkpoint: Path) -> int:
    """The epoch (0-based) a fit resumed from Lightning ``checkpoint`` runs first."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    try:
        return int(state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):  # a checkpoint without loop state: the epoch after it
        return int(state.get("epoch", -1)) + 1


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
    reproduces them bit for bit)."""
    from dermlearn.inference import Predictor, score_images

    predictor = Predictor([model], config, device)
    table = manifest.table.iloc[rows]
    probs = score_images(predictor, table["path"].astype(str).tolist(),
                         metadata=predictor.encode_metadata(table), batch_size=recipe.batch_size * 2,
                         num_workers=recipe.num_workers, skip_unreadable=False,
                         device=device).probabilities
    model.to("cpu").to(memory_format=torch.contiguous_format)
    return probs


def _train_fold_features(manifest: Manifest, fold: FoldData, targets: np.ndarray,
                         classes: list[str], recipe: Recipe, features: np.ndarray,
                         backbone: torch.nn.Module, cfg: PreprocessConfig
                         ) -> tuple[LesionClassifier, dict, np.ndarray]:
    from dermlearn.models.lesion_classifier import head_config
    from dermlearn.training.features import fit_logreg_head, fit_mlp_head, head_to_classifier

    x_train, y_train = features[fold.train_rows], targets[fold.train_rows]
    weight = "balanced" if recipe.class_weights else None
    if recipe.head == "mlp":
        head = fit_mlp_head(x_train, y_train, len(classes), class_weight=weight, seed=recipe.seed)
    else:
        head = fit_logreg_head(x_train, y_train, len(classes), class_weight=weight,
                               seed=recipe.seed)
    with torch.inference_mode():
        logits = head(torch.from_numpy(features[fold.val_rows]).float())
        probs = torch.softmax(logits, dim=1).numpy().astype(np.float64)
    model = head_to_classifier(backbone, head, len(classes))
    config = _model_config(recipe, manifest, fold, classes, cfg, backbone, None)
    config["head"] = head_config(head)
    return model.eval(), config, probs


def _write_predictions(path: Path, manifest: Manifest, rows: np.ndarray, probs: np.ndarray,
                       classes: list[str], fold: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(probs, columns=classes)
    frame.insert(0, "image", manifest.table["image_id"].to_numpy()[rows])
    frame["label"] = manifest.table["label"].to_numpy()[rows]
    frame["fold"] = fold
    frame.to_csv(path, index=False)
    return frame


def evaluate_predictions(frame: pd.DataFrame, classes: list[str], manifest: Manifest) -> dict:
    """Metrics of a validation-predictions frame (columns ``classes`` + ``label``)."""
    probs = frame[classes].to_numpy(dtype=np.float64)
    targets = np.array([classes.index(c) for c in
                        assign_classes(manifest.taxonomy, frame["label"], classes)])
    metrics = classification_metrics(targets, probs, classes)
    metrics["levels"] = level_metrics(probs, frame["label"].tolist(), classes, manifest.taxonomy)
    return metrics


def _summarise_folds(per_fold: dict[str, dict]) -> dict:
    keys = ["accuracy", "balanced_accuracy", "auc_macro"]
    summary = {k: {"mean": float(np.mean([m[k] for m in per_fold.values()])),
                   "sd": float(np.std([m[k] for m in per_fold.values()], ddof=1))
                   if len(per_fold) > 1 else 0.0} for k in keys}
    levels = set.intersection(*(set(m["levels"]) for m in per_fold.values()))
    for level in sorted(levels):
        aucs = [m["levels"][level].get("auc") for m in per_fold.values()]
        if all(a is not None for a in aucs):
            summary[f"{level}_auc"] = {"mean": float(np.mean(aucs)),
                                       "sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0}
    return summary


def train(data: str | Path | None = None, out: str | Path = "runs/run", *,
          recipe: str | Recipe = "default", overrides: dict[str, Any] | None = None,
          splits: str | Path | None = None, device: str = "auto", resume: bool = False,
          progress: bool = True, feature_cache: str | Path | None = None,
          taxonomy: str | Path | Taxonomy | None = None) -> dict:
    """Train (or, with ``resume=True``, continue training) a model; returns ``metrics.json``.

    ``recipe`` is a name from :data:`~dermlearn.training.recipes.RECIPES` or a Recipe;
    ``overrides`` replace recipe fields. ``taxonomy`` reads the labels (built-in name, YAML/JSON
    file or ``"flat"``; default ``"dermatology"``); the tree is saved with the run and the
    model. With ``recipe.folds > 1`` one model per lesion-grouped fold is trained, saved as an
    ensemble, and metrics are given per fold, as mean +- sd and on the pooled out-of-fold
    predictions.
    """
    out = Path(out)
    run_file = out / "run.json"
    check_output_dir(out)  # before any work: not a file, nor under one
    if resume:
        if not run_file.exists():
            raise RunError(f"{out}: nothing to resume (no run.json)")
        ignored = [name for name, given in (
            ("data", data is not None), ("recipe", not (isinstance(recipe, str)
                                                        and recipe == "default")),
            ("overrides", bool(overrides)), ("device", device != "auto"),
            ("feature_cache", feature_cache is not None), ("taxonomy", taxonomy is not None))
            if given]
        if ignored:
            raise RunError(f"{out}: a resumed run continues with the data, recipe and settings "
                           f"of its run.json; drop {', '.join(ignored)} (or start a new run)")
        try:
            state = json.loads(run_file.read_text())
            recipe_obj = Recipe(**state["recipe"])
            device = state["device"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{run_file}: not a readable run record ({exc!r})") from None
        data = _resumed_data(state, run_file)
        splits = _resumed_splits(state, run_file, out, splits)
        feature_cache = state.get("feature_cache")
        taxonomy = state.get("taxonomy") or "dermatology"  # runs before 2026-12-03: the default
    else:
        if data is None:
            raise RunError("no dataset given")
        recipe_obj = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
        recipe_obj = recipe_obj.replace(**(overrides or {}))
        if run_file.exists() and env_rank(recipe_obj.devices) == 0:
            raise RunError(f"{out} already holds a run; use --resume {out} to continue it, or "
                           f"choose another --out")
        device = resolve_device(device)
        # Absolute, so that the run means the same files from any folder (--resume, and
        # evaluation's check that it does not score the model's own training images).
        data = absolute_data_spec(data)
        splits = str(Path(splits).expanduser().resolve()) if splits is not None else None
        feature_cache = str(Path(feature_cache).expanduser().resolve()) \
            if feature_cache else None
    recipe = recipe_obj
    # Data-parallel runs (recipe.devices x num_nodes > 1) execute this function in every
    # process; only global rank 0 writes files. Features mode runs in one process.
    rank = env_rank(recipe.devices)
    if rank != 0 and recipe.mode == "features":
        return {}
    # Everything is checked (data, splits, folds, classes) before the run folder is written:
    # a bad input leaves no run.json behind that would refuse the corrected command.
    manifest = load(data, taxonomy="dermatology" if taxonomy is None else taxonomy)
    table = _resolve_splits(manifest, recipe, splits, out, reuse_saved=resume or rank != 0)
    folds = _folds(table, recipe)
    usable = np.flatnonzero(table["fold"].astype(str).to_numpy() != TEST)
    classes = training_classes(manifest, usable, recipe)
    if len(classes) < 2:
        raise RunError(f"{manifest.source}: the training images hold {len(classes)} class(es) "
                       f"({', '.join(classes) or 'none'}); a classifier needs at least two")
    targets = np.full(len(manifest), -1, dtype=np.int64)
    targets[usable] = [classes.index(c) for c in assign_classes(
        manifest.taxonomy, manifest.table["label"].to_numpy()[usable], classes)]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{out}: cannot create the run folder ({exc.strerror or exc})") from None
    if rank == 0:
        _save_splits(table, out)
        if not resume:  # last: run.json marks a run that --resume can continue
            (out / "config.json").write_text(json.dumps(recipe.to_dict(), indent=2))
            run_file.write_text(json.dumps(
                {"data": data, "splits": splits, "device": device, "recipe": recipe.to_dict(),
                 "feature_cache": feature_cache, "taxonomy": manifest.taxonomy.to_dict(),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))

    features = backbone = cfg = None
    if recipe.mode == "features":
        from dermlearn.training.features import FeatureCache, extract_features

        backbone = create_backbone(recipe.backbone, weights=recipe.weights, num_classes=0)
        cfg = _preprocess_config(backbone, recipe)
        cache = FeatureCache(Path(feature_cache)) if feature_cache else FeatureCache.default()
        features = extract_features(manifest.subset(usable), backbone, cfg, cache=cache,
                                    batch_size=recipe.batch_size, num_workers=recipe.num_workers,
                                    views=first_views(recipe.tta), progress=progress)
        full = np.zeros((len(manifest), features.shape[1]), dtype=np.float32)
        full[usable] = features
        features = full

    member_dir = out / "model" / "members" if len(folds) > 1 else None
    frames, per_fold = [], {}
    for fold in folds:
        pred_path = out / f"val_predictions_fold_{fold.fold}.csv"
        model_dir = member_dir / fold.fold if member_dir else out / "model"
        if pred_path.exists() and (model_dir / "config.json").exists():
            frame = pd.read_csv(pred_path, dtype={"fold": str})  # finished before a restart
        else:
            if recipe.mode == "features":
                model, config, probs = _train_fold_features(manifest, fold, targets, classes,
                                                            recipe, features, backbone, cfg)
            else:
                model, config, probs = _train_fold_lightning(manifest, fold, targets, classes,
                                                             recipe, out, device, progress)
            if probs is None:  # a worker process of a data-parallel run: rank 0 writes
                continue
            config["fold"] = fold.fold
            frame = _write_predictions(pred_path, manifest, fold.val_rows, probs, classes,
                                       np.full(len(fold.val_rows), fold.fold))
            config["validation"] = _headline(evaluate_predictions(frame, classes, manifest))
            save_model(model, model_dir, config)
        frames.append(frame)
        per_fold[fold.fold] = evaluate_predictions(frame, classes, manifest)
    if rank != 0:
        return {}  # a worker process of a data-parallel run; rank 0 reports

    predictions = pd.concat(frames, ignore_index=True)
    predictions.to_csv(out / "val_predictions.csv", index=False)
    metrics = evaluate_predictions(predictions, classes, manifest)
    metrics.update({"classes": classes, "recipe": recipe.name, "backbone": recipe.backbone,
                    "mode": recipe.mode, "n_train_images": int(len(usable)),
                    "validation": "out-of-fold" if len(folds) > 1 else "lesion-grouped hold-out"})
    if len(folds) > 1:
        metrics["folds"] = {k: _headline(m) for k, m in per_fold.items()}
        metrics["cv"] = _summarise_folds(per_fold)
        _write_ensemble(out / "model", folds, manifest)
    metrics["calibration"] = _calibrate(out / "model", predictions, classes, manifest)
    metrics["ood"] = _fit_ood(out / "model", manifest, folds[0].train_rows, recipe, progress)
    update_config(out / "model", validation=_headline(metrics))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_jsonable))
    return metrics


#: Training images (at most) whose features set the out-of-distribution screen.
OOD_FIT_IMAGES = 1000


def _fit_ood(model_dir: Path, manifest: Manifest, rows: np.ndarray, recipe: Recipe,
             progress: bool) -> dict[str, Any]:
    """Fit and save the service's out-of-distribution screen (:mod:`dermlearn.inference.ood`) on
    up to :data:`OOD_FIT_IMAGES` training images (seeded choice, lesion-grouped thresholds)."""
    from dermlearn.inference import Predictor
    from dermlearn.inference.ood import fit_ood

    rng = np.random.default_rng(recipe.seed)
    chosen = np.sort(rng.permutation(rows)[:OOD_FIT_IMAGES])
    table = manifest.table.iloc[chosen]
    detector = fit_ood(Predictor.load(model_dir), table["path"].astype(str).tolist(),
                       labels=table["label"].astype(str).tolist(),
                       groups=table["lesion_id"].astype(str).tolist()
                       if table["lesion_id"].notna().all() else None, num_workers=recipe.num_workers,
                       batch_size=recipe.batch_size, progress=progress, seed=recipe.seed)
    detector.save(model_dir)
    return {"n_images": int(len(chosen)), "percentile": 95.0}


#: Fewer validation images than this leave the model uncalibrated (temperature 1).
MIN_CALIBRATION_IMAGES = 100


def _calibrate(model_dir: Path, frame: pd.DataFrame, classes: list[str],
               manifest: Manifest) -> dict[str, Any]:
    """Temperature scaling fitted on the validation predictions, saved in the model's config
    (the Predictor divides logits by it). Validation probabilities come from T = 1 models, so
    their logs are the logits up to a per-row constant, which softmax ignores. Too few images,
    or a fit stuck at a bound of :data:`TEMPERATURE_BOUNDS` (separable data), keep T = 1."""
    probs = frame[classes].to_numpy(dtype=np.float64)
    targets = np.array([classes.index(c) for c in
                        assign_classes(manifest.taxonomy, frame["label"], classes)])
    result: dict[str, Any] = {"ece": expected_calibration_error(targets, probs)}
    if len(frame) < MIN_CALIBRATION_IMAGES:
        return {**result, "temperature": 1.0,
                "skipped": f"{len(frame)} validation images < {MIN_CALIBRATION_IMAGES}"}
    temperature = fit_temperature(np.log(np.clip(probs, 1e-12, 1.0)), targets)
    if not TEMPERATURE_BOUNDS[0] * 1.01 < temperature < TEMPERATURE_BOUNDS[1] * 0.99:
        return {**result, "temperature": 1.0,
                "skipped": f"fitted temperature {temperature:.3g} at a bound"}
    update_config(model_dir, temperature=temperature)
    return {**result, "temperature": temperature,
            "ece_calibrated": expected_calibration_error(
                targets, apply_temperature(probs, temperature))}


def _headline(metrics: dict) -> dict:
    out = {k: metrics[k] for k in ("n", "accuracy", "balanced_accuracy", "auc_macro")}
    out["per_class_auc"] = {c: v["auc"] for c, v in metrics["per_class"].items()}
    for level, m in metrics.get("levels", {}).items():
        if "auc" in m:
            out[f"{level}_auc"] = m["auc"]
    return out


def _write_ensemble(model_dir: Path, folds: list[FoldData], manifest: Manifest) -> None:
    """``model/config.json`` describing an average over ``members/K`` (no weights of its own);
    its training data is every image some member learned from, each validation image being
    held out by one member (out-of-fold)."""
    first = read_config(model_dir / "members" / folds[0].fold)
    config = {k: v for k, v in first.items() if k not in ("fold", "validation")}
    config["ensemble"] = [f"members/{f.fold}" for f in folds]
    config["training_data"] = _training_data(
        manifest, np.unique(np.concatenate([f.train_rows for f in folds])),
        np.unique(np.concatenate([f.val_rows for f in folds])))
    config["training_data"]["validation"] = "out-of-fold"
    (model_dir / "config.json").write_text(json.dumps(config, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(type(value).__name__)
