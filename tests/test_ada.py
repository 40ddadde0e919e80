"""ADA (engines.augment.ada): the p controller, the transforms one by one, differentiability, bounds."""
import math

import pytest
import torch

from engines.augment import build_augment
from engines.augment.ada import _STRENGTHS, AdaptiveAugment

OFF = {k: 0 for k in _STRENGTHS}


def only(*names, p=1.0, **kw):
    """An ADA pipeline with just the named transforms, at probability p."""
    return AdaptiveAugment(target=None, p=p, **{**OFF, **{n: 1 for n in names}}, **kw)


def rand_images(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ---- the controller -------------------------------------------------------------------------------------------
def test_p_rises_when_d_overfits_and_falls_otherwise():
    a = AdaptiveAugment(target=0.6, interval=4, kimg=1.0)
    assert a.p == 0.0
    for _ in range(8):  # two adjustments, each by (32 images * 4 steps) / 1000
        a.update(torch.full((32,), 3.0))  # D calls every real "real": r_t = 1 > 0.6
    assert a.p == pytest.approx(2 * 128 / 1000) and a.rt == 1.0
    for _ in range(3):  # no adjustment before `interval` updates
        a.update(torch.full((32,), -1.0))
    assert a.p == pytest.approx(0.256)
    a.update(torch.full((32,), -1.0))  # r_t = -1 < target: p falls
    assert a.p == pytest.approx(0.128) and a.rt == -1.0
    for _ in range(40):
        a.update(-torch.ones(32))
    assert a.p == 0.0  # clamped at 0
    for _ in range(400):
        a.update(torch.ones(32))
    assert a.p == 1.0  # clamped at 1


def test_p_uses_the_mean_sign_over_the_interval():
    a = AdaptiveAugment(target=0.6, interval=2, kimg=1.0, p=0.5)
    # 3/4 positive over the interval: r_t = 0.5 < 0.6 although the last batch was all positive
    a.update(torch.tensor([1.0, -1.0, 1.0, -1.0]))
    a.update(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    assert a.rt == pytest.approx(0.5) and a.p == pytest.approx(0.5 - 8 / 1000)


def test_fixed_p_when_target_is_none():
    a = AdaptiveAugment(target=None, p=0.3)
    for _ in range(20):
        a.update(torch.ones(16))
    assert a.p == 0.3


def test_state_dict_round_trip_keeps_the_pending_interval():
    a = AdaptiveAugment(target=0.6, interval=4, kimg=1.0, p=0.2)
    a.update(torch.ones(8))
    a.update(torch.ones(8))
    b = AdaptiveAugment(target=0.6, interval=4, kimg=1.0)
    b.load_state_dict(a.state_dict())
    for aug in (a, b):
        aug.update(torch.ones(8))
        assert aug.p == 0.2  # third update: still inside the interval
        aug.update(torch.ones(8))
    assert a.p == b.p == pytest.approx(0.2 + 32 / 1000)


def test_options_are_checked():
    assert isinstance(build_augment("ada", target=0.5), AdaptiveAugment)
    # DiffAugment's option arrives through the shared run config: accepted and ignored
    assert build_augment("ada", policy="color,translation,cutout").p == 0.0
    with pytest.raises(ValueError, match="unknown ADA option"):
        AdaptiveAugment(xflp=1)
    with pytest.raises(ValueError, match="target"):
        AdaptiveAugment(target=1.5)
    with pytest.raises(ValueError, match="interval"):
        AdaptiveAugment(interval=0)
    with pytest.raises(ValueError, match="p must be"):
        AdaptiveAugment(p=-0.1)
    with pytest.raises(ValueError, match="ADA expects images"):
        AdaptiveAugment(p=0.5)(torch.zeros(3, 8, 8))


def test_non_finite_feedback_does_not_move_p():
    a = AdaptiveAugment(target=0.6, interval=1, kimg=1.0, p=0.4)
    a.update(torch.tensor([float("nan"), 1.0]))
    assert a.p == 0.4


# ---- the pipeline ---------------------------------------------------------------------------------------------
def test_p_zero_is_the_identity():
    x = rand_images()
    assert torch.equal(AdaptiveAugment(p=0.0)(x), x)


def test_all_transforms_are_differentiable():
    torch.manual_seed(0)
    x = rand_images(4).requires_grad_(True)
    y = AdaptiveAugment(target=None, p=1.0)(x)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every sample gets a gradient


def test_gradients_match_finite_differences_including_second_order():
    """R1 on augmented reals needs d/dx and d/dtheta(d/dx): check both numerically (double precision)."""
    aug = AdaptiveAugment(target=None, p=0.8)
    x = (torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1).requires_grad_(True)

    def f(inp):
        torch.manual_seed(5)  # the same random transform on every evaluation
        return aug(inp)

    assert not torch.equal(f(x), x)
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda inp: f(inp).square(), (x,), eps=1e-6, atol=1e-4, fast_mode=True)


def test_values_stay_bounded():
    torch.manual_seed(1)
    assert AdaptiveAugment().value_bound() == math.inf  # untruncated draws, as the reference's
    a = AdaptiveAugment(target=None, p=1.0, max_sigma=2.0)
    bound = a.value_bound()
    assert math.isfinite(bound) and bound < 80  # loose: the warp's filters' worst case is x3.7
    # extreme inputs: saturated primaries/secondaries and random pixels
    corners = torch.tensor([[r, g, b] for r in (-1, 1) for g in (-1, 1) for b in (-1, 1)], dtype=torch.float32)
    x = torch.cat([corners.view(8, 3, 1, 1).expand(8, 3, 16, 16), rand_images(56)]).repeat(8, 1, 1, 1)
    y = a(x)
    assert torch.isfinite(y).all() and y.abs().max() <= bound
    assert y.std() < 3 * x.std()  # typical values stay in a sane range, not just the worst case
    # blit and cutout copy or blank pixels; the supersampled warp's wavelet filters ring a little at edges
    g = only("xflip", "rotate90", "xint", "cutout")(x)
    assert g.min() >= -1 and g.max() <= 1
    g = only("scale", "rotate", "aniso", "xfrac")(x)
    assert g.min() >= -1.6 and g.max() <= 1.6


def test_default_is_the_references_bgc_with_untruncated_draws():
    a = AdaptiveAugment()
    assert a.strength["cutout"] == 0 and all(a.strength[k] == 1 for k in _STRENGTHS if k != "cutout")
    assert a.max_sigma is None
    torch.manual_seed(0)
    x = torch.zeros(4000, 3, 1, 1)
    b = only("brightness", p=1.0)(x)[:, 0, 0, 0]  # N(0, 0.2) offsets: beyond 2 sigma about 4.6 % of the time
    assert (b.abs() > 0.4).float().mean() > 0.03 and b.abs().max() > 0.6
    t = only("brightness", p=1.0, max_sigma=2.0)(x)[:, 0, 0, 0]
    assert t.abs().max() <= 0.4 + 1e-6


def test_warp_is_supersampled_like_the_reference():
    from engines.augment.ada import _blit, _rotate2d, _scale2d, _translate2d, _warp

    f = AdaptiveAugment()._consts(torch.device("cpu"), torch.float64)["filter"]
    x = rand_images(2, size=16).double()
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    assert torch.allclose(_warp(x, eye, f), x, atol=1e-9)  # 2x up then down with sym6 is the identity
    # a whole-pixel "fractional" translation lands on the blit's pixels (alignment of the upsampled grid); at
    # the border the shifted-in reflection differs a little (positions beyond the padding are folded)
    shift = _translate2d(torch.full((2,), -3.0, dtype=torch.float64), torch.full((2,), 2.0, dtype=torch.float64))
    assert torch.allclose(_warp(x, shift, f)[..., 2:-2, 2:-2], _blit(x, shift)[..., 2:-2, 2:-2], atol=1e-9)
    assert (_warp(x, shift, f) - _blit(x, shift)).abs().max() < 0.1
    # zooming out by 2 on a pixel checkerboard (the Nyquist frequency): plain bilinear sampling would read
    # every other pixel and keep a saturated pattern; the wavelet low-pass leaves an almost flat grey
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    board = (((yy + xx) % 2) * 2 - 1).double().expand(1, 3, 32, 32)
    half = _scale2d(torch.full((1,), 2.0, dtype=torch.float64), torch.full((1,), 2.0, dtype=torch.float64))
    out = _warp(board, half, f)
    assert out[..., 8:24, 8:24].abs().max() < 0.05
    # a rotation keeps a smooth picture's content in place (centre of rotation = image centre)
    smooth = torch.nn.functional.interpolate(rand_images(1, size=4).double(), size=32, mode="bicubic",
                                             align_corners=False)
    quarter = _rotate2d(torch.full((1,), math.pi / 2, dtype=torch.float64))
    assert torch.allclose(_warp(smooth, quarter, f)[..., 6:26, 6:26],
                          torch.rot90(smooth, 1, (2, 3))[..., 6:26, 6:26], atol=0.04)


def test_constants_are_built_once_per_device(monkeypatch):
    """A torch.tensor(..., device=cuda) per call is a host-to-device copy that stalls the step on a GPU."""
    aug = AdaptiveAugment(target=None, p=1.0, cutout=1)
    x = rand_images(4)
    aug(x)  # builds the constants for (cpu, float32)
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(1) or real(*a, **k))
    aug(x)
    aug(x.double())  # another dtype builds its own set once
    n_double = len(made)
    aug(x.double())
    assert len(made) == n_double and n_double <= 30


