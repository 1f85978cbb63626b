"""Single-machine performance of dermlearn (issue 6): one table, every figure measured side by side
in the same run on the same images (not a test).

Sections: inference throughput per execution path (model time only, and end to end through the
``predict`` API) with each path's max |probability difference| vs eager fp32; training throughput
(plain timm loop vs dermlearn's Lightning path, bf16, decoded-image cache); peak RSS of training
at 224 px for two dataset sizes (subprocesses); achieved GFLOP/s against the machine's nominal
peak; 5-fold features-mode CV with vs without the feature cache.

    .venv/bin/python benchmarks/bench.py                        # ../shared/data/ham10000
    .venv/bin/python benchmarks/bench.py --images 128 --train-images 96 --rss-images 100,400
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ham10000"
sys.path.insert(0, str(ROOT / "tests"))

HAM7 = ["nv", "bkl", "df", "vasc", "mel", "bcc", "akiec"]
GIB = 1024 ** 3


# --------------------------------------------------------------------------------------------
# helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def subset_paths(data: Path, n: int, seed: int = 0):
    from dermlearn.data import load

    manifest = load(str(data))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.permutation(len(manifest))[:n])
    return manifest, rows


def cpu_peak() -> tuple[float, str]:
    """Nominal fp32 peak GFLOP/s and the formula used."""
    ghz, source = None, ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"CPU max MHz:\s*([\d.]+)", out)
        if m and float(m.group(1)) > 0:
            ghz, source = float(m.group(1)) / 1000, "lscpu 'CPU max MHz'"
    except OSError:
        pass
    if ghz is None:
        mhz = [float(x) for x in re.findall(r"cpu MHz\s*:\s*([\d.]+)",
                                            Path("/proc/cpuinfo").read_text())]
        ghz, source = (max(mhz) / 1000 if mhz else 2.0), "/proc/cpuinfo 'cpu MHz'"
    flags = Path("/proc/cpuinfo").read_text()
    capability = torch.backends.cpu.get_cpu_capability()  # cpuid, also where a VM hides flags
    lanes = 16 if (" avx512f" in flags or "AVX512" in capability) else 8
    cores = os.cpu_count() or 1
    peak = cores * lanes * 2 * 2 * ghz
    formula = (f"{cores} cores x {lanes} fp32 lanes ({'AVX-512' if lanes == 16 else 'AVX2'}) x "
               f"2 FMA units x 2 flops/FMA x {ghz:.2f} GHz ({source}) = {peak:.0f} GFLOP/s; "
               f"assumes 2 full-width FMA pipes per core (Zen 4 executes 512-bit ops on 256-bit "
               f"pipes, so its true peak is half this)")
    return peak, formula


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding,
                         _dilation, transposed, _output_padding, _groups, output_mask,
                         out_shape=None) -> int:
    """FLOPs of a convolution's backward: one forward's worth per gradient computed (input,
    weight). torch's own formula ignores ``groups`` for the weight gradient, which counts a
    depthwise convolution's backward hundreds of times over."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flops_of(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    with FlopCounterMode(display=False,
                         custom_mapping={aten.convolution_backward: _conv_backward_flops}) as counter:
        fn()
    return float(counter.get_total_flops())


def timed_batches(fn, batches, warmup: int = 1, budget: float = float("inf")) -> tuple[float, list]:
    """(seconds for the batches run after ``warmup`` extra calls on the first, outputs); stops
    after ``budget`` seconds (at least one batch), so a slow path costs bounded time."""
    for _ in range(warmup):
        fn(batches[0])
    start = time.perf_counter()
    outs = []
    for b in batches:
        outs.append(fn(b))
        if time.perf_counter() - start > budget:
            break
    return time.perf_counter() - start, outs


