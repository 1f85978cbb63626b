"""Knowledge distillation (Hinton et al. 2015): a network learns from a teacher model's soft
targets as well as from the labels, so one small network keeps much of an ensemble's gain.

The teacher's probabilities for every training image are computed once, averaged over the
dihedral test-time views the training augmentation also draws (8 for a square input, 4
otherwise), and cached in the run as ``teacher_probs.npz`` (image ids, probabilities), so a
resumed run does not recompute them. A teacher that trained on any of the run's validation
images would carry their labels into the student and inflate its validation figures: it is
refused (checked with :func:`~dermlearn.inference.unseen.unseen_images`, which needs the
teacher's run record beside it).

The loss of a batch is ``(1 - a) * CE(labels) + a * tau^2 * KL(q_tau || p_tau)``
(:func:`distillation_loss`), ``q_tau`` the teacher's probabilities and ``p_tau`` the
network's, both softened by the temperature ``tau``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dermlearn.atomic import atomic_write
from dermlearn.errors import DermlearnError
from dermlearn.training.runs import RunError, RunSetup

__all__ = ["TEACHER_FILE", "distillation_loss", "teacher_probabilities"]

TEACHER_FILE = "teacher_probs.npz"


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """``tau^2 * KL(q_tau || softmax(logits / tau))``, mean over the batch: ``logits`` (N, C) of
    the network, ``teacher`` (N, C) probabilities; ``q_tau`` is the teacher's distribution
    softened by ``tau`` (``softmax(log q / tau)``). The ``tau^2`` keeps its gradients' scale
    comparable to the labels' loss at any temperature."""
    log_q = torch.log_softmax(torch.log(teacher.clamp_min(1e-12)) / temperature, dim=1)
    log_p = torch.log_softmax(logits / temperature, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=1)
    return kl.mean() * temperature ** 2


def _check_teacher(setup: RunSetup, teacher) -> None:
    """The teacher predicts the run's classes and never trained on its validation images."""
    from dermlearn.inference.unseen import unseen_images

    if sorted(teacher.classes) != sorted(setup.classes):
        raise RunError(f"teacher {teacher.directory} predicts {teacher.classes}, the run trains "
                       f"{setup.classes}: they must be the same classes")
    ids = setup.manifest.table["image_id"].astype(str).to_numpy()
    validation = sorted({ids[r] for fold in setup.folds for r in fold.val_rows})
    try:
        scope = unseen_images(teacher, validation, "auto", source="the run's validation images")
    except DermlearnError as exc:  # not one of them unseen: name it as the leak it is
        raise RunError(f"teacher {teacher.directory}: {exc}") from None
    if "no run record" in scope.description:
        raise RunError(f"teacher {teacher.directory} has no run record beside it (splits.csv): "
                       f"dermlearn cannot check that it never trained on this run's validation "
                       f"images; give the teacher's run folder")
    if len(scope.rows) < len(validation):
        raise RunError(f"teacher {teacher.directory} trained on "
                       f"{len(validation) - len(scope.rows)} of this run's {len(validation)} "
                       f"validation images: its soft targets would leak their labels; train "
                       f"the teacher on this run's split (--splits RUN/splits.csv)")


def teacher_probabilities(setup: RunSetup, progress: bool = False) -> np.ndarray:
    """The teacher's probabilities (len(manifest), C) over the run's classes, in the run's class
    order; rows of the test part are zeros (never used). Cached in ``RUN/teacher_probs.npz``."""
    from dermlearn.inference import Predictor, score_images
    from dermlearn.models.views import first_views

    recipe, manifest, out = setup.plan.recipe, setup.manifest, setup.plan.out
    ids = manifest.table["image_id"].astype(str).to_numpy()
    rows = setup.usable
    cache = out / TEACHER_FILE
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as saved:
            if list(saved["ids"]) == list(ids[rows]) and list(saved["classes"]) == setup.classes:
                full = np.zeros((len(manifest), len(setup.classes)))
                full[rows] = saved["probs"]
                return full
    teacher = Predictor.load(Path(recipe.teacher))
    _check_teacher(setup, teacher)
    table = manifest.table.iloc[rows]
    size = teacher.preprocess.image_size
    probs = score_images(teacher, table["path"].astype(str).tolist(),
                         metadata=teacher.encode_metadata(table),
                         views=first_views(8 if size[0] == size[1] else 4),
                         batch_size=recipe.batch_size, num_workers=recipe.num_workers,
                         skip_unreadable=False, progress=progress,
                         desc="teacher").probabilities
    order = [teacher.classes.index(c) for c in setup.classes]
    probs = probs[:, order]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, ids=ids[rows].astype(str), classes=np.array(setup.classes, dtype=str),
                     probs=probs)

    atomic_write(cache, write)
    full = np.zeros((len(manifest), len(setup.classes)))
    full[rows] = probs
    return full
