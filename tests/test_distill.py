"""Knowledge distillation (issue 21): the loss, the teacher's cached soft targets, and the
teachers that would leak the student's validation labels, refused."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import dermlearn
from dermlearn.cli import main
from dermlearn.errors import DermlearnError
from dermlearn.training.distill import TEACHER_FILE, distillation_loss

TINY = dict(image_size=64, batch_size=8, num_workers=0, epochs=1)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_the_loss_is_zero_at_the_teacher_and_pulls_towards_it(tau):
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    at_teacher = torch.log(teacher).clone().requires_grad_(True)
    assert float(distillation_loss(at_teacher, teacher, tau).detach()) == pytest.approx(
        0, abs=1e-6)
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = distillation_loss(logits, teacher, tau)
    loss.backward()
    assert float(loss.detach()) > 0
    # A small step down the gradient moves the student's distribution towards the teacher's.
    stepped = (logits - 0.5 * logits.grad).detach()
    assert float(distillation_loss(stepped, teacher, tau)) < float(loss.detach())
    if tau == 1.0:  # the familiar gradient: (p - q) / N
        expected = (torch.softmax(torch.zeros(2, 3), 1) - teacher) / 2
        torch.testing.assert_close(logits.grad, expected)


@pytest.fixture(scope="module")
def teacher(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("distill") / "teacher"
    dermlearn.train(tiny_data, run, overrides={**TINY, "epochs": 2}, progress=False)
    return run


def test_a_student_learns_from_its_teachers_cached_soft_targets(teacher, tiny_data, tmp_path):
    student = tmp_path / "student"
    assert main(["train", str(tiny_data), "--out", str(student), "--teacher", str(teacher),
                 "--epochs", "1", "--image-size", "64", "--batch-size", "8",
                 "--num-workers", "0", "--quiet"]) == 0
    with np.load(student / TEACHER_FILE) as saved:
        probs, ids = saved["probs"], list(saved["ids"])
    val = set(pd.read_csv(student / "val_predictions.csv")["image"].astype(str))
    assert len(ids) == len(pd.read_csv(tiny_data / "manifest.csv"))  # every usable image
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # The teacher's probabilities are its predictions averaged over the 8 dihedral views.
    manifest = dermlearn.load(tiny_data)
    again = dermlearn.predict(teacher, manifest.select(ids[:4]), tta=8)
    classes = list(pd.read_csv(student / "val_predictions.csv").columns[1:-2])
    np.testing.assert_allclose(again[classes].to_numpy(), probs[:4], atol=1e-5)
    assert val <= set(ids)  # validation rows are scored too (the check below keeps them clean)
    plain = tmp_path / "plain"
    dermlearn.train(tiny_data, plain, overrides=TINY, progress=False)
    losses = [pd.read_csv(r / "history.csv")["train_loss"].iloc[0] for r in (student, plain)]
    assert losses[0] != pytest.approx(losses[1])


def test_teachers_that_saw_the_validation_images_are_refused(teacher, tiny_data, tmp_path):
    other = tmp_path / "other-split"
    dermlearn.train(tiny_data, other, overrides={**TINY, "seed": 3}, progress=False)
    with pytest.raises(DermlearnError, match="trained on .* of this run's .* validation images"):
        dermlearn.train(tiny_data, tmp_path / "s1", overrides={**TINY, "teacher": str(other)},
                        progress=False)
    lone = tmp_path / "lone"
    shutil.copytree(teacher / "model", lone)
    with pytest.raises(DermlearnError, match="no run record beside it"):
        dermlearn.train(tiny_data, tmp_path / "s2", overrides={**TINY, "teacher": str(lone)},
                        progress=False)
    with pytest.raises(DermlearnError, match="not a model or run folder"):
        dermlearn.train(tiny_data, tmp_path / "s3",
                        overrides={**TINY, "teacher": str(tmp_path / "nothing")}, progress=False)
