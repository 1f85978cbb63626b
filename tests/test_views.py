"""The dihedral test-time views shared by predict, serving and features mode."""
import pytest
import torch

from dermlearn.errors import DermlearnError
from dermlearn.models.views import SQUARE_ONLY, VIEWS, apply_view, check_views, first_views


def test_the_eight_views_are_the_distinct_symmetries_of_the_square():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    outs = [apply_view(x, name) for name in VIEWS]
    assert all(o.shape == x.shape for o in outs)
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    # each is a permutation of pixels within every channel, never mixing images or channels
    for o in outs:
        assert torch.equal(o.sum(dim=(-2, -1)), x.sum(dim=(-2, -1)))
    assert torch.equal(apply_view(x, "rot90"), torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(apply_view(apply_view(x, "transverse"), "transverse"), x)


def test_first_views_and_checks():
    assert first_views(1) == ("identity",)
    assert first_views(8) == VIEWS
    with pytest.raises(DermlearnError, match="between 1 and 8"):
        first_views(9)
    with pytest.raises(DermlearnError, match="unknown view"):
        check_views(("twirl",), (4, 4))
    with pytest.raises(DermlearnError, match="square"):
        check_views(("identity", "rot90"), (4, 6))
    assert check_views("hflip", (4, 6)) == ("hflip",)
    assert SQUARE_ONLY < set(VIEWS)
    with pytest.raises(DermlearnError, match="unknown view"):
        apply_view(torch.zeros(1, 3, 2, 2), "twirl")
