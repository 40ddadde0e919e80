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


# ---- the reference: mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py (meshgrid made explicit "ij") ----
def ref_brightness(x):
    return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def ref_saturation(x):
    x_mean = x.mean(dim=1, keepdim=True)
    return (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + x_mean


def ref_contrast(x):
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + x_mean


def ref_translation(x, ratio=0.125):
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1], device=x.device)
    translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1], device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(x.size(2), dtype=torch.long, device=x.device),
        torch.arange(x.size(3), dtype=torch.long, device=x.device), indexing="ij")
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = torch.nn.functional.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def ref_cutout(x, ratio=0.5):
    cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    offset_x = torch.randint(0, x.size(2) + (1 - cutout_size[0] % 2), size=[x.size(0), 1, 1], device=x.device)
    offset_y = torch.randint(0, x.size(3) + (1 - cutout_size[1] % 2), size=[x.size(0), 1, 1], device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(cutout_size[0], dtype=torch.long, device=x.device),
        torch.arange(cutout_size[1], dtype=torch.long, device=x.device), indexing="ij")
    grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype, device=x.device)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


REF_POLICIES = {"color": [ref_brightness, ref_saturation, ref_contrast], "translation": [ref_translation],
                "cutout": [ref_cutout]}


def ref_diffaugment(x, policy):
    for p in policy.split(","):
        for f in REF_POLICIES[p]:
            x = f(x)
    return x.contiguous()


def _run(fn, x, seed):
    """fn(x) under a seed, with the gradient of a fixed random linear functional of the output."""
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    y = fn(x)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(99))
    (y * w).sum().backward()
    return y.detach(), x.grad


SHAPES = [(8, 3, 16, 16), (5, 3, 15, 20), (64, 3, 64, 64)]


@pytest.mark.parametrize("shape", SHAPES)
def test_ops_are_the_reference_ops(shape):
    """Same random draws as the reference (on a CPU): translation and cutout bit-identical, colour equal to
    float rounding (it is one fused affine map instead of three), gradients likewise."""
    from engines.augment import diffaugment as da

    x = torch.randn(shape)
    cases = [
        (da.rand_brightness, ref_brightness, 0), (da.rand_saturation, ref_saturation, 0),
        (da.rand_contrast, ref_contrast, 0), (da.rand_translation, ref_translation, 0),
        (lambda t: da.rand_translation(t, 0.25), lambda t: ref_translation(t, 0.25), 0),
        (da.rand_cutout, ref_cutout, 0), (lambda t: da.rand_cutout(t, 0.3), lambda t: ref_cutout(t, 0.3), 0),
        (da.rand_translation_cutout, lambda t: ref_cutout(ref_translation(t)), 0),
        (da.rand_color, lambda t: ref_contrast(ref_saturation(ref_brightness(t))), 1e-5),
    ]
    for seed in range(3):
        for ours, ref, tol in cases:
            (y1, g1), (y2, g2) = _run(ours, x, seed), _run(ref, x, seed)
            if tol:
                torch.testing.assert_close(y1, y2, rtol=tol, atol=tol)
                torch.testing.assert_close(g1, g2, rtol=tol, atol=tol)
            else:
                assert torch.equal(y1, y2) and torch.equal(g1, g2)


@pytest.mark.parametrize("policy", ["color,translation,cutout", "color", "translation", "cutout",
                                    "cutout,translation", "translation,cutout,color", "color,cutout"])
def test_diffaugment_policy_is_the_reference_policy(policy):
    x = torch.randn(6, 3, 24, 24)
    for seed in range(2):
        (y1, g1), (y2, g2) = _run(build_augment("diffaugment", policy=policy), x, seed), \
            _run(lambda t: ref_diffaugment(t, policy), x, seed)
        torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)


def test_policy_is_fused_where_it_can_be():
    from engines.augment import diffaugment as da

    assert build_augment("diffaugment").ops == [da.rand_color, da.rand_translation_cutout]
    assert build_augment("diffaugment", policy="cutout,translation").ops == [da.rand_cutout, da.rand_translation]


def test_colour_factor_ranges():
    """The fused colour op keeps the reference's factor ranges: a constant grey image moves by the brightness
    only (saturation and contrast act on deviations from the means), within [-0.5, 0.5)."""
    from engines.augment.diffaugment import rand_color

    torch.manual_seed(0)
    y = rand_color(torch.zeros(4000, 3, 2, 2))
    shift = y[:, 0, 0, 0]
    assert torch.allclose(y, shift.view(-1, 1, 1, 1).expand_as(y))
    assert shift.min() >= -0.5 and shift.max() < 0.5 and abs(float(shift.mean())) < 0.02


def test_bf16_in_bf16_out():
    aug = build_augment("diffaugment")
    x = torch.randn(4, 3, 16, 16, dtype=torch.bfloat16, requires_grad=True)
    y = aug(x)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
