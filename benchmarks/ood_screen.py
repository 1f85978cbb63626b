"""How a trained model's out-of-distribution screen scores three kinds of input (not a test).

Prints, for the model of a run directory (with ``ood.json``, which training writes):

* seven images that are not skin lesions (three photographs, two noises, two flat frames; the
  ones ``tests/test_serving_ood.py`` uses): each one's score as a multiple of the threshold;
* the run's own validation photos (``val_predictions.csv``): how many are flagged (~5% by
  design, as the threshold is the 95th percentile of held-out training scores);
* the photos of another dataset folder (e.g. PH2): how many are flagged (a dataset shift).

    .venv/bin/python benchmarks/ood_screen.py runs/ham-default --other ../shared/data/ph2/images
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from dermlearn.data import load
from dermlearn.inference.ood import image_features, load_ood
from dermlearn.inference.predictor import Predictor
from dermlearn.inference.unseen import unseen_images

ROOT = Path(__file__).resolve().parents[1]


def _flagged(name: str, ratios: np.ndarray) -> None:
    if not len(ratios):
        print(f"{name}: no images")
        return
    n = int((ratios > 1).sum())
    print(f"{name}: {n} of {len(ratios)} flagged ({100 * n / len(ratios):.1f}%); "
          f"score / threshold median {np.median(ratios):.2f}, range "
          f"{ratios.min():.2f}-{ratios.max():.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory (RUN/model with ood.json)")
    parser.add_argument("--other", type=Path, help="a folder of .jpg photos from another dataset")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    predictor = Predictor.load(args.run)
    detector = load_ood(predictor.directory)
    if detector is None:
        print(f"{predictor.directory}: no usable OOD statistics (ood.json)", file=sys.stderr)
        return 1
    print(f"model {predictor.directory}: threshold {detector.threshold:.3f} "
          f"(percentile {detector.percentile:g} of held-out scores of {detector.n_images} "
          f"training images)")

    sys.path.insert(0, str(ROOT / "tests"))
    from serving_fixtures import non_lesions

    def ratios(features: np.ndarray) -> np.ndarray:  # OOD score / threshold per image
        return detector.score(features) / detector.threshold if len(features) else np.zeros(0)

    others = non_lesions()
    batch = torch.stack([predictor.transform(im) for im in others.values()])
    for name, ratio in zip(others, ratios(predictor.run_batch(batch, outputs=("ood",))["ood"])):
        print(f"  {name:18s} score / threshold {ratio:.2f}{'  flagged' if ratio > 1 else ''}")

    manifest = load(predictor.config["training_data"]["source"])
    rows = unseen_images(predictor, manifest, "val").rows
    val = [manifest.image_path(int(i)) for i in rows]
    _flagged("its validation photos", ratios(image_features(predictor, val, num_workers=2)))
    if args.other:
        other = sorted(args.other.glob("*.jpg"))
        _flagged(f"photos of {args.other}", ratios(image_features(predictor, other,
                                                                  num_workers=2)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
