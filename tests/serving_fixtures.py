"""Tiny real models and images for the serving tests (imported by tests/test_serving_*.py).

A model here is a real :class:`~dermlearn.models.LesionClassifier`: the bundled ImageNet
EfficientNet-Lite0 backbone (so its features separate lesions from cats and noise, as a trained
model's do) with a randomly initialised head over the HAM10000 classes, saved with
``save_model`` at a small input size so that every test runs in seconds on a CPU.
"""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dermlearn.models import PreprocessConfig, create_backbone
from dermlearn.models.lesion_classifier import LesionClassifier, MetadataEncoder, save_model
from dermlearn.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
HAM7 = ["nv", "bkl", "df", "vasc", "mel", "bcc", "akiec"]


def make_tiny_model(directory: Path, *, image_size: int = 96, members: int = 1,
                    temperature: float = 1.0, seed: int = 0, weights: str = "bundled",
                    sites: Sequence[str] | None = None) -> Path:
    """Save a small HAM7 model (or a ``members``-fold ensemble) into ``directory``; with
    ``sites``, one that fuses age, sex and site (those training sites) into its head."""
    taxonomy = load_taxonomy("dermatology")
    encoder = MetadataEncoder(sites) if sites is not None else None
    base = {
        "backbone": "efficientnet_lite0",
        "classes": HAM7,
        "class_names": {c: taxonomy.display_name(c) for c in HAM7},
        "taxonomy": taxonomy.to_dict(),
        "preprocess": PreprocessConfig(input_size=(3, image_size, image_size)).to_dict(),
        "metadata": encoder.to_dict() if encoder else None,
        "temperature": temperature,
        "training_data": {"source": "/somewhere/private/ham10000", "format": "ham10000",
                          "n_images": 42, "n_lesions": 40, "classes": {c: 6 for c in HAM7}},
    }
    directory = Path(directory)
    dirs = [directory] if members == 1 else [directory / "members" / str(k)
                                             for k in range(members)]
    for k, member_dir in enumerate(dirs):
        torch.manual_seed(seed + k)
        backbone = create_backbone("efficientnet_lite0", weights=weights, num_classes=0)
        model = LesionClassifier(backbone, len(HAM7), metadata_dim=encoder.dim if encoder else 0)
        save_model(model, member_dir, dict(base))
    if members > 1:
        import json

        config = {"format_version": 1, **base,
                  "ensemble": [f"members/{k}" for k in range(members)]}
        (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def lesion_paths(n: int, *, offset: int = 0, dataset: str = "ph2") -> list[Path]:
    """``n`` real dermoscopy images of ../shared/data/DATASET/images (sorted); [] if absent."""
    folder = SHARED_DATA / dataset / "images"
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.jpg"))[offset:offset + n]


def non_lesions() -> dict[str, Image.Image]:
    """Seven images that are not skin lesions: three photographs, two noises, two flat frames."""
    from skimage import data

    rng = np.random.default_rng(0)
    return {
        "cat": Image.fromarray(data.chelsea()),
        "astronaut": Image.fromarray(data.astronaut()),
        "coffee": Image.fromarray(data.coffee()),
        "uniform noise": Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)),
        "skin-tone noise": Image.fromarray(np.clip(rng.normal((200, 150, 130), 30, (300, 300, 3)),
                                                   0, 255).astype(np.uint8)),
        "flat skin colour": Image.new("RGB", (240, 180), (200, 150, 130)),
        "white": Image.new("RGB", (200, 200), (255, 255, 255)),
    }


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def synthetic_lesion(size: int = 160, seed: int = 0) -> Image.Image:
    """A brown blob on skin tone (a stand-in when no real image is needed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2) / (size / 3)
    skin = np.array([224, 172, 150], float)
    lesion = np.array([110, 70, 50], float)
    w = np.clip(1.2 - r, 0, 1)[..., None]
    img = skin * (1 - w) + lesion * w + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``dermlearn serve`` in a subprocess on a free loopback port; a context manager that
    waits for /health and terminates (then kills) only the process it started."""

    def __init__(self, model_dir: Path, *args: str, cwd: Path | None = None,
                 env: dict | None = None, timeout: float = 180.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "dermlearn.cli", "serve", str(model_dir),
                        "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.cwd, self.timeout = cwd, timeout
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen | None = None
        self.log = b""

    def __enter__(self) -> ServerProcess:
        import httpx

        self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out = self.process.stdout.read().decode(errors="replace")
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{out}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.__exit__(None, None, None)
        raise RuntimeError(f"server did not answer /health within {self.timeout} s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_kib(self) -> int:
        """Resident set size of the server process (KiB, from /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def __exit__(self, *exc) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.log = self.process.stdout.read()
            self.process.stdout.close()


def fit_synthetic_ood(model_dir: Path, n: int = 16, size: int = 160) -> Path:
    """Fit and save OOD statistics for ``model_dir`` on ``n`` synthetic lesion images (the
    service refuses a model without them unless told ``--no-ood``); returns ``model_dir``."""
    from dermlearn.inference.ood import fit_ood
    from dermlearn.inference.predictor import Predictor

    images = [synthetic_lesion(size=size, seed=i) for i in range(n)]
    folder = Path(model_dir).parent / f".ood-fit-{Path(model_dir).name}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i}.png")
        image.save(paths[-1])
    fit_ood(Predictor.load(model_dir), paths, folds=4).save(model_dir)
    return Path(model_dir)


def corrupt_ood_copy(model_dir: Path, out: Path) -> Path:
    """A copy of ``model_dir`` in ``out`` after ``truncate -s 1000 MODEL/ood.safetensors``."""
    import shutil

    from dermlearn.inference.ood import OOD_WEIGHTS

    shutil.copytree(model_dir, out)
    with open(out / OOD_WEIGHTS, "r+b") as f:
        f.truncate(1000)
    return out
