"""PGGAN: the growth schedule, fades, pixel norm, equalised learning rate, minibatch std, WGAN-GP + drift,
exact resume mid-fade, export round trip and a trainer run through a phase change."""
import math
import types

import pytest
import torch
import torch.nn.functional as F

from engines.augment import build_augment
from engines.runs.export import load_export, save_export
from engines.generate.pggan import (PGGAN, Discriminator, EqualizedConv2d, EqualizedLinear, Generator, MinibatchStd,
                                    d_wgan_loss, downsample_reals, gradient_penalty, growth_phase, pixel_norm)
from engines.registry import get_engine
from helpers import checkpoint_round_trip

# widths min(128 // r, 16): 16 channels at 4 and 8 px, 8 at 16 px, 4 at 32 px. Phases of 16 images.
TINY = {"z_dim": 16, "channel_base": 128, "channel_max": 16, "stable_kimg": 0.016, "fade_kimg": 0.016}


def make(size=16, training=True, seed=0, augment=None, **cfg):
    torch.manual_seed(seed)
    e = PGGAN({**TINY, **cfg}, size, training=training)
    if training:
        e.setup(torch.device("cpu"), augment=augment)
    return e


def real_batch(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g) * 2 - 1
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)




def test_registry_and_paper_defaults():
    cls = get_engine("pggan")
    assert cls is PGGAN
    c = cls.default_config()
    assert c["lr"] == 0.001 and c["betas"] == [0.0, 0.99] and c["eps"] == 1e-8
    assert c["gp_lambda"] == 10.0 and c["eps_drift"] == 0.001 and c["ema_beta"] == 0.999 and c["ema_kimg"] == "auto"
    assert c["mbstd_group"] == 4 and c["z_dim"] == 512 and c["start_resolution"] == 4
    assert c["stable_kimg"] == c["fade_kimg"] == 30.0 and c["reset_optimizer"] is True
    assert "0.001" in cls.protocol_notes and "batch" in cls.protocol_notes


def test_alpha_ramp_at_chosen_image_counts():
    # 100 images stable, 200 fading, levels 0 (4 px) .. 3 (32 px)
    def ph(nimg):
        p = growth_phase(nimg, 100, 200, 0, 3)
        return p.resolution, p.alpha, p.fading, p.index

    assert ph(0) == (4, 1.0, False, 0)
    assert ph(99) == (4, 1.0, False, 0)
    assert ph(100) == (8, 0.0, True, 1)          # the fade starts with alpha exactly 0
    assert ph(150) == (8, 0.25, True, 1)
    assert ph(250) == (8, 0.75, True, 1)
    assert ph(299) == (8, 0.995, True, 1)
    assert ph(300) == (8, 1.0, False, 2)         # ... and ends where the next stable part starts
    assert ph(500) == (16, 0.5, True, 3)
    assert ph(700) == (32, 0.0, True, 5)
    assert ph(899) == (32, 0.995, True, 5)
    for n in (900, 1000, 10 ** 9):               # fully grown: full size, alpha 1, the index stops
        assert ph(n) == (32, 1.0, False, 6)
    # another start resolution, no fade (instant switch), no growing
    assert growth_phase(0, 10, 10, 1, 3).resolution == 8 and growth_phase(20, 10, 10, 1, 3).resolution == 16
    assert [growth_phase(n, 10, 0, 0, 2).resolution for n in (9, 10, 19, 20, 99)] == [4, 8, 8, 16, 16]
    assert growth_phase(10 ** 6, 0, 0, 3, 3) == (3, 1.0, False, 0)
    # the engine converts kimg to images
    e = make(32, training=False, stable_kimg=0.1, fade_kimg=0.2)
    assert e.phase(150).alpha == 0.25 and e.phase(150).resolution == 8


def test_phase_changes_at_the_right_image_count_and_resets_adam():
    e = make(16)
    x = real_batch(8)
    res, alpha, steps = [], [], []
    for _ in range(8):  # 16 images stable 4, 16 fading 8, 16 stable 8, 16 fading 16
        out = e.train_step(x)
        res.append(out["growth/resolution"])
        alpha.append(out["growth/alpha"])
        p = e.G.to_rgb[0].weight  # trained at every level below the fade into 16 px: its Adam step count
        steps.append(int(e.optimizers["G"].state[p]["step"]) if p in e.optimizers["G"].state else 0)
    assert res == [4, 4, 8, 8, 8, 8, 16, 16]
    assert alpha == [1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.5]
    assert int(e.nimg) == 64 and e.phase().index == 4 and int(e.opt_phase) == 3
    # Adam's state restarts at each phase boundary (reset_opt_for_new_lod): toRGB at 4 px takes part in the
    # stable 4 px phase and in the fade to 8 px, not after it
    assert steps == [1, 2, 1, 2, 0, 0, 0, 0]
    kept = make(16, reset_optimizer=False)
    for _ in range(4):
        kept.train_step(x)
    assert int(kept.optimizers["G"].state[kept.G.to_rgb[0].weight]["step"]) == 4
    # the EMA generator carries the phase (its buffers are copied from G)
    assert int(e.G_ema.level) == 2 and float(e.G_ema.alpha) == 0.5