# --------------------------------------------------------------------------------------------
# inference
def bench_inference(args, manifest, rows, rows_out: list, tmp: Path) -> dict:
    from dermlearn.data.images import read_image
    from dermlearn.inference.backends import OnnxBackend
    from dermlearn.inference.onnx_export import ensure_onnx
    from dermlearn.inference.predictor import Predictor, predict

    from serving_fixtures import make_tiny_model

    model_dir = make_tiny_model(tmp / "model", image_size=args.size)
    predictor = Predictor.load(model_dir)
    paths = manifest.table["path"].astype(str).to_numpy()[rows].tolist()
    log(f"inference: decoding {len(paths)} images once")
    x = torch.stack([predictor.transform(read_image(p)) for p in paths])
    batches = list(torch.split(x, args.batch))
    member = predictor.members[0]
    eager = copy.deepcopy(member).to(memory_format=torch.contiguous_format).eval()
    cl = copy.deepcopy(member).to(memory_format=torch.channels_last).eval()
    onnx = OnnxBackend(ensure_onnx(model_dir, predictor), threads=args.threads)

    def run(model, layout, dtype=None):
        def f(b):
            with torch.inference_mode(), (torch.autocast("cpu", dtype=dtype) if dtype
                                          else nullcontext()):
                logits = model(b.contiguous(memory_format=layout))
            return torch.softmax(logits.float(), 1).numpy()
        return f

    paths_fns = [
        ("timm eager fp32 NCHW (baseline)", run(eager, torch.contiguous_format)),
        ("channels_last fp32", run(cl, torch.channels_last)),
        ("bf16 autocast NCHW", run(eager, torch.contiguous_format, torch.bfloat16)),
        ("bf16 autocast + channels_last", run(cl, torch.channels_last, torch.bfloat16)),
        ("ONNX Runtime fp32", lambda b: onnx.infer(b).probabilities),
    ]
    results = {}
    reference = None
    for name, fn in paths_fns:
        log(f"inference: {name}")
        seconds, outs = timed_batches(fn, batches, budget=args.budget)
        probs = np.concatenate(outs)
        if reference is None:
            reference = probs
        m = min(len(probs), len(reference))  # a path cut short by --budget
        results[name] = dict(ips=len(probs) / seconds,
                             diff=float(np.abs(probs[:m] - reference[:m]).max()))
    base = results["timm eager fp32 NCHW (baseline)"]["ips"]
    fastest = max((n for n, r in results.items() if r["diff"] <= 1e-3),
                  key=lambda n: results[n]["ips"])
    flops = flops_of(lambda: eager(x[:1])) if not args.no_flops else float("nan")
    for name, r in results.items():
        rows_out.append(["predict, model only", name, f"{r['ips']:.1f}", f"{r['ips'] / base:.2f}x",
                         f"{r['diff']:.1e}", f"{flops * r['ips'] / 1e9:.0f}",
                         "**fastest within 1e-3**" if name == fastest else ""])

    # end to end: decode + preprocess + model, through the public API
    def e2e_baseline():
        out = []
        for i in range(0, len(paths), args.batch):
            b = torch.stack([predictor.transform(read_image(p)) for p in paths[i:i + args.batch]])
            out.append(run(eager, torch.contiguous_format)(b))
        return np.concatenate(out)

    e2e = [("plain loop: decode + eager fp32 NCHW (baseline)", e2e_baseline)]
    for backend in ("torch", "onnx", "auto"):
        e2e.append((f"predict(backend={backend!r})",
                    lambda backend=backend: predict(model_dir, paths, backend=backend,
                                                    threads=args.threads, progress=False)
                    [predictor.classes].to_numpy()))
    e2e_base = None
    for name, fn in e2e:
        log(f"end to end: {name}")
        fn() if name.startswith("predict") and args.warm_e2e else None
        start = time.perf_counter()
        probs = fn()
        ips = len(paths) / (time.perf_counter() - start)
        e2e_base = e2e_base or ips
        m = min(len(probs), len(reference))
        rows_out.append(["predict, end to end", name, f"{ips:.1f}", f"{ips / e2e_base:.2f}x",
                         f"{np.abs(probs[:m] - reference[:m]).max():.1e}", "", ""])
    return dict(flops_per_image=flops, fastest=fastest,
                ratio=results[fastest]["ips"] / base)


# --------------------------------------------------------------------------------------------
# training
class _EpochTimer:
    def __init__(self):
        import lightning as L

        class T(L.Callback):
            def __init__(s):
                s.times, s.start, s.n = [], 0.0, 0

            def on_train_epoch_start(s, trainer, module):
                s.start = time.perf_counter()

            def on_train_epoch_end(s, trainer, module):
                s.times.append(time.perf_counter() - s.start)
        self.cb = T()


def _train_data(manifest, rows, cfg, cache_root: Path | None):
    from dermlearn.data.dataset import ImageDataset
    from dermlearn.training.augment import train_transform
    from dermlearn.training.fit import training_image_cache

    labels = manifest.table["label"].to_numpy()[rows]
    classes = sorted(set(labels))
    targets = np.array([classes.index(c) for c in labels])
    cache = training_image_cache(cfg, cache_root) if cache_root is not None else None
    ds = ImageDataset(manifest.table["path"].to_numpy()[rows], train_transform("default", cfg),
                      targets=targets, image_cache=cache)
    return ds, targets, classes


