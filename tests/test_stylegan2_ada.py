"""StyleGAN2-ADA engine: shapes, W space, truncation, style mixing, penalties, training, exact resume, export."""
import math

import pytest
import torch

from engines.augment import build_augment
from engines.runs.export import load_export, save_export
from engines.generate.stylegan2_ada import FIR, Generator, MinibatchStd, ModulatedConv, StyleGAN2ADA
from engines.registry import get_engine
from helpers import checkpoint_round_trip

# widths: min(channel_base // res, channel_max) -> 16 channels at 4..8 px, 8 at 16 px, 4 at 32 px
TINY = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 128, "channel_max": 16}


def make(size=16, training=True, seed=0, augment=None, **cfg):
    torch.manual_seed(seed)
    e = StyleGAN2ADA({**TINY, **cfg}, size, training=training)
    if training:
        e.setup(torch.device("cpu"), augment=augment)
    return e


def real_batch(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth blobs rather than white noise, so D has something learnable
    x = torch.rand(n, 3, size // 4, size // 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def test_registry_and_defaults():
    cls = get_engine("stylegan2_ada")
    assert cls is StyleGAN2ADA and cls.default_augment == "ada"
    c = cls.default_config()
    assert c["z_dim"] == c["w_dim"] == 512 and c["mapping_layers"] == 8 and c["betas"] == [0.0, 0.99]
    assert c["r1_interval"] == 16 and c["pl_interval"] == 4 and c["pl_weight"] == 2.0
    assert c["style_mixing_prob"] == 0.9 and c["ema_kimg"] is None and c["ema_rampup"] == 0.05
    assert c["num_fp16_res"] == 4 and "lr" in cls.protocol_notes


@pytest.mark.parametrize("size,num_ws", [(32, 8), (64, 10)])
def test_shapes_and_mapping_synthesis_round_trip(size, num_ws):
    e = make(size, training=False)
    assert e.num_ws == num_ws
    imgs = e.sample(n=3, seed=1)
    assert imgs.shape == (3, 3, size, size) and torch.isfinite(imgs).all()
    assert imgs.min() >= -1 and imgs.max() <= 1 and imgs.std() > 0
    with torch.inference_mode():
        z = e.latent(3, 1)
        ws = e.mapping(z)
        assert ws.shape == (3, num_ws, 16)
        assert torch.equal(ws[:, 0], ws[:, -1])  # one w, broadcast to every layer
        assert torch.equal(e.synthesis(ws).clamp(-1, 1), imgs)
        assert torch.equal(e.synthesis(ws[:, 0]), e.synthesis(ws))  # [N, w_dim] is broadcast


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2ADA(TINY, 48, training=False)
    with pytest.raises(ValueError, match="no setting"):
        StyleGAN2ADA({"chanel_base": 4}, 32, training=False)
    with pytest.raises(ValueError, match="r1_gamma"):
        StyleGAN2ADA({**TINY, "r1_gamma": "big"}, 16, training=False)
    e = make(16, training=False)
    with pytest.raises(ValueError, match="z must be"):
        e.mapping(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="noise_mode"):
        e.synthesis(e.mapping(e.latent(1)), noise_mode="loud")
    with pytest.raises(ValueError, match="crossover"):
        e.style_mix([1], [2], crossover=e.num_ws + 1)
    with pytest.raises(ValueError, match="interpolation mode"):
        e.interpolate(1, 2, 3, mode="cubic")
    with pytest.raises(RuntimeError, match="training=False"):
        e.train_step(real_batch())


def test_fused_and_scaled_modulated_convs_agree():
    torch.manual_seed(0)
    for up in (False, True):
        m = ModulatedConv(6, 5, 3, 8, up=up).double()
        x, w = torch.randn(3, 6, 8, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
        a, b = m(x, w, fused=False), m(x, w, fused=True)
        assert a.shape == (3, 5, 16 if up else 8, 16 if up else 8)
        assert torch.allclose(a, b, atol=1e-12)
    G = Generator(16, 16, 16, 128, 16, mapping_layers=2).double()
    ws = G.mapping(torch.randn(2, 16, dtype=torch.float64))
    assert torch.allclose(G.synthesis(ws, "const", fused=True), G.synthesis(ws, "const", fused=False), atol=1e-10)


def test_demodulation_normalises_the_output_scale():
    """With demodulation, a unit-variance input gives ~unit-variance output for any style scale."""
    torch.manual_seed(1)
    m = ModulatedConv(64, 64, 3, 8)
    x = torch.randn(4, 64, 16, 16)
    w = torch.randn(4, 8)
    y1 = m(x, w)
    with torch.no_grad():
        m.affine.bias.mul_(50.0)  # much larger styles
    y2 = m(x, w)
    assert 0.7 < y1[..., 1:-1, 1:-1].std() < 1.3 and 0.7 < y2[..., 1:-1, 1:-1].std() < 1.3


def test_fir_resampling_filter():
    f = FIR().double()
    ramp = torch.arange(8.0, dtype=torch.float64).view(1, 1, 1, 8).repeat(1, 1, 8, 1)
    up = f.up(ramp)
    assert up.shape == (1, 1, 16, 16)
    # [1,3,3,1] upsampling of a ramp: samples at quarter offsets (half-pixel centres), i.e. bilinear inside
    assert torch.allclose(up[0, 0, 8, 2:14], torch.arange(0.75, 6.5, 0.5, dtype=torch.float64)[:12])
    assert torch.allclose(f.down(up)[..., 1:-1, 1:-1], ramp[..., 1:-1, 1:-1])  # down(up(x)) = x away from borders


def test_minibatch_std_groups():
    x = torch.randn(8, 4, 4, 4)
    y = MinibatchStd(group=4, channels=1)(x)
    assert y.shape == (8, 5, 4, 4)
    # sample i is in group i % 2: members 0, 2, 4, 6
    expect = x[0::2].std(0, unbiased=False).mean()
    assert torch.allclose(y[0, 4], torch.full((4, 4), float(expect)), atol=1e-4)
    assert MinibatchStd(4)(torch.randn(6, 4, 4, 4)).shape == (6, 5, 4, 4)  # 6 % 4 != 0: group of 3


def test_truncation_psi_zero_gives_the_w_avg_image():
    e = make(16, training=False)
    with torch.no_grad():
        e.G_ema.mapping.w_avg.normal_()
    a = e.sample(n=2, seed=3, truncation_psi=0.0)
    b = e.sample(n=2, seed=99, truncation_psi=0.0)
    assert torch.equal(a[0], a[1]) and torch.equal(a, b)
    w_avg_img = e.synthesis(e.G_ema.mapping.w_avg.view(1, -1)).clamp(-1, 1)
    assert torch.allclose(a[:1], w_avg_img, atol=1e-5)
    assert not torch.allclose(e.sample(n=2, seed=3), a)  # psi = 1 does depend on z
    # cutoff: only the first layers are truncated
    with torch.inference_mode():
        z = e.latent(2, 5)
        full, cut = e.mapping(z), e.mapping(z, truncation_psi=0.0, truncation_cutoff=3)
    assert torch.equal(cut[:, :3], e.G_ema.mapping.w_avg.expand(2, 3, -1)) and torch.equal(cut[:, 3:], full[:, 3:])


def test_style_mixing_coarse_from_rows_fine_from_columns():
    e = make(32, training=False)
    rows, cols = [1, 2], [3, 4, 5]
    n = e.num_ws
    row_imgs, col_imgs = e.sample(n=1, seed=1), e.sample(n=1, seed=3)
    grid = e.style_mix(rows, cols, crossover=n)
    assert grid.shape == (6, 3, 32, 32)
    assert torch.allclose(grid[0], row_imgs[0], atol=1e-5)  # all layers from the row
    assert torch.allclose(e.style_mix(rows, cols, crossover=0)[0], col_imgs[0], atol=1e-5)  # all from the column
    # measured: taking only the fine layers from the column changes the row image less than taking the coarse too
    dist = {k: (e.style_mix([1], [3], crossover=k)[0] - row_imgs[0]).abs().mean().item() for k in range(n + 1)}
    assert dist[n] < 1e-6
    assert dist[n - 2] < dist[2] and dist[n - 1] < dist[1]
    # and row i / column j land where documented: row-major with len(cols) per row
    mixed = e.style_mix(rows, cols, crossover=3)
    assert torch.allclose(mixed[1 * 3 + 2], e.style_mix([2], [5], crossover=3)[0], atol=1e-5)


def test_interpolation_walks_in_w():
    e = make(16, training=False)
    frames = e.interpolate(1, 2, frames=5)
    assert frames.shape == (5, 3, 16, 16)
    assert torch.allclose(frames[0], e.sample(n=1, seed=1)[0], atol=1e-5)
    assert torch.allclose(frames[-1], e.sample(n=1, seed=2)[0], atol=1e-5)
    with torch.inference_mode():
        w_mid = (e.mapping(e.latent(1, 1)) + e.mapping(e.latent(1, 2))) / 2
        assert torch.allclose(frames[2], e.synthesis(w_mid)[0].clamp(-1, 1), atol=1e-5)  # linear in W
    z_walk = e.interpolate(1, 2, frames=5, mode="slerp")
    assert torch.allclose(z_walk[0], frames[0], atol=1e-5) and not torch.allclose(z_walk[2], frames[2], atol=1e-4)


def test_penalties_are_finite_and_positive():
    e = make(16, augment=build_augment("ada", p=0.5, target=None))
    r1 = e.r1_penalty(real_batch())
    assert r1.shape == (8,) and torch.isfinite(r1).all() and (r1 > 0).all()
    r1.mean().backward()  # second-order: reaches D's weights through the augmentation
    assert e.D.from_rgb.weight.grad is not None and e.D.from_rgb.weight.grad.abs().sum() > 0
    assert float(e.pl_mean) == 0.0
    pen, lengths = e.pl_penalty(4)
    assert pen.shape == lengths.shape == (4,) and torch.isfinite(pen).all() and (pen > 0).all()
    assert (lengths > 0).all() and float(e.pl_mean) == pytest.approx(0.01 * float(lengths.detach().mean()), rel=1e-5)
    pen.mean().backward()
    assert e.G.synthesis.convs1[0].conv.weight.grad.abs().sum() > 0
    assert e.r1_gamma(64) == pytest.approx(0.0002 * 16 ** 2 / 64)


def test_lazy_regularisation_adam_correction():
    e = make(16)
    g, d = e.optimizers["G"].param_groups[0], e.optimizers["D"].param_groups[0]
    assert g["lr"] == pytest.approx(0.0025 * 4 / 5) and d["lr"] == pytest.approx(0.0025 * 16 / 17)
    assert g["betas"] == pytest.approx((0.0, 0.99 ** (4 / 5))) and d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    # the mapping network learns 100x slower (lr multiplier 0.01 at run time, weights stored / 0.01)
    lin = e.G.mapping.net[0]
    assert lin.weight_gain == pytest.approx(0.01 / math.sqrt(16)) and lin.weight.std() > 50


def test_train_steps_stay_finite_and_update_everything():
    aug = build_augment("ada", target=0.6, interval=1, kimg=0.01)
    e = make(16, augment=aug, r1_interval=2, pl_interval=2)
    ema0 = {k: v.clone() for k, v in e.G_ema.state_dict().items()}
    x = real_batch(8)
    outs = [e.train_step(x) for _ in range(4)]
    for out in outs:
        for k in ("loss/D", "loss/G", "acc/D_real", "acc/D_fake", "loss/r1", "loss/pl", "pl_mean"):
            assert out[k].dim() == 0 and torch.isfinite(out[k]), k
        assert 0 <= out["acc/D_real"] <= 1 and 0 <= out["acc/D_fake"] <= 1
        assert 0.1 < out["loss/D"] < 5 and 0.05 < out["loss/G"] < 5  # nothing blew up
    assert outs[-1]["loss/r1"] > 0 and outs[-1]["loss/pl"] > 0 and outs[-1]["pl_mean"] > 0
    assert int(e.g_steps) == int(e.d_steps) == 4 and int(e.nimg) == 32
    assert e.G.mapping.w_avg.abs().sum() > 0
    assert torch.equal(e.G_ema.mapping.w_avg, e.G.mapping.w_avg)  # buffers follow G
    changed = [k for k, v in e.G_ema.state_dict().items() if not torch.equal(v, ema0[k])]
    assert any("convs1" in k for k in changed)  # the EMA moved ...
    assert not torch.equal(e.G_ema.synthesis.const, e.G.synthesis.const)  # ... but lags behind G
    assert e.augment.p != 0.0  # ADA got feedback every D step


def test_style_mixing_regularisation_mixes_during_training():
    e = make(16, style_mixing_prob=1.0)
    z = torch.randn(4, 16)
    torch.manual_seed(3)
    _, ws = e._run_G(z, update_w_avg=False)
    # with probability 1 the later layers come from a second latent: ws is no longer constant over layers
    assert not torch.equal(ws[:, 0], ws[:, -1]) and torch.equal(ws[:, 0], e.G.mapping(z)[:, 0])
    e.config["style_mixing_prob"] = 0.0
    _, ws = e._run_G(z, update_w_avg=False)
    assert torch.equal(ws[:, 0], ws[:, -1])


def test_autocast_bf16_train_step_is_finite():
    e = make(16, augment=build_augment("ada", p=0.3, target=None))
    e.amp_dtype = torch.bfloat16  # what setup() picks on a bf16 GPU; CPU autocast runs the same code
    out = e.train_step(real_batch(8))
    assert all(torch.isfinite(v) for v in out.values())




def test_exact_resume_is_bit_identical():
    def fresh(seed):
        return make(16, seed=seed, augment=build_augment("ada", target=0.6, interval=2, kimg=0.05, p=0.2),
                    r1_interval=2, pl_interval=2, ema_rampup=0.05)

    x = real_batch(8)
    a = fresh(0)
    a.train_step(x)  # the regularisers ran at step 0; the next ones are due at step 2
    state, rng = checkpoint_round_trip(a), torch.get_rng_state()
    outs_a = [a.train_step(x) for _ in range(2)]  # a plain step, then G main + PL, D main + R1
    b = fresh(123)  # different initial weights, ADA p and counters: all must come from the checkpoint
    b.load_state_dict_full(state)
    torch.set_rng_state(rng)
    outs_b = [b.train_step(x) for _ in range(2)]
    for out_a, out_b in zip(outs_a, outs_b):
        assert out_a.keys() == out_b.keys()
        for k in out_a:
            assert torch.equal(out_a[k], out_b[k]), k
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert int(b.g_steps) == 3 and outs_b[1]["loss/pl"] != outs_b[0]["loss/pl"]  # PL ran in the last step
    assert a.augment.p == b.augment.p and a.augment.p != 0.2


def test_export_loads_into_a_sampling_engine(tmp_path):
    e = make(16, augment=build_augment("ada", p=0.2, target=None))
    e.train_step(real_batch(8))
    save_export(e, tmp_path / "export")
    loaded = load_export(tmp_path / "export")
    assert isinstance(loaded, StyleGAN2ADA) and not hasattr(loaded, "D") and not loaded.optimizers
    assert set(loaded.state_dict()) == {"G_ema." + k for k in e.G_ema.state_dict()}
    assert torch.equal(loaded.sample(n=4, seed=7), e.sample(n=4, seed=7))
    assert torch.equal(loaded.sample(n=2, seed=7, truncation_psi=0.5), e.sample(n=2, seed=7, truncation_psi=0.5))
    assert torch.equal(loaded.style_mix([1, 2], [3], crossover=2), e.style_mix([1, 2], [3], crossover=2))
    extra = loaded.export_info["extra"]
    assert extra["num_ws"] == e.num_ws and {"truncation", "style_mixing", "w_space"} <= set(extra["supports"])


@pytest.mark.slow
def test_trainer_runs_stylegan2_ada_with_ada(tmp_path, tiny_dataset):
    """End to end through the generic trainer: ADA is the default augmentation (the run config's default
    augment_options, DiffAugment's policy, must not break it), its p is logged, the export samples."""
    from engines.config import TrainConfig
    from engines.runs.folder import read_info, read_metrics
    from engines.trainer import Trainer

    cfg = TrainConfig(image_size=32, batch_size=8, epochs=2, sample_every=2, eval_every=0, grid_n=4,
                      engine={**TINY, "r1_interval": 2, "pl_interval": 2},
                      augment_options={"policy": "color,translation,cutout", "kimg": 0.02, "interval": 1})
    t = Trainer("stylegan2_ada", tiny_dataset, tmp_path, cfg, progress=False)
    run = t.fit()
    assert read_info(run)["status"] == "finished"
    assert type(t.engine.augment).__name__ == "AdaptiveAugment"
    recs = read_metrics(run).train
    assert [r["epoch"] for r in recs] == [1, 2]
    for r in recs:
        for k in ("loss/D", "loss/G", "acc/D_real", "acc/D_fake", "loss/r1", "loss/pl", "augment_p"):
            assert math.isfinite(r[k]), k
    assert all(0 <= r["augment_p"] <= 1 for r in recs)
    assert t.engine.augment.rt is not None  # the engine fed D's real logits back to ADA
    assert torch.equal(load_export(run).sample(n=3, seed=1), t.engine.sample(n=3, seed=1))


def _dtypes_under_bf16(e, z):
    """Output dtypes of G's and D's parts in one forward pass under CPU bf16 autocast."""
    seen = {}

    def hook(name):
        def record(module, inputs, output):
            seen[name] = output.dtype
        return record

    G, D = e.G, e.D
    for i, lin in enumerate(G.mapping.net):
        lin.register_forward_hook(hook(f"mapping.{i}"))
    for i, r in enumerate(G.synthesis.resolutions):
        G.synthesis.convs1[i].register_forward_hook(hook(f"G.conv.{r}"))
    for r, block in zip(D.block_resolutions, D.blocks):
        block.register_forward_hook(hook(f"D.block.{r}"))
    D.from_rgb.register_forward_hook(hook("D.from_rgb"))
    for name in ("mbstd", "conv", "fc", "out"):
        getattr(D, name).register_forward_hook(hook(f"D.{name}"))
    ups = []
    up = G.synthesis.fir.up
    G.synthesis.fir.up = lambda x: ups.append(x.dtype) or up(x)
    e.amp_dtype = torch.bfloat16  # what setup() picks on an Ampere+ GPU; CPU autocast runs the same code
    with e.autocast():
        img, _ = e._run_G(z, update_w_avg=False)
        logits = D(img)
    return seen, ups, img.dtype, logits.dtype


def test_reduced_precision_only_where_the_reference_uses_it():
    # 32 px with num_fp16_res=2: blocks at 16 and 32 px in bf16; 4 and 8 px, the mapping, the RGB skip path
    # and D's epilogue in fp32
    e = make(32, num_fp16_res=2)
    assert e.G.synthesis.fp16_resolution == e.D.fp16_resolution == 16
    seen, ups, img_dtype, logit_dtype = _dtypes_under_bf16(e, torch.randn(4, 16))
    assert all(seen[f"mapping.{i}"] == torch.float32 for i in range(len(e.G.mapping.net)))
    assert seen["G.conv.4"] == seen["G.conv.8"] == torch.float32
    assert seen["G.conv.16"] == seen["G.conv.32"] == torch.bfloat16
    assert ups and all(d == torch.float32 for d in ups) and img_dtype == torch.float32
    assert seen["D.from_rgb"] == seen["D.block.32"] == seen["D.block.16"] == torch.bfloat16
    assert seen["D.block.8"] == torch.float32
    assert all(seen[f"D.{k}"] == torch.float32 for k in ("mbstd", "conv", "fc", "out"))
    assert logit_dtype == torch.float32
    # the default: the top 4 resolutions (R/8 and up), as the reference's num_fp16_res=4
    assert make(16, training=False).G_ema.synthesis.fp16_resolution == 8
    from engines.generate.stylegan2_ada import fp16_resolution
    assert fp16_resolution(128, 4) == 16 and fp16_resolution(256, 4) == 32 and fp16_resolution(32, 0) == 64


def test_penalties_and_their_backward_run_without_tf32(monkeypatch):
    e = make(16, r1_interval=1, pl_interval=1)
    seen = []
    for name in ("r1_penalty", "pl_penalty"):
        real = getattr(e, name)

        def wrapped(*a, _real=real, _name=name, **k):
            seen.append((_name, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
            return _real(*a, **k)
        monkeypatch.setattr(e, name, wrapped)
    optimize = e.optimize

    def opt(name, loss):
        seen.append((name, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        optimize(name, loss)
    monkeypatch.setattr(e, "optimize", opt)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        e.train_step(real_batch(8))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # restored
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    # G main (TF32 as the user set it), PL and its step without, D main with, R1 and its step without
    assert seen == [("G", True, True), ("pl_penalty", False, False), ("G", False, False),
                    ("D", True, True), ("r1_penalty", False, False), ("D", False, False)]


def test_ema_half_life_follows_the_batch_with_ramp_up():
    e = make(16)
    assert e.config["ema_kimg"] is None and e.ema_kimg(64) == 20.0 and e.ema_kimg(32) == 10.0
    assert e.ema_beta(8) == 0.0  # the first step copies G (no images seen yet)
    e._nimg = 10_000  # ramp-up: half-life min(2.5 kimg, 0.05 x 10k images = 500 images)
    assert e.ema_beta(8) == pytest.approx(0.5 ** (8 / 500))
    e._nimg = 10 ** 7
    assert e.ema_beta(8) == pytest.approx(0.5 ** (8 / 2500))
    f = make(16, ema_kimg=2, ema_rampup=None)  # explicit values keep working
    assert f.ema_kimg(64) == 2.0 and f.ema_beta(8) == pytest.approx(0.5 ** (8 / 2000))
    with pytest.raises(ValueError, match="ema_kimg"):
        make(16, ema_kimg=-1)
    # one training step from scratch: G_ema is G after its first step
    g = make(16, augment=None)
    g.train_step(real_batch(8))
    assert all(torch.equal(a, b) for a, b in zip(g.G_ema.parameters(), g.G.parameters()))
    assert int(g.nimg) == 8


def test_metric_samples_use_seeded_random_noise():
    from engines.base import metrics_sampling
    from engines.generate.stylegan2_ada import noise_seed
    from engines.metrics.evaluate import _batch_seed, _generated
    from engines.metrics.inception import as_uint8_rgb

    e = make(16, training=False)
    with torch.no_grad():
        for m in e.G_ema.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.5)  # trained nets have non-zero noise strengths
    const = e.sample(n=4, seed=3)
    with metrics_sampling():
        torch.manual_seed(1)
        a = e.sample(n=4, seed=3)
        torch.manual_seed(2)
        b = e.sample(n=4, seed=3)  # the noise comes from the seed, not from the global RNG
        assert torch.equal(e.sample(n=4, seed=3, noise_mode="const"), const)  # explicit arguments win
    assert torch.equal(a, b) and not torch.equal(a, const)
    with torch.inference_mode():
        g = torch.Generator().manual_seed(noise_seed(3))
        expect = e.generate(e.latent(4, 3), noise_mode="random", noise_generator=g).clamp(-1, 1)
    assert torch.equal(a, expect)
    assert torch.equal(e.sample(n=4, seed=3), const)  # outside metrics: grids and the app keep 'const'
    # the path the trainer's evaluation and `pokelab eval` take
    batch = next(_generated(lambda k, s: e.sample(n=k, seed=s), 4, 4, seed=11))
    with metrics_sampling():
        assert torch.equal(batch, as_uint8_rgb(e.sample(n=4, seed=_batch_seed(11, 0))))
    assert not torch.equal(batch, as_uint8_rgb(e.sample(n=4, seed=_batch_seed(11, 0))))