@pytest.mark.parametrize("level", [0, 1, 2])
def test_shapes_at_each_phase(level):
    torch.manual_seed(0)
    G, D = Generator(16, 16, 128, 16), Discriminator(16, 128, 16)
    z = torch.randn(4, 16)
    for alpha in (0.0, 0.5, 1.0):
        img = G(z, level, alpha)
        assert img.shape == (4, 3, 4 * 2 ** level, 4 * 2 ** level) and torch.isfinite(img).all()
        s = D(img, level, alpha)
        assert s.shape == (4,) and torch.isfinite(s).all()
    with pytest.raises(ValueError, match="px images"):
        D(torch.zeros(2, 3, 16, 16), 0)
    # generate() gives the full image size at every phase
    e = make(32, training=False)
    for lvl in range(4):
        e.G_ema.set_phase(lvl, 0.5 if lvl else 1.0)
        out = e.sample(n=3, seed=1)
        assert out.shape == (3, 3, 32, 32) and out.min() >= -1 and out.max() <= 1
        f = 32 // (4 * 2 ** lvl)
        assert torch.equal(out, F.interpolate(out[..., ::f, ::f], scale_factor=f, mode="nearest"))  # blocky


def test_fades_start_where_the_previous_resolution_left_off():
    """alpha = 0 at level k equals level k - 1 (G: its image upscaled; D: the pooled image), so a fade
    starts without a jump; alpha = 1 ignores the old path."""
    torch.manual_seed(0)
    G, D = Generator(16, 16, 128, 16), Discriminator(16, 128, 16)
    z = torch.randn(4, 16)
    with torch.no_grad():
        for k in (1, 2):
            old = G(z, k - 1, 1.0)
            assert torch.allclose(G(z, k, 0.0), F.interpolate(old, scale_factor=2, mode="nearest"), atol=1e-6)
            img = G(z, k, 1.0)
            assert torch.allclose(D(img, k, 0.0), D(F.avg_pool2d(img, 2), k - 1, 1.0), atol=1e-5)
        G.to_rgb[1].weight.add_(1.0)  # the old toRGB does not matter at alpha 1
        assert torch.equal(G(z, 2, 1.0), img)


def test_reals_are_pooled_and_blended():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(downsample_reals(x, 16), x)
    hi = F.avg_pool2d(x, 2)
    assert torch.allclose(downsample_reals(x, 8), hi)
    low = F.interpolate(F.avg_pool2d(hi, 2), scale_factor=2, mode="nearest")
    assert torch.allclose(downsample_reals(x, 8, 0.0), low, atol=1e-6)
    assert torch.allclose(downsample_reals(x, 8, 0.25), 0.25 * hi + 0.75 * low, atol=1e-6)


def test_pixel_norm():
    x = torch.randn(3, 7, 5, 5) * 4 + 1
    y = pixel_norm(x)
    assert torch.allclose(y.square().mean(1), torch.ones(3, 5, 5), atol=1e-5)
    assert torch.allclose(pixel_norm(x * 10), y, atol=1e-5)  # invariant to the scale of each feature vector
    assert torch.allclose(y / x, (x.square().mean(1, keepdim=True) + 1e-8).rsqrt().expand_as(x), atol=1e-5)
    # in G: every block's output and the normalised latent have unit mean square per pixel
    torch.manual_seed(0)
    G = Generator(16, 16, 128, 16)
    feats = []
    hooks = [b.register_forward_hook(lambda m, i, o: feats.append(o)) for b in G.blocks]
    with torch.no_grad():
        G(torch.randn(2, 16) * 5, 2)
    for h in hooks:
        h.remove()
    assert len(feats) == 3
    for f in feats:
        assert torch.allclose(f.square().mean(1), torch.ones_like(f[:, 0]), atol=1e-4)