def test_xflip_and_rotate90_are_exact():
    torch.manual_seed(2)
    x = rand_images(16)
    y = only("xflip")(x)
    kinds = [0 if torch.equal(a, b) else 1 if torch.equal(a, b.flip(2)) else -1 for a, b in zip(y, x)]
    assert -1 not in kinds and 0 < sum(kinds) < 16  # each sample flipped or not (p=1: a coin each)
    y = only("rotate90")(x)
    ks = [next((k for k in range(4) if torch.equal(a, torch.rot90(b, k, (1, 2)))), None) for a, b in zip(y, x)]
    assert None not in ks and len(set(ks)) > 1


def test_integer_translation_shifts_whole_pixels():
    torch.manual_seed(3)
    x = rand_images(8, size=32)
    y = only("xint")(x)
    shifted = 0
    for a, b in zip(y, x):
        c = a[:, 8:24, 8:24]  # interior: no reflection at +-4 px (0.125 * 32)
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if torch.equal(c, b[:, 8 - dy:24 - dy, 8 - dx:24 - dx])]
        assert found, "not an integer translation"
        shifted += found[0] != (0, 0)
    assert shifted >= 4


def test_scale_rotate_aniso_xfrac_move_the_content():
    torch.manual_seed(4)
    x = rand_images(8)
    for name in ("scale", "rotate", "aniso", "xfrac"):
        y = only(name)(x)
        changed = (y - x).flatten(1).abs().amax(1) > 1e-3
        assert changed.sum() >= 6, name