def _classifier(recipe, n_classes):
    from dermlearn.models.backbones import create_backbone
    from dermlearn.models.lesion_classifier import LesionClassifier

    torch.manual_seed(0)
    backbone = create_backbone(recipe.backbone, weights=recipe.weights, num_classes=0)
    return LesionClassifier(backbone, n_classes, drop_rate=recipe.drop_rate), backbone


def train_lightning(manifest, rows, recipe, epochs: int, cache_root: Path | None,
                    rss_probe=None, limit_batches: int | None = None) -> float | tuple:
    """Seconds of the last epoch of dermlearn's Lightning path (no validation); with
    ``limit_batches``, (seconds, images) of that many batches of the last epoch."""
    import lightning as L

    from dermlearn.data.dataset import make_loader
    from dermlearn.training.callbacks import weight_ema
    from dermlearn.training.fit import preprocess_config as _preprocess_config
    from dermlearn.training.module import LesionModule
    from dermlearn.training.sampler import EpochSampler

    model, backbone = _classifier(recipe, 7)
    cfg = _preprocess_config(backbone, recipe)
    ds, targets, classes = _train_data(manifest, rows, cfg, cache_root)
    model, _ = _classifier(recipe, len(classes))
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dl = make_loader(ds, batch_size=recipe.batch_size, sampler=EpochSampler(targets, seed=0),
                     num_workers=recipe.num_workers, persistent_workers=recipe.num_workers > 0,
                     drop_last=True)
    module = LesionModule(model, recipe, classes, None)
    timer = _EpochTimer().cb
    ema = weight_ema(recipe, epochs, len(dl))  # the default recipe's average, as in train
    callbacks = [timer] + ([rss_probe] if rss_probe else []) + ([ema] if ema else [])
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=recipe.precision,
                        max_epochs=epochs, callbacks=callbacks, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, limit_train_batches=limit_batches)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, dl)
    if limit_batches:
        return timer.times[-1], min(limit_batches, len(dl)) * recipe.batch_size
    return timer.times[-1]


def train_plain(manifest, rows, recipe, epochs: int) -> float:
    """A hand-written loop: the same timm model, resolution and batch; every layer trained,
    fp32, NCHW, torch AdamW, images decoded every epoch. Seconds of the last epoch."""
    from torch.utils.data import DataLoader

    from dermlearn.training.fit import preprocess_config as _preprocess_config

    model, backbone = _classifier(recipe, 7)
    cfg = _preprocess_config(backbone, recipe)
    ds, targets, classes = _train_data(manifest, rows, cfg, None)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    dl = DataLoader(ds, batch_size=recipe.batch_size, shuffle=True, drop_last=True,
                    num_workers=recipe.num_workers, persistent_workers=recipe.num_workers > 0)
    seconds = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        for images, _, y, *_ in dl:
            opt.zero_grad()
            loss_fn(model(images, None), y).backward()
            opt.step()
        seconds = time.perf_counter() - start
    return seconds


def train_step_ips(recipe, dtype, batch: int, steps: int = 1) -> float:
    """img/s of the default recipe's optimisation step (freezing, channels_last, AdamW) on a
    random batch, optionally under CPU autocast to ``dtype``; one warm-up step."""
    from dermlearn.training.module import LesionModule

    model, backbone = _classifier(recipe, 7)
    model = model.to(memory_format=torch.channels_last)
    module = LesionModule(model, recipe, HAM7, None)
    module._set_frozen_eval()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size = recipe.image_size or 224
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch) % 7

    def one():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=dtype) if dtype else nullcontext():
            logits = model(x, None)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()
    one()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    return steps * batch / (time.perf_counter() - start)


def training_flops(recipe, frozen: bool) -> float:
    """FLOPs of one training image (forward + backward) at the recipe's resolution."""
    from dermlearn.training.fit import preprocess_config as _preprocess_config
    from dermlearn.training.module import LesionModule

    model, backbone = _classifier(recipe, 7)
    cfg = _preprocess_config(backbone, recipe)
    if frozen:
        module = LesionModule(model, recipe, HAM7, None)
        module._set_frozen_eval()
    model.train()
    x = torch.randn(2, *cfg.input_size)
    y = torch.tensor([0, 1])

    def step():
        torch.nn.functional.cross_entropy(model(x, None), y).backward()
    return flops_of(step) / 2


