"""The main job, end to end, on the embedded synthetic set or a real dataset.

``run_demo(out)`` writes into ``out``: the data summary (``inspect.json``), the taxonomy with
per-node counts and the training classes (``taxonomy.txt``: one per diagnosis, or Esteva's
partitioning with ``max_class_size``; the model is trained on exactly these),
lesion-grouped folds (``splits.csv``, ``splits_summary.csv``), a fine-tuned model with its
validation metrics (``run/``) and predictions for the validation images (``predictions.csv``).

Run again into the same ``out`` (``make demo`` twice), the summaries, splits, predictions and
report are made anew, and an earlier ``run/`` (a trained model: minutes of work, perhaps
served) is never deleted: it is moved aside to ``run.old-N/`` (the first free N) and said so.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from dermlearn.atomic import check_output_dir
from dermlearn.data import load
from dermlearn.data.synthetic import make_synthetic_dataset
from dermlearn.evaluation.summary import format_metrics
from dermlearn.splits import make_splits, save_splits, split_summary
from dermlearn.taxonomy import assign_classes

#: A short fine-tune that shows the whole pipeline in a few minutes on a laptop CPU; on real
#: data use ``dermlearn train`` with the default recipe for full results.
DEMO_TRAINING = {"epochs": 4, "image_size": 128, "batch_size": 16}

SYNTHETIC_CLASSES = ("mel", "nv", "bkl", "bcc")


def run_demo(out: str | Path = "demo-out", *, data: str | Path | None = None, seed: int = 0,
             folds: int = 5, max_class_size: int | None = None, training: dict | None = None,
             verbose: bool = True) -> dict:
    """Run data -> taxonomy -> splits -> training -> prediction; returns a summary dict (also
    written as ``demo.json``). ``max_class_size`` (Esteva: 1000) trains on the taxonomy's
    partitioning instead of one class per diagnosis; ``training`` overrides recipe fields of the
    short fine-tune."""
    import numpy as np

    from dermlearn.evaluation.evaluate import evaluate_model
    from dermlearn.inference import predict
    from dermlearn.training.recipes import get_recipe
    from dermlearn.training.run import train, training_classes

    out = check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)

    if data is None:
        say("[1/6] data: generating a SYNTHETIC dermoscopy-like set (not real patients) ...")
        data = make_synthetic_dataset(out / "synthetic", classes=SYNTHETIC_CLASSES, seed=seed)
    else:
        say(f"[1/6] data: reading {data} ...")
    manifest = load(data)
    summary = manifest.summary()
    (out / "inspect.json").write_text(json.dumps(summary, indent=2, default=str))
    say(f"      {summary['n_images']} images, {summary['n_lesions']} lesions, classes "
        + ", ".join(f"{c}={n}" for c, n in summary["classes"].items()))

    recipe = {**DEMO_TRAINING, "seed": seed, "max_class_size": max_class_size,
              **(training or {})}
    how = (f"Esteva's partitioning, max class size {recipe['max_class_size']}"
           if recipe["max_class_size"] else "one per diagnosis")
    say(f"[2/6] taxonomy: {manifest.taxonomy.name}; training classes: {how} ...")
    counts = manifest.class_counts()
    classes = training_classes(manifest, np.arange(len(manifest)), get_recipe("default", **recipe))
    targets = assign_classes(manifest.taxonomy, manifest.labels, classes)
    (out / "taxonomy.txt").write_text(manifest.taxonomy.render(counts=counts)
                                      + f"\n\ntraining classes ({how}): " + ", ".join(classes)
                                      + "\n")
    say(f"      training classes: {', '.join(classes)}")

    say(f"[3/6] splits: {folds} stratified folds grouped by lesion ...")
    splits = make_splits(manifest, folds, group="lesion", seed=seed)
    splits["target"] = targets
    save_splits(splits, out / "splits.csv")
    table = split_summary(splits)
    table.to_csv(out / "splits_summary.csv")
    say(table.to_string())

    say(f"[4/6] training: default recipe, fine-tuning the pretrained backbone "
        f"({', '.join(f'{k}={v}' for k, v in recipe.items() if v is not None)}); "
        f"validation = fold 0 ...")
    run, kept = out / "run", None
    if run.exists() or run.is_symlink():
        kept = set_aside(run)
        if kept is not None:
            say(f"      an earlier run was in {run}: moved to {kept} (remove it when no longer "
                f"needed)")
    metrics = train(data, run, overrides=recipe, splits=out / "splits.csv", progress=verbose)
    say(format_metrics(metrics))

    say("[5/6] predicting the validation images with the saved model ...")
    val_ids = splits.loc[splits["fold"] == 0, "image_id"]
    predictions = predict(run / "model", manifest.select(val_ids))
    predictions.to_csv(out / "predictions.csv", index=False, float_format="%.6f")
    say("[6/6] evaluating the validation images: metrics, figures, report ...")
    evaluate_model(run / "model", data, out / "report", part="val", n_boot=200,
                   progress=verbose)
    say(f"      report: {out / 'report' / 'report.html'}")
    result = {"data": str(data), "n_images": len(manifest), "n_lesions": manifest.n_lesions,
              "classes": counts, "training_classes": classes,
              "max_class_share_deviation_pts": float(table["max_dev_pts"].max()),
              "validation": {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "auc_macro")},
              "report": str(out / "report" / "report.html"), "out": str(out)}
    if kept is not None:
        result["previous_run"] = str(kept)
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    say(f"done: results in {out}/")
    return result


def set_aside(path: Path) -> Path | None:
    """Move ``path`` to ``NAME.old-N`` beside it (the first free N) and return where it went;
    an empty folder, which holds nothing to keep, is just removed (None)."""
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        path.rmdir()
        return None
    for n in itertools.count(1):
        target = path.with_name(f"{path.name}.old-{n}")
        if not (target.exists() or target.is_symlink()):
            path.rename(target)
            return target
    raise AssertionError("unreachable")