def test_colour_transforms_act_as_documented():
    torch.manual_seed(5)
    x = rand_images(8)
    grey = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    luma = lambda t: t.mean(1)  # noqa: E731  (the grey-axis component)
    chroma = lambda t: (t - t.mean(1, keepdim=True)).norm(dim=1)  # noqa: E731

    d = only("brightness")(x) - x  # a constant offset per sample
    assert torch.allclose(d, d[:, :1, :1, :1].expand_as(d), atol=1e-6) and d.abs().amax() > 0
    r = only("contrast")(x) / x  # a constant gain per sample
    assert torch.allclose(r, r[:, :1, :1, :1].expand_as(r), atol=1e-4) and (r - 1).abs().amax() > 0.01
    for name in ("hue", "saturation"):  # rotations / scalings about the grey axis leave greys alone
        assert torch.allclose(only(name)(grey), grey, atol=1e-5), name
    y = only("hue")(x)  # hue keeps luma and chroma magnitude, changes the colour
    assert torch.allclose(luma(y), luma(x), atol=1e-5) and torch.allclose(chroma(y), chroma(x), atol=1e-4)
    assert (y - x).abs().amax() > 0.1
    y = only("saturation")(x)  # saturation keeps luma and scales chroma by one factor per sample
    assert torch.allclose(luma(y), luma(x), atol=1e-5)
    ratio = chroma(y) / chroma(x)
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), atol=1e-3) and (ratio - 1).abs().amax() > 0.05
    x = rand_images(64)
    y = only("lumaflip")(x)  # per sample: luma kept or negated (a coin), chroma kept
    signs = []
    for a, b in zip(y.split(1), x.split(1)):
        kept, negated = torch.allclose(luma(a), luma(b), atol=1e-5), torch.allclose(luma(a), -luma(b), atol=1e-5)
        assert kept or negated
        signs.append(negated)
    assert any(signs) and not all(signs)
    assert torch.allclose(chroma(y), chroma(x), atol=1e-4)


def test_cutout_blanks_one_square_of_half_the_side():
    torch.manual_seed(6)
    x = torch.ones(16, 3, 16, 16)
    y = only("cutout")(x)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    zero = (y[:, 0] == 0)
    assert zero.any()
    for m in zero:
        if m.any():
            rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
            assert rows.numel() <= 8 and cols.numel() <= 8  # at most half the side
            assert m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one solid rectangle
    assert torch.equal((y == 0).all(1), zero)  # all channels blanked together


def test_each_transform_fires_with_probability_p():
    torch.manual_seed(7)
    n = 4000
    x = torch.rand(n, 3, 4, 4) * 2 - 1
    y = only("xflip", p=0.5)(x)
    flipped = (y != x).flatten(1).any(1).float().mean().item()
    assert abs(flipped - 0.25) < 0.04  # applied with p = 0.5, then a fair coin for the flip
    y = only("brightness", p=0.3)(x)
    assert abs((y != x).flatten(1).any(1).float().mean().item() - 0.3) < 0.04


def test_dtype_and_memory_format_are_kept():
    torch.manual_seed(8)
    x = rand_images(4).to(memory_format=torch.channels_last)
    y = AdaptiveAugment(target=None, p=0.5)(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.dtype == torch.float32
    yb = AdaptiveAugment(target=None, p=0.5)(rand_images(4).to(torch.bfloat16))
    assert yb.dtype == torch.bfloat16 and torch.isfinite(yb.float()).all()


def test_other_engines_can_use_ada():
    """Only the augment interface is needed: DCGAN trains with it attached (p stays fixed there)."""
    from engines.generate.dcgan import DCGAN

    torch.manual_seed(9)
    e = DCGAN({"z_dim": 8, "g_width": 4, "d_width": 4}, 16)
    e.setup(torch.device("cpu"), augment=build_augment("ada", p=0.5, target=None))
    out = e.train_step(rand_images(8))
    assert all(torch.isfinite(torch.as_tensor(v)) for v in out.values())
    assert e.augment.p == 0.5