def bench_training(args, manifest, rows, rows_out: list, tmp: Path) -> dict:
    from dermlearn.training.recipes import get_recipe

    recipe = get_recipe("default", num_workers=args.workers)
    n = len(rows)
    usable = (n // recipe.batch_size) * recipe.batch_size
    log(f"training: {usable} images/epoch, {recipe.image_size} px, batch {recipe.batch_size}, "
        f"epoch {args.epochs} timed")
    variants = [
        ("plain timm loop: all layers, fp32 NCHW, decode every epoch (baseline)",
         lambda: train_plain(manifest, rows, recipe, args.epochs), False),
        ("dermlearn Lightning, default recipe, image cache off (channels_last, fp32)",
         lambda: train_lightning(manifest, rows, recipe, args.epochs, None), True),
        ("  + decoded-image cache (= default recipe)",
         lambda: train_lightning(manifest, rows, recipe, args.epochs, tmp / "imgcache"), True),
    ]
    f_full = training_flops(recipe, False) if not args.no_flops else float("nan")
    f_frozen = training_flops(recipe, True) if not args.no_flops else float("nan")
    base, out = None, {}
    for name, fn, frozen in variants:
        log(f"training: {name.strip()}")
        result = fn()
        seconds, images = result if isinstance(result, tuple) else (result, usable)
        ips = images / seconds
        base = base or ips
        out[name] = ips
        gflops = (f_frozen if frozen else f_full) * ips / 1e9
        rows_out.append(["train", name, f"{ips:.1f}", f"{ips / base:.2f}x", "",
                         f"{gflops:.0f}", ""])
    # bf16-mixed: a Lightning epoch in bf16 takes minutes here (oneDNN's bf16 backward of the
    # depthwise convolutions is slow), so it is compared on model steps only (no data loading):
    # the default recipe's training step with and without bf16 autocast, same batch.
    step = {}
    for dtype in (None, torch.bfloat16):
        log(f"training: model step only, {dtype or 'fp32'}")
        step[dtype] = train_step_ips(recipe, dtype, args.step_batch)
    for dtype, label in ((None, "fp32"), (torch.bfloat16, "bf16-mixed")):
        rows_out.append(["train, model step only", f"default recipe step (channels_last), "
                         f"{label}, batch {args.step_batch}, no data loading",
                         f"{step[dtype]:.1f}", f"{step[dtype] / step[None]:.2f}x vs fp32 step", "",
                         f"{f_frozen * step[dtype] / 1e9:.0f}", ""])
    best = max(out, key=out.get)
    return dict(flops_full=f_full, flops_frozen=f_frozen, best=best, ratio=out[best] / base)


# --------------------------------------------------------------------------------------------
# peak RSS (runs in a subprocess: python bench.py --rss-child N)
def _vm_hwm(pid: str = "self") -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s*(\d+) kB", text).group(1)) * 1024


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _pss(pid: int) -> int:
    """Proportional set size in bytes: private pages plus each shared page / its sharers."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(re.search(r"^Pss:\s*(\d+) kB", text, re.M).group(1)) * 1024


class TreeMemory:
    """Samples the PSS of this process and its children (data-loader workers) every ``period`` s.

    The sum of PSS over a process tree is the memory it really occupies: shared library pages
    (torch is ~0.6 GiB of them per process) count once, not once per worker as summed VmHWM does.
    """

    def __init__(self, period: float = 0.05):
        import threading

        self.period, self.peak, self.peak_workers = period, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(self.period):
            try:
                main = _pss(me)
            except OSError:
                continue
            workers = 0
            for kid in _children(me):
                try:
                    workers += _pss(kid)
                except OSError:  # a worker that just exited
                    pass
            if main + workers > self.peak:
                self.peak, self.peak_workers = main + workers, workers

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def rss_child(args) -> None:
    import lightning as L

    from dermlearn.training.recipes import get_recipe

    class Probe(L.Callback):
        workers = 0
        worker_peak = 0

        def on_train_batch_end(self, trainer, *a):
            kids = _children(os.getpid())
            peaks = []
            for k in kids:
                try:
                    peaks.append(_vm_hwm(str(k)))
                except (OSError, AttributeError):
                    pass
            if sum(peaks) > self.worker_peak:
                self.worker_peak, self.workers = sum(peaks), len(peaks)

    manifest, rows = subset_paths(Path(args.data), args.rss_child)
    recipe = get_recipe("default", image_size=224, num_workers=args.workers)
    probe = Probe()
    with tempfile.TemporaryDirectory() as tmp, TreeMemory() as tree:
        train_lightning(manifest, rows, recipe, 1, Path(tmp), rss_probe=probe)
    print(json.dumps(dict(main=_vm_hwm(), workers=probe.worker_peak, n_workers=probe.workers,
                          pss=tree.peak, pss_workers=tree.peak_workers)))


def bench_rss(args, rows_out: list) -> dict:
    results = {}
    for n in [int(v) for v in args.rss_images.split(",")]:
        log(f"peak RSS: training 1 epoch at 224 px on {n} images (subprocess)")
        proc = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--data",
                               str(args.data), "--workers", str(args.workers)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"RSS child failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results[n] = r
        total = r["main"] + r["workers"]
        rows_out.append(["peak memory, train 224 px", f"{n} images, {r['n_workers']} workers",
                         "", "", "", "",
                         f"PSS of main + workers **{r['pss'] / GIB:.2f} GiB** (workers "
                         f"{r['pss_workers'] / GIB:.2f}); VmHWM main {r['main'] / GIB:.2f} GiB, "
                         f"summed with workers' VmHWM {total / GIB:.2f} GiB"])
    return results


# --------------------------------------------------------------------------------------------
# feature cache: 5-fold CV in features mode
def bench_feature_cache(args, rows_out: list, tmp: Path) -> dict:
    from dermlearn.models.backbones import create_backbone
    from dermlearn.splits import make_splits
    from dermlearn.training.features import (
        FeatureCache,
        cross_validate_features,
        extract_features,
        fit_logreg_head,
        predict_proba,
    )
    from dermlearn.training.fit import preprocess_config as _preprocess_config
    from dermlearn.training.recipes import get_recipe

    manifest, rows = subset_paths(Path(args.data), args.cv_images, seed=1)
    sub = manifest.subset(rows)
    folds = make_splits(sub, 5, group="lesion", seed=0).set_index("image_id") \
        .loc[sub.table["image_id"], "fold"].astype(str).to_numpy()
    labels = sub.table["label"].to_numpy()
    classes = sorted(set(labels))
    y = np.array([classes.index(c) for c in labels])
    recipe = get_recipe("default")
    backbone = create_backbone(recipe.backbone, weights=recipe.weights, num_classes=0)
    cfg = _preprocess_config(backbone, recipe)
    kw = dict(batch_size=32, num_workers=args.workers, progress=False)

    log(f"feature cache: 5-fold CV on {len(sub)} images, re-extracting per fold")
    start = time.perf_counter()
    oof_a = np.zeros((len(y), len(classes)), np.float32)
    for name in sorted(set(folds)):
        held = folds == name
        feats = extract_features(sub, backbone, cfg, cache=None, **kw)
        head = fit_logreg_head(feats[~held], y[~held], len(classes))
        oof_a[held] = predict_proba(head, feats[held])
    t_plain = time.perf_counter() - start

    cache = FeatureCache(tmp / "features")
    log("feature cache: 5-fold CV with the on-disk cache (cold, then warm)")
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        for _fold in sorted(set(folds)):  # as a per-fold run would: ask the cache every fold
            feats = extract_features(sub, backbone, cfg, cache=cache, **kw)
        oof_b, _ = cross_validate_features(feats, y, folds, len(classes))
        timings.append(time.perf_counter() - start)
    diff = float(np.nanmax(np.abs(oof_a - oof_b)))
    for label, t in [("re-extract features every fold (baseline)", t_plain),
                     ("FeatureCache, cold (extract once, hits for folds 2-5)", timings[0]),
                     ("FeatureCache, warm (cache from an earlier run)", timings[1])]:
        rows_out.append(["5-fold CV, features mode", label, f"{len(sub) * 5 / t:.1f}",
                         f"{t_plain / t:.2f}x", f"{diff:.1e}" if "Cache" in label else "",
                         "", f"{t:.1f} s"])
    return dict(plain=t_plain, cold=timings[0], warm=timings[1])


# --------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--images", type=int, default=256, help="images for inference")
    p.add_argument("--size", type=int, default=224, help="inference resolution")
    p.add_argument("--batch", type=int, default=16, help="inference batch")
    p.add_argument("--train-images", type=int, default=192)
    p.add_argument("--epochs", type=int, default=2, help="training epochs (the last is timed)")
    p.add_argument("--rss-images", default="200,800")
    p.add_argument("--cv-images", type=int, default=300)
    p.add_argument("--workers", type=int, default=2, help="data-loader workers")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--skip", default="", help="comma list: inference,training,rss,cv")
    p.add_argument("--step-batch", type=int, default=8, help="batch of the model-step timing")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds at most per inference path (slow paths time fewer batches)")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--warm-e2e", action="store_true", help="run each end-to-end path twice")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latest.md")
    p.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args)
        return 0
    skip = set(filter(None, args.skip.split(",")))
    rows_out: list[list[str]] = []
    summary = {}
    peak, formula = cpu_peak()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        os.environ.setdefault("DERMLEARN_IMAGE_CACHE", str(tmp / "default-imgcache"))
        if "inference" not in skip or "training" not in skip:
            manifest, rows = subset_paths(args.data, max(args.images, args.train_images))
        if "inference" not in skip:
            summary["inference"] = bench_inference(args, manifest, rows[:args.images], rows_out,
                                                   tmp)
        if "training" not in skip:
            summary["training"] = bench_training(args, manifest, rows[:args.train_images],
                                                 rows_out, tmp)
        if "rss" not in skip:
            summary["rss"] = bench_rss(args, rows_out)
        if "cv" not in skip:
            summary["cv"] = bench_feature_cache(args, rows_out, tmp)

    head = ["section", "path", "img/s", "vs baseline", "max abs prob diff vs fp32",
            "GFLOP/s", "note"]
    lines = [f"# dermlearn benchmark ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"`{' '.join(['benchmarks/bench.py', *(argv or sys.argv[1:])])}` on {args.data.name}; "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, {args.threads} threads, {args.workers} data-loader workers; "
             f"wall {time.perf_counter() - started:.0f} s.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows_out]
    lines += ["", f"Nominal peak: {formula}."]
    if "inference" in summary:
        s = summary["inference"]
        lines.append(f"Inference: {args.size} px, batch {args.batch}, {args.images} HAM10000 "
                     f"images decoded+preprocessed once; {s['flops_per_image'] / 1e9:.2f} GFLOP "
                     f"per image (torch FlopCounterMode, 2 flops/MAC); GFLOP/s = that x img/s"
                     f"; fastest path within 1e-3: {s['fastest']} = {s['ratio']:.2f}x baseline "
                     f"(goal >= 3x: {'met' if s['ratio'] >= 3 else 'NOT met'}).")
    if "training" in summary:
        s = summary["training"]
        lines.append(f"Training: default recipe (efficientnet_lite0, bundled weights, 176 px, batch "
                     f"32, top 6 blocks trainable, AdamW), {args.train_images} images, epoch "
                     f"{args.epochs} of {args.epochs} timed (the cache is filled in epoch 1); "
                     f"{s['flops_full'] / 1e9:.2f} GFLOP/image all layers trained, "
                     f"{s['flops_frozen'] / 1e9:.2f} with the default freezing; best: "
                     f"{s['best'].strip()} = {s['ratio']:.2f}x baseline (goal >= 1.5x: "
                     f"{'met' if s['ratio'] >= 1.5 else 'NOT met'}).")
    if "rss" in summary:
        tot = {n: r["pss"] / GIB for n, r in summary["rss"].items()}
        lines.append("Peak memory: the largest PSS (proportional set size: shared library pages "
                     "counted once across processes) of the training process plus its data-loader "
                     "workers, sampled every 50 ms; VmHWM of the main process alone and the sum of "
                     "all processes' VmHWM (an upper bound that counts torch's shared pages once per "
                     "process) are given beside it; 1 epoch, default recipe at 224 px with the "
                     "image cache; "
                     + ", ".join(f"{n} images: {v:.2f} GiB" for n, v in tot.items())
                     + f" (goal <= 3 GiB: {'met' if max(tot.values()) <= 3 else 'NOT met'}).")
    if "cv" in summary:
        s = summary["cv"]
        lines.append(f"Feature cache: 5-fold lesion-grouped CV, logistic-regression head, "
                     f"{args.cv_images} images at 176 px; img/s counts 5 passes over the images; "
                     f"cold cache {s['plain'] / s['cold']:.1f}x, warm {s['plain'] / s['warm']:.1f}x "
                     f"(goal >= 4x: {'met' if s['plain'] / s['cold'] >= 4 else 'NOT met'}).")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
