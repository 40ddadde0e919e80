import pytest
import torch

from engines.augment import build_augment
from engines.augment.diffaugment import rand_cutout, rand_translation


def test_translation_shifts_content_and_fills_zero():
    torch.manual_seed(0)
    x = torch.arange(1, 1 + 2 * 16 * 16, dtype=torch.float).view(2, 1, 16, 16)
    y = rand_translation(x, ratio=0.25)
    for n in range(2):
        # find the shift: every nonzero output pixel is an input pixel moved by one (dx, dy)
        nz = (y[n, 0] != 0).nonzero()
        i, j = nz[0].tolist()
        src = (x[n, 0] == y[n, 0, i, j]).nonzero()[0].tolist()
        dx, dy = src[0] - i, src[1] - j
        assert abs(dx) <= 4 and abs(dy) <= 4
        for a in range(16):
            for b in range(16):
                sa, sb = a + dx, b + dy
                want = x[n, 0, sa, sb] if 0 <= sa < 16 and 0 <= sb < 16 else 0.0
                assert y[n, 0, a, b] == want


def test_cutout_zeroes_one_square_of_half_size():
    torch.manual_seed(1)
    x = torch.ones(8, 3, 16, 16)
    y = rand_cutout(x, ratio=0.5)
    zeros = (y[:, 0] == 0).float().sum(dim=(1, 2))
    assert (zeros <= 64).all() and (zeros >= 16).all()  # an 8x8 square, possibly clipped at a border
    assert torch.equal(y[:, 0], y[:, 2])  # same mask on every channel


@pytest.mark.parametrize("name", ["diffaugment", "none"])
def test_pipelines_are_differentiable(name):
    aug = build_augment(name, policy="color,translation,cutout")
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    y = aug(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_augmentation_and_policy():
    with pytest.raises(ValueError, match="unknown augmentation 'fancy'"):
        build_augment("fancy")
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        build_augment("diffaugment", policy="color,blur")