def test_equalised_learning_rate_scaling():
    torch.manual_seed(0)
    conv = EqualizedConv2d(64, 32, 3)
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(64 * 9))
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.03)  # stored at unit scale (N(0, 1))
    assert torch.all(conv.bias == 0)
    x = torch.randn(4, 64, 8, 8)
    with torch.no_grad():
        conv.bias.normal_()
        want = F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1)
    assert torch.allclose(conv(x), want, atol=1e-5)
    # He init at run time: the output keeps the input's second moment up to the gain (2 before lrelu)
    with torch.no_grad():
        conv.bias.zero_()
        assert conv(x)[..., 1:-1, 1:-1].square().mean().item() == pytest.approx(2.0, rel=0.1)  # away from padding
    # the gradient on the stored weight is the effective weight's times the scale: Adam (which normalises
    # gradients) then moves every layer's effective weights at the same relative speed
    w_eff = (conv.weight * conv.scale).detach().requires_grad_(True)
    F.conv2d(x, w_eff, padding=1).square().sum().backward()
    conv(x).square().sum().backward()
    assert torch.allclose(conv.weight.grad, w_eff.grad * conv.scale, rtol=1e-4, atol=1e-6)
    lin = EqualizedLinear(100, 10, gain=1.0)
    assert lin.scale == pytest.approx(0.1)
    # gains as the reference: 1 for toRGB and D's last layer, sqrt(2)/4 for G's first dense
    G, D = Generator(16, 16, 128, 16), Discriminator(16, 128, 16)
    assert G.to_rgb[2].scale == pytest.approx(1 / math.sqrt(8))
    assert G.blocks[0].scale == pytest.approx(math.sqrt(2) / 4 / 4)
    assert D.blocks[0].out.scale == pytest.approx(1 / math.sqrt(16))
    assert D.from_rgb[2].scale == pytest.approx(math.sqrt(2) / math.sqrt(3))
    equalised = (EqualizedConv2d, EqualizedLinear)
    for net in (G, D):
        for m in net.modules():
            assert not isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) or isinstance(m, equalised)


def test_minibatch_std():
    # batch 8, group 4: sample i is in group i % 2
    x = torch.zeros(8, 2, 2, 2)
    x[0::2] = torch.tensor([0.0, 2.0, 0.0, 2.0]).view(4, 1, 1, 1)   # group 0: std 1 in every feature
    x[1::2] = 5.0                                                    # group 1: identical samples
    y = MinibatchStd(4)(x)
    assert y.shape == (8, 3, 2, 2) and torch.equal(y[:, :2], x)
    assert torch.allclose(y[0::2, 2], torch.ones(4, 2, 2), atol=1e-6)
    assert torch.allclose(y[1::2, 2], torch.full((4, 2, 2), 1e-4), atol=1e-6)  # sqrt(0 + 1e-8)
    # a batch the group does not divide: the largest divisor <= group (6 -> 3)
    x = torch.randn(6, 4, 3, 3)
    y = MinibatchStd(4)(x)[:, 4, 0, 0]
    want = [x[[i, i + 2, i + 4]].std(0, correction=0).mean() for i in range(2)]
    assert torch.allclose(y, torch.stack(want * 3), atol=1e-5)
    assert MinibatchStd(0)(x).shape == x.shape and MinibatchStd(1).extra_channels == 0
    # in D the 4x4 head reads it: one more input channel
    assert Discriminator(16, 128, 16, mbstd_group=4).blocks[0].conv.weight.shape[1] == 17
    assert Discriminator(16, 128, 16, mbstd_group=0).blocks[0].conv.weight.shape[1] == 16


def test_wgan_gp_loss_with_the_drift_term_on_constructed_scores():
    s_real = torch.tensor([1.0, 2.0])
    s_fake = torch.tensor([0.0, -1.0])
    gp = torch.tensor([0.5, 1.5])
    d = d_wgan_loss(s_real, s_fake, gp, gp_lambda=10.0, eps_drift=0.001)
    assert d["wasserstein"].item() == pytest.approx(2.0)
    assert d["drift"].item() == pytest.approx(2.5)                    # mean of 1^2 and 2^2
    assert d["total"].item() == pytest.approx(-2.0 + 10 * 1.0 + 0.001 * 2.5)
    no_drift = d_wgan_loss(s_real, s_fake, gp, 10.0, 0.0)["total"]
    assert (d["total"] - no_drift).item() == pytest.approx(0.0025, abs=1e-6)
    # the drift pulls real scores towards 0: its gradient is 2 eps D(x) / N
    s = s_real.clone().requires_grad_(True)
    d_wgan_loss(s, s_fake, gp, 0.0, 0.001)["total"].backward()
    assert torch.allclose(s.grad, -0.5 + 0.001 * s_real)


