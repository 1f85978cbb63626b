"""Process and thread helpers shared by batch prediction and training: devices, Lightning DDP
launch settings, threads per process.

dermlearn does not start or connect processes itself: Lightning's DDP strategies do, or an
external launcher (torchrun, SLURM's srun) that Lightning detects. This module only decides
*which* Lightning strategy to ask for and answers "which process am I" before Lightning has
set the process group up.

* ``strategy="auto"`` with one process in all: no DDP at all (the single-process path).
* ``"auto"`` with several: ``"ddp"`` when this process can be re-executed as is -- the
  ``dermlearn`` command line (Lightning re-runs ``sys.argv`` once per extra local process) or a
  process started by torchrun/SLURM -- else ``"ddp_spawn"`` (Python API, notebooks, pytest:
  Lightning spawns fresh interpreters and pickles the trainer to them).
* Backend: gloo on CPU, nccl on GPU.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from dermlearn.errors import DermlearnError

#: Launchers a run may ask for (see :func:`resolve_strategy`).
STRATEGIES = ("auto", "ddp", "ddp_spawn")
#: Devices a run may ask for; ``auto`` is CUDA when PyTorch sees a GPU, else the CPU.
DEVICES = ("auto", "cpu", "cuda")


class DistributedError(DermlearnError):
    """A data-parallel setting cannot work (e.g. a batch size not divisible by the processes)."""


def resolve_device(device: str) -> str:
    """``cpu`` or ``cuda`` for a requested device (one of :data:`DEVICES`); ``auto`` is CUDA
    when PyTorch sees a GPU. A CUDA request without a GPU is a DistributedError."""
    import torch

    if device not in DEVICES:
        raise DistributedError(f"device must be cpu, cuda or auto, not {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DistributedError("--device cuda asked for, but no CUDA GPU is visible to PyTorch")
    return device


def check_threads(threads: int | None) -> int | None:
    """``threads`` as None/0 (the engine's default: all cores) or an int >= 1, else a
    DermlearnError naming it."""
    if threads is None:
        return None
    if isinstance(threads, bool) or int(threads) != threads or threads < 0:
        raise DermlearnError(f"threads must be 0 (all cores) or a positive integer, "
                             f"got {threads!r}")
    return int(threads)


def world_size(devices: int, num_nodes: int = 1) -> int:
    """Processes in all: ``devices`` per node times ``num_nodes``."""
    if devices < 1 or num_nodes < 1:
        raise DistributedError(f"devices and num_nodes must be >= 1, not {devices}, {num_nodes}")
    return devices * num_nodes


def launched_externally() -> bool:
    """True under torchrun / torchelastic or a multi-task SLURM step (Lightning's detection),
    or in a process Lightning's own ``ddp`` launcher started (it sets ``LOCAL_RANK``)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return (TorchElasticEnvironment.detect() or SLURMEnvironment.detect()
            or "LOCAL_RANK" in os.environ)


def reexecutable() -> bool:
    """True when ``sys.argv`` is a dermlearn command, which Lightning's ``ddp`` launcher can
    re-run once per extra process (``dermlearn ...`` or ``python -m dermlearn.cli ...``, which
    runs ``dermlearn.cli.__main__``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name in ("dermlearn.cli", "dermlearn.cli.__main__"):
        return True
    return bool(sys.argv) and Path(sys.argv[0]).name in ("dermlearn", "dermlearn.exe")


def resolve_strategy(strategy: str, world: int) -> str:
    """The Lightning strategy name for ``strategy`` (one of :data:`STRATEGIES`) and ``world``
    processes in all (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise DistributedError(f"strategy must be one of {', '.join(STRATEGIES)}, not "
                               f"{strategy!r}")
    if strategy != "auto" or world == 1:
        return strategy
    return "ddp" if launched_externally() or reexecutable() else "ddp_spawn"


def lightning_strategy(strategy: str, world: int, device: str, *,
                       find_unused_parameters: bool = False, fabric: bool = False):
    """A value for ``Trainer(strategy=...)`` (or, with ``fabric``, ``Fabric(strategy=...)``):
    ``"auto"`` for one process, else a DDPStrategy with the gloo (CPU) or nccl (GPU) backend
    and the launcher of :func:`resolve_strategy`."""
    if fabric:
        from lightning.fabric.strategies import DDPStrategy
    else:
        from lightning.pytorch.strategies import DDPStrategy

    name = resolve_strategy(strategy, world)
    if name == "auto":
        return "auto"
    return DDPStrategy(start_method="spawn" if name == "ddp_spawn" else "popen",
                       process_group_backend="nccl" if device == "cuda" else "gloo",
                       find_unused_parameters=find_unused_parameters)


def accelerator(device: str) -> str:
    """Lightning's accelerator name for a dermlearn device (``cpu`` or ``cuda``)."""
    return "gpu" if device == "cuda" else device


def per_process_batch(global_batch: int, world: int) -> int:
    """Images per process and step: the recipe's batch size is *global* (summed over all
    processes), so the learning rate means the same at any process count."""
    if global_batch % world:
        raise DistributedError(f"batch_size {global_batch} is the global batch and must be "
                               f"divisible by the {world} processes (devices x num_nodes)")
    return global_batch // world


def env_rank(devices: int = 1) -> int:
    """This process's global rank before Lightning has connected it: ``RANK`` (torchrun),
    ``SLURM_PROCID`` (srun), else ``NODE_RANK * devices + LOCAL_RANK`` (Lightning's own
    launcher); 0 in a plain single process and in a ``ddp_spawn`` parent. Does not import
    Lightning."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if "SLURM_NTASKS" in os.environ:  # Lightning's test for srun, imported only when needed
        from lightning.fabric.plugins.environments import SLURMEnvironment

        if SLURMEnvironment.detect():
            return int(os.environ["SLURM_PROCID"])
    return int(os.environ.get("NODE_RANK", 0)) * devices + int(os.environ.get("LOCAL_RANK", 0))


def threads_per_process(local_processes: int) -> int:
    """Torch intra-op threads for each of ``local_processes`` on this machine (cores / processes,
    at least 1), so N processes do not oversubscribe the cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_processes))
