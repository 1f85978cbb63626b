"""Training and prediction images/s of EfficientNet-Lite0 and Lite2 on one GPU (or, to try the
script, the CPU), as dermlearn runs them: channels_last, bf16 autocast on CUDA (fp32 on the
CPU), AdamW steps of the default recipe's frozen stem; prediction both as model time alone and
end to end through the one scoring loop (decoding real images in worker processes).

    python3 benchmarks/gpu_speed.py --weights-dir .gpu/weights --data .gpu/data/ham10000
    .venv/bin/python benchmarks/gpu_speed.py --data ../shared/data/ham10000 --smoke   # CPU, tiny

Part of ``benchmarks/gpu_check.sh`` (issue 21); prints one table.
"""
from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from pathlib import Path

import torch


def _timed(step, repeats: int) -> float:
    step()  # warm-up (cuDNN autotuning, allocator)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def measure(name: str, weights: str, size: int, batch: int, repeats: int, device: str,
            data: Path | None, n_images: int, workers: int) -> dict:
    from dermlearn.models.backbones import blocks, create_backbone
    from dermlearn.models.lesion_classifier import LesionClassifier

    backbone = create_backbone(name, weights=weights, num_classes=0)
    model = LesionClassifier(backbone, 7).to(device).to(memory_format=torch.channels_last)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
                else nullcontext())
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,), device=device)
    for block in blocks(model.backbone)[:-6]:  # the default recipe: top 6 blocks learn
        for p in block.parameters():
            p.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    model.train()
    train_s = _timed(train_step, repeats)
    model.eval()

    @torch.inference_mode()
    def predict_step():
        with autocast:
            model(x)

    predict_s = _timed(predict_step, repeats)
    row = {"model": name, "px": size, "batch": batch, "train img/s": batch / train_s,
           "predict img/s (model)": batch / predict_s}
    if data is not None:
        from dermlearn.data import load
        from dermlearn.inference import Predictor, score_images
        from dermlearn.models.preprocessing import PreprocessConfig
        from dermlearn.taxonomy import load_taxonomy

        config = {"classes": ["nv", "bkl", "df", "vasc", "mel", "bcc", "akiec"],
                  "taxonomy": load_taxonomy("dermatology").to_dict(),
                  "preprocess": PreprocessConfig(input_size=(3, size, size)).to_dict()}
        predictor = Predictor([model.float()], config, device)
        paths = load(str(data)).table["path"].astype(str).tolist()[:n_images]
        start = time.perf_counter()
        score_images(predictor, paths, batch_size=batch, num_workers=workers, device=device)
        row["predict img/s (files, end to end)"] = len(paths) / (time.perf_counter() - start)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights-dir", default=None,
                        help="folder of efficientnet_lite{0,2}.safetensors (default: bundled)")
    parser.add_argument("--data", default=None, help="images for the end-to-end prediction")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=14)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to try it on a CPU")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    batch, repeats, n_images = (8, 2, 16) if args.smoke else (256, 20, args.images)
    rows = []
    for name, size in (("efficientnet_lite0", 176), ("efficientnet_lite2", 260)):
        weights = (str(Path(args.weights_dir) / f"{name}.safetensors") if args.weights_dir
                   else "bundled")
        rows.append(measure(name, weights, 64 if args.smoke else size, batch, repeats, device,
                            Path(args.data) if args.data else None, n_images,
                            0 if args.smoke else args.workers))
    gpu = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"{gpu}, torch {torch.__version__}; bf16 autocast: {device == 'cuda'}")
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(f"{row[k]:.0f}" if isinstance(row[k], float) else str(row[k])
                         for k in keys))


if __name__ == "__main__":
    main()