def test_gradient_penalty_is_measured_in_the_full_size_image():
    """At resolution r the penalty equals the reference's, whose D takes the nearest-upscaled image and
    pools it back: the gradient norm there is the low-resolution one divided by R / r."""
    torch.manual_seed(0)
    D = Discriminator(16, 128, 16).double()
    real, fake = torch.rand(4, 3, 8, 8).double(), torch.rand(4, 3, 8, 8).double()
    torch.manual_seed(1)
    ours = gradient_penalty(D, real, fake, 1, 0.5, norm_scale=2.0)

    class Full(torch.nn.Module):  # the reference's view: full-size input, pooled inside D
        def forward(self, img, level, alpha):
            return D(F.avg_pool2d(img, 2), level, alpha)

    up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
    torch.manual_seed(1)
    ref = gradient_penalty(Full(), up(real), up(fake), 1, 0.5, norm_scale=1.0)
    assert torch.allclose(ours, ref, rtol=1e-10) and ours.shape == (4,)


def test_train_steps_update_g_d_and_the_ema():
    e = make(16, ema_kimg=None)  # the paper's EMA: beta 0.999 per step
    g0 = {k: v.clone() for k, v in e.G.state_dict().items()}
    ema0 = e.G_ema.blocks[0].weight.clone()
    out = e.train_step(real_batch())
    for k in ("loss/D", "loss/G", "acc/D_real", "acc/D_fake", "loss/gp", "loss/drift", "wasserstein"):
        assert torch.isfinite(torch.as_tensor(out[k])), k
    assert not torch.equal(e.G.blocks[0].weight, g0["blocks.0.weight"])
    # EMA with beta 0.999 per step
    want = g0["blocks.0.weight"].lerp(e.G.blocks[0].weight, 1 - 0.999)
    assert torch.allclose(e.G_ema.blocks[0].weight, want, atol=1e-7) and not torch.equal(ema0, want)
    h = make(16, ema_kimg=0.008)  # a half-life of 8 images = one batch: beta 0.5
    w0 = h.G.blocks[0].weight.clone()
    h.train_step(real_batch())
    assert torch.allclose(h.G_ema.blocks[0].weight, w0.lerp(h.G.blocks[0].weight, 0.5), atol=1e-7)
    # "auto": a 30th of a grow phase (defaults: 60 kimg -> 2 kimg; at batch 64 beta = 0.5 ** (64 / 2000))
    d = PGGAN({}, 32, training=False)
    assert d.ema_half_life_nimg() == 2000 and d.ema_beta(64) == pytest.approx(0.5 ** 0.032)
    assert make(16, stable_kimg=0.3, fade_kimg=0.3).ema_half_life_nimg() == 20
    assert PGGAN({"stable_kimg": 0, "fade_kimg": 0, "start_resolution": 32}, 32,
                 training=False).ema_half_life_nimg() == 10_000


def test_bf16_autocast_and_diffaugment_steps_are_finite():
    e = make(16, augment=build_augment("diffaugment"))
    e.amp_dtype = torch.bfloat16
    for _ in range(3):  # stable 4 px, then a fade to 8 px (DiffAugment at 4 and 8 px)
        out = e.train_step(real_batch())
        assert all(torch.isfinite(torch.as_tensor(v)) for v in out.values())


def test_exact_resume_mid_fade_is_bit_identical():
    def fresh(seed):
        return make(16, seed=seed, augment=build_augment("diffaugment"), fade_kimg=0.032)

    x = real_batch(8)
    a = fresh(0)
    for _ in range(3):
        a.train_step(x)
    assert a.phase().fading and a.phase().alpha == 0.25  # 24 images: 8 into a 32-image fade
    state, rng = checkpoint_round_trip(a), torch.get_rng_state()
    outs_a = [a.train_step(x) for _ in range(2)]
    b = fresh(123)  # different weights; nimg, phase and Adam state must all come from the checkpoint
    b.load_state_dict_full(state)
    torch.set_rng_state(rng)
    outs_b = [b.train_step(x) for _ in range(2)]
    assert [o["growth/alpha"] for o in outs_b] == [0.25, 0.5]
    for out_a, out_b in zip(outs_a, outs_b):
        assert out_a.keys() == out_b.keys()
        for k in out_a:
            assert torch.equal(torch.as_tensor(out_a[k]), torch.as_tensor(out_b[k])), k
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert int(b.nimg) == 40 and b._nimg == 40
    oa, ob = a.optimizers["D"].state_dict()["state"], b.optimizers["D"].state_dict()["state"]
    assert oa.keys() == ob.keys() and all(torch.equal(oa[i]["exp_avg"], ob[i]["exp_avg"]) for i in oa)


