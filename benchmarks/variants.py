"""tf_efficientnet_lite0 vs efficientnet_lite0 with the bundled ImageNet weights: speed and a cheap
but honest accuracy comparison (not a test).

The bundled weights were trained for TF "same" padding (``tf_efficientnet_lite0``); timm's
``efficientnet_lite0`` pads symmetrically, which is faster in PyTorch but shifts every stride-2
convolution by a pixel. Accuracy, two ways, same splits for both variants: (1) 5-fold
lesion-grouped CV in features mode (frozen backbone + logistic regression, ``dermlearn train
--mode features --folds 5``) on PH2, melanoma-vs-rest AUC out of fold; (2) fine-tuned with the
default recipe (``--finetune-images N``, ``--finetune-epochs E``) on a lesion-grouped random
subset of HAM10000 with a 20% lesion-grouped validation part. Speed: inference img/s
(channels_last, ONNX Runtime), feature-extraction and fine-tuning wall time, side by side.

    .venv/bin/python benchmarks/variants.py [--data ../shared/data/ph2] [--image-size 224] \
        [--ham ../shared/data/ham10000 --finetune-images 1500 --finetune-epochs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("efficientnet_lite0", "tf_efficientnet_lite0")


def speed(backbone_name: str, size: int, tmp: Path, threads: int) -> dict:
    from dermlearn.models.backbones import create_backbone
    from dermlearn.models.lesion_classifier import LesionClassifier

    model = LesionClassifier(create_backbone(backbone_name, weights="bundled", num_classes=0),
                             3).eval().to(memory_format=torch.channels_last)
    x = torch.randn(16, 3, size, size).contiguous(memory_format=torch.channels_last)
    out = {}
    with torch.inference_mode():
        model(x)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 5:
            model(x)
            n += len(x)
        out["channels_last"] = n / (time.perf_counter() - start)
    try:
        import onnxruntime as ort

        path = tmp / f"{backbone_name}.onnx"
        torch.onnx.export(model.to(memory_format=torch.contiguous_format), (x[:1].contiguous(),),
                          str(path), dynamo=False, opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {"x": x.contiguous().numpy()}
        sess.run(None, feed)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 5:
            sess.run(None, feed)
            n += len(x)
        out["onnx"] = n / (time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001
        out["onnx_error"] = str(exc)[:200]
    return out


def ham_subset(ham: Path, n_images: int, out: Path, seed: int = 0) -> Path:
    """A CSV manifest of whole lesions drawn at random from HAM10000 until ``n_images``."""
    import pandas as pd

    meta = pd.read_csv(ham / "HAM10000_metadata.csv")
    lesions = meta["lesion_id"].drop_duplicates().sample(frac=1.0, random_state=seed)
    sizes = meta.groupby("lesion_id").size().loc[lesions]
    keep = set(sizes.index[sizes.cumsum() <= n_images])
    subset = meta[meta["lesion_id"].isin(keep)].copy()
    subset["path"] = [str((ham / "images" / f"{i}.jpg").resolve()) for i in subset["image_id"]]
    subset[["image_id", "path", "dx", "lesion_id"]].rename(columns={"dx": "label"}).to_csv(
        out, index=False)
    return out


def finetune(name: str, manifest: Path, epochs: int, out: Path) -> dict:
    """Default-recipe fine-tune of ``name`` with the bundled weights; validation metrics."""
    from dermlearn.training.run import train

    start = time.perf_counter()
    m = train(f"csv:{manifest}", out, overrides=dict(backbone=name, weights="bundled",
                                                     epochs=epochs), progress=False)
    return {"wall": time.perf_counter() - start, "accuracy": m["accuracy"],
            "balanced_accuracy": m["balanced_accuracy"],
            "melanoma_auc": m["levels"]["melanoma_vs_rest"]["auc"], "auc_macro": m["auc_macro"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ph2"))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--ham", type=Path, default=ROOT.parent / "shared" / "data" / "ham10000")
    p.add_argument("--finetune-images", type=int, default=0,
                   help="also fine-tune both variants on this many HAM10000 images (0: skip)")
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "variants.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from dermlearn.training.run import train

    rows, tuned = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.finetune_images:
            subset = ham_subset(args.ham, args.finetune_images, tmp / "ham-subset.csv")
            for name in VARIANTS:
                print(f"{name}: fine-tuning {args.finetune_epochs} epochs on {subset}",
                      file=sys.stderr, flush=True)
                r = finetune(name, subset, args.finetune_epochs, tmp / f"ft-{name}")
                tuned.append([name, f"{r['wall']:.0f} s", f"{r['accuracy']:.3f}",
                              f"{r['balanced_accuracy']:.3f}", f"{r['melanoma_auc']:.3f}",
                              f"{r['auc_macro']:.3f}"])
        for name in VARIANTS:
            print(f"{name}: speed", file=sys.stderr, flush=True)
            s = speed(name, args.image_size, tmp, args.threads)
            print(f"{name}: features-mode 5-fold CV on {args.data}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            m = train(args.data, tmp / name, overrides=dict(
                backbone=name, weights="bundled", mode="features", folds=5,
                image_size=args.image_size), feature_cache=tmp / f"fc-{name}", progress=False)
            wall = time.perf_counter() - start
            cv = m.get("cv", {})
            rows.append([name, f"{s['channels_last']:.1f}", f"{s.get('onnx', float('nan')):.1f}",
                         f"{wall:.0f} s", f"{m['levels']['melanoma_vs_rest']['auc']:.3f}",
                         json.dumps(cv.get("melanoma_vs_rest_auc", cv.get("auc_macro", "")))[:60],
                         f"{m['balanced_accuracy']:.3f}", f"{m['auc_macro']:.3f}"])
    head = ["backbone (bundled weights)", "img/s channels_last", "img/s ONNX Runtime",
            "features CV wall", "melanoma AUC (out of fold)", "per-fold summary",
            "balanced accuracy", "macro AUC"]
    text = "\n".join([f"# EfficientNet-Lite0 variants ({time.strftime('%Y-%m-%d %H:%M')})", "",
                      f"PH2 ({args.data}), 5-fold lesion-grouped CV, features mode (frozen "
                      f"backbone + logistic regression), {args.image_size} px; inference batch 16, "
                      f"{args.threads} threads.", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *["| " + " | ".join(r) + " |" for r in rows]]) + "\n"
    if tuned:
        head = ["backbone (bundled weights)", "fine-tune wall", "accuracy", "balanced accuracy",
                "melanoma AUC", "macro AUC"]
        text += "\n".join(["", f"Fine-tuned with the default recipe ({args.finetune_epochs} epochs) "
                           f"on {args.finetune_images} HAM10000 images (whole lesions drawn at "
                           f"random, seed 0), scored on its lesion-grouped 20% validation part:",
                           "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                           *["| " + " | ".join(r) + " |" for r in tuned]]) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