def test_export_round_trip_mid_fade(tmp_path):
    e = make(32)
    for _ in range(4):  # the last step at 24 images: fading in 8 px, alpha 0.5
        e.train_step(real_batch(8, 32))
    save_export(e, tmp_path / "export")
    loaded = load_export(tmp_path / "export")
    assert isinstance(loaded, PGGAN) and not hasattr(loaded, "D") and not loaded.optimizers
    assert set(loaded.state_dict()) == {"G_ema." + k for k in e.G_ema.state_dict()}
    assert loaded.sampling_phase()[:3] == loaded.phase()[:3] == (1, 0.5, True)
    a, b = e.sample(n=4, seed=3), loaded.sample(n=4, seed=3)
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b)
    growth = loaded.export_info["extra"]["growth"]
    assert growth["resolution"] == 8 and growth["alpha"] == 0.5 and growth["fading"] and not growth["complete"]
    assert growth["kimg"] == 0.032 and "8 px" in growth["label"]
    with pytest.raises(RuntimeError, match="training=False"):
        loaded.train_step(real_batch(8, 32))


def test_bad_settings_get_clear_errors():
    with pytest.raises(ValueError, match="power-of-two"):
        PGGAN(TINY, 48, training=False)
    with pytest.raises(ValueError, match="power-of-two"):
        PGGAN(TINY, 2048, training=False)
    with pytest.raises(ValueError, match="start_resolution"):
        PGGAN({**TINY, "start_resolution": 6}, 16, training=False)
    with pytest.raises(ValueError, match="start_resolution"):
        PGGAN({**TINY, "start_resolution": 32}, 16, training=False)
    with pytest.raises(ValueError, match="no growing"):
        PGGAN({**TINY, "stable_kimg": 0, "fade_kimg": 0}, 16, training=False)
    assert PGGAN({**TINY, "stable_kimg": 0, "fade_kimg": 0, "start_resolution": 16}, 16).phase(10 ** 6).level == 2
    with pytest.raises(ValueError, match="fade_kimg"):
        PGGAN({**TINY, "fade_kimg": -1}, 16, training=False)
    with pytest.raises(ValueError, match="ema_beta"):
        PGGAN({**TINY, "ema_beta": 1.0}, 16, training=False)
    with pytest.raises(ValueError, match="ema_kimg"):
        PGGAN({**TINY, "ema_kimg": "fast"}, 16, training=False)
    with pytest.raises(ValueError, match="no setting"):
        PGGAN({"stable_kmig": 3}, 16, training=False)
    with pytest.raises(ValueError, match="z must be"):
        make(16, training=False).generate(torch.zeros(2, 5))


def test_trainer_run_passes_a_phase_change(tmp_path):
    from engines.config import TrainConfig
    from engines.runs.folder import read_info, read_metrics
    from engines.trainer import Trainer

    imgs = ((real_batch(16, 16) + 1) * 127.5).round().to(torch.uint8)
    ds = types.SimpleNamespace(images=imgs, key="k", name="tiny", source="/nowhere", skipped=[], background="white")
    # 16 images per epoch (2 steps of 8): epoch 1 at 4 px, epoch 2 fades 8 px in, epoch 3 at 8 px
    cfg = TrainConfig(image_size=16, batch_size=8, epochs=3, sample_every=3, eval_every=0, grid_n=4,
                      engine=dict(TINY))
    t = Trainer("pggan", ds, tmp_path, cfg, progress=False)
    run = t.fit()
    info = read_info(run)
    assert info["status"] == "finished" and info["config"]["engine"]["stable_kimg"] == 0.016
    recs = read_metrics(run).train
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert [r["growth/resolution"] for r in recs] == [4, 8, 8]
    assert [r["growth/alpha"] for r in recs] == [1.0, 0.25, 1.0]
    assert all(math.isfinite(r["loss/D"]) and math.isfinite(r["loss/G"]) for r in recs)
    loaded = load_export(run)
    assert loaded.export_info["extra"]["growth"]["label"] == "trained up to 8 px of 16 px"
    assert torch.equal(loaded.sample(n=3, seed=1), t.engine.sample(n=3, seed=1))
    assert (run / "samples" / "epoch_000003.png").is_file()
