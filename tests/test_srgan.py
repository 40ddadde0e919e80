"""SRGAN (engines/upscale/srgan.py), the upscale kind in the trainer, exports, `pokelab upscale`, the metrics
(engines/metrics/superres.py), the app's "Upscale ×4" panel (app/upscale.py) and the studio on an upscale run."""
from __future__ import annotations

import math
import os
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engines.config import TrainConfig
from engines.runs.export import load_export, read_export_config, save_export
from engines.metrics.superres import evaluate_upscaling, psnr, psnr_y, rgb_to_y, shave, ssim_y
from engines.registry import get_engine
from engines.runs.folder import checkpoint_path, read_info, read_metrics
from engines.trainer import Trainer
from engines.upscale.srgan import SRGAN, ResidualBlock, SRDiscriminator, SRResNet
from engines.vgg import VGG16_FILE, VGGUnavailable, get_vgg_features
from helpers import Killed, blobs, checkpoint_round_trip, kill_at_step

TINY = {"n_blocks": 2, "g_width": 8, "d_width": 8, "d_pool": 2, "d_dense": 16, "crop_size": 16,
        "vgg_layer": "relu2_2"}


def make(size=32, seed=0, training=True, **kw):
    torch.manual_seed(seed)
    return SRGAN({**TINY, **kw}, size, training=training)


def hr_batch(n=4, size=32, seed=1):
    return blobs(n, size, seed)


def uint8(x):
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def vgg22():
    try:
        return get_vgg_features("relu2_2", "cpu")
    except VGGUnavailable as e:
        pytest.skip(str(e))


# ---- the networks ---------------------------------------------------------------------------------------

def test_registry_kind_and_paper_defaults():
    cls = get_engine("srgan")
    assert cls is SRGAN and cls.kind == "upscale" and cls.domains == 1 and cls.default_augment == "none"
    c = cls.default_config()
    assert (c["scale"], c["n_blocks"], c["g_width"], c["crop_size"]) == (4, 16, 64, 96)
    assert (c["lr"], c["betas"], c["adv_weight"]) == (1e-4, [0.9, 0.999], 1e-3)
    assert c["content_weight"] == pytest.approx((1 / 12.75) ** 2, rel=0.03) and c["vgg_layer"] == "relu5_3"
    assert (c["val_fraction"], c["pretrain_fraction"], c["output"]) == (0.1, 0.5, "tanh")
    cfg = TrainConfig.for_engine(cls)
    assert cfg.batch_size == 16 and cfg.eval_metrics == "psnr,ssim,lpips"


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_pixel_shuffle_stages_and_shapes(scale):
    g = SRResNet(scale=scale, n_blocks=1, width=8)
    shuffles = [m for m in g.modules() if isinstance(m, torch.nn.PixelShuffle)]
    assert len(shuffles) == int(math.log2(scale)) and all(m.upscale_factor == 2 for m in shuffles)
    for stage in g.upsample:  # conv to 4x channels, PixelShuffle x2, PReLU
        conv, ps, act = stage
        assert conv.out_channels == 4 * 8 and isinstance(ps, torch.nn.PixelShuffle) and isinstance(act, torch.nn.PReLU)
    y = g(torch.rand(2, 3, 5, 7) * 2 - 1)
    assert y.shape == (2, 3, 5 * scale, 7 * scale) and y.abs().max() <= 1  # tanh
    assert SRResNet(scale=scale, n_blocks=1, width=8, output="linear")(torch.ones(1, 3, 4, 4)).shape[-1] == 4 * scale


def test_sixteen_residual_blocks_and_the_paper_layers():
    e = SRGAN({}, 96, training=False)
    g = e.G
    assert len(g.blocks) == 16 and all(isinstance(b, ResidualBlock) for b in g.blocks)
    kinds = [type(m).__name__ for m in g.blocks[0].body]
    assert kinds == ["Conv2d", "BatchNorm2d", "PReLU", "Conv2d", "BatchNorm2d"]
    assert g.head[0].kernel_size == (9, 9) and g.tail.kernel_size == (9, 9) and g.head[0].out_channels == 64
    assert [type(m).__name__ for m in g.neck] == ["Conv2d", "BatchNorm2d"]
    assert 1.4e6 < sum(p.numel() for p in g.parameters()) < 1.7e6  # the paper's SRResNet: ~1.5 M
    assert not hasattr(e, "D") and not e.optimizers  # an inference build


def test_residual_and_global_skips():
    block = ResidualBlock(4).eval()
    with torch.no_grad():
        block.body[4].weight.zero_()
        block.body[4].bias.zero_()
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(block(x), x)  # the body adds nothing: the skip alone
    g = SRResNet(scale=2, n_blocks=2, width=4).eval()
    with torch.no_grad():
        g.neck[1].weight.zero_()
        g.neck[1].bias.zero_()
    x = torch.rand(1, 3, 6, 6) * 2 - 1
    expected = torch.tanh(g.tail(g.upsample(g.head(x))))  # the blocks are bypassed by the global skip
    assert torch.allclose(g(x), expected, atol=1e-6)


def test_discriminator_is_the_papers_vgg_style_net_at_any_size():
    d = SRDiscriminator()
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.features) == 7
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, torch.nn.LeakyReLU))
    dense = [m for m in d.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dense] == [(512 * 36, 1024), (1024, 1)]
    d.eval()
    for size in (16, 32, 96):
        assert d(torch.rand(2, 3, size, size)).shape == (2,)


def test_bad_settings_get_clear_errors():
    with pytest.raises(ValueError, match="scale must be 2, 4 or 8"):
        make(scale=3)
    with pytest.raises(ValueError, match="multiple of the scale"):
        make(30)
    with pytest.raises(ValueError, match="crop_size 18"):
        make(crop_size=18)
    with pytest.raises(ValueError, match="val_fraction"):
        make(val_fraction=0.9)
    with pytest.raises(ValueError, match="vgg_layer"):
        make(vgg_layer="relu5_4")
    with pytest.raises(ValueError, match="output"):
        make(output="sigmoid")
    with pytest.raises(ValueError, match="no setting"):
        make(crop=16)
    assert make(crop_size=0).crop == 32 and make(crop_size=96).crop == 32  # whole pictures
    e = make()
    for fn in (lambda: e.sample(n=2), lambda: e.latent(2), lambda: e.interpolate(1, 2)):
        with pytest.raises(ValueError, match="upscaling engine"):
            fn()


# ---- data: crops, bicubic LR, the held-out split --------------------------------------------------------

def test_bicubic_lr_matches_pil_and_the_baseline_upsamples():
    e = make()
    hr = hr_batch(2, 32)
    hr = F.avg_pool2d(F.pad(hr, (1, 1, 1, 1), mode="replicate"), 3, 1)  # a little softer, like artwork edges
    lr = e.downsample(hr)
    assert lr.shape == (2, 3, 8, 8) and lr.min() >= -1 and lr.max() <= 1
    for i in range(2):
        pil = Image.fromarray(uint8(hr[i]).permute(1, 2, 0).numpy()).resize((8, 8), Image.Resampling.BICUBIC)
        ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1).int()
        diff = (uint8(lr[i]).int() - ref).abs()
        assert diff.max() <= 2 and diff.float().mean() < 0.5  # PIL's antialiased bicubic reduction
    const = torch.full((1, 3, 32, 32), 0.25)
    assert torch.allclose(e.downsample(const), torch.full((1, 3, 8, 8), 0.25), atol=1e-6)
    assert e.bicubic(lr).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="multiples"):
        e.downsample(torch.zeros(1, 3, 30, 32))


def test_random_crops_come_from_the_checkpointed_rng():
    e = make()
    x = hr_batch(4, 32)
    torch.manual_seed(3)
    a = e.random_crop(x)
    torch.manual_seed(3)
    b = e.random_crop(x)
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b)
    # every crop is a window of its own picture
    for i in range(4):
        windows = x[i].unfold(1, 16, 1).unfold(2, 16, 1)  # [3, 17, 17, 16, 16]
        assert (windows == a[i][:, None, None]).flatten(3).all(-1).all(0).any()


def test_heldout_split_is_seeded_disjoint_and_complete():
    e = make()
    tr, va = e.heldout_split(65)
    assert len(va) == round(0.1 * 65) == 6 and not set(tr.tolist()) & set(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(65))
    tr2, va2 = make(seed=9).heldout_split(65)
    assert torch.equal(va, va2)  # the split depends on split_seed only, not on the weights' seed
    assert not torch.equal(va, make(split_seed=1).heldout_split(65)[1])
    assert len(make(val_fraction=0).heldout_split(10)[1]) == 0 and len(make().heldout_split(3)[1]) == 1
    assert e.run_info()["heldout_pictures"] == 6 and e.run_info()["train_pictures"] == 59


# ---- losses and training ---------------------------------------------------------------------------------

def test_perceptual_loss_uses_frozen_vgg_features(vgg22):
    e = make()
    assert e.vgg() is vgg22 and not vgg22.training
    assert not any(p.requires_grad for p in vgg22.parameters())
    state = torch.load(os.path.join(torch.hub.get_dir(), "checkpoints", VGG16_FILE), map_location="cpu",
                       weights_only=True, mmap=True)
    assert torch.equal(vgg22.features[7].weight, state["features.7.weight"])  # conv2_2
    assert len(vgg22.features) == 9 and isinstance(vgg22.features[-1], torch.nn.ReLU)  # cut after relu2_2
    before = {k: v.clone() for k, v in vgg22.state_dict().items()}
    a, b = hr_batch(2, 32, 1), hr_batch(2, 32, 2)
    assert e.content_loss(a, a).item() == 0.0
    b.requires_grad_(True)
    loss = e.content_loss(b, a)
    loss.backward()
    assert loss.item() > 0 and b.grad is not None and b.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg22.parameters())
    e.start_epoch(2, 2)  # pretrain_fraction 0.5 of 2 epochs: epoch 2 is adversarial
    assert e.gan_phase
    e.train_step(hr_batch(4, 32))
    after = vgg22.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {k.split(".")[0] for k in e.state_dict()} == {"G", "D", "gan_started"}  # no VGG in checkpoints


def test_missing_vgg_weights_fail_at_setup_with_a_clear_error(monkeypatch, tmp_path):
    import urllib.error

    import torchvision.models  # noqa: F401 - bound before the patch (see tests/test_cartoongan.py)

    import engines.vgg as vgg

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    monkeypatch.setattr(vgg, "_nets", {})
    with pytest.raises(VGGUnavailable, match="SRGAN's perceptual.*TORCH_HOME.*vgg16-397923af.pth"):
        make(vgg_layer="relu3_3").setup(torch.device("cpu"))


def test_tiny_overfit_lowers_the_mse():
    e = make(lr=2e-3, crop_size=0, n_blocks=1, g_width=16)
    x = hr_batch(4, 32)
    e.start_epoch(1, 10)
    assert not e.gan_phase
    first = e.train_step(x)
    for _ in range(60):
        last = e.train_step(x)
    assert set(first) == {"loss/G", "loss/mse", "phase"} and float(first["phase"]) == 0
    assert float(last["loss/mse"]) < 0.5 * float(first["loss/mse"])
    assert float(last["loss/mse"]) < 0.05


def test_gan_phase_resets_g_adam_once_and_steps_both_nets(vgg22):
    e = make()
    x = hr_batch(4, 32)
    e.start_epoch(1, 4)
    e.train_step(x)
    assert e.optimizers["G"].state and not e.optimizers["D"].state
    d_before = {k: v.clone() for k, v in e.D.state_dict().items()}
    e.start_epoch(3, 4)
    assert e.gan_phase and bool(e.gan_started) and not e.optimizers["G"].state  # a fresh Adam for SRGAN
    out = e.train_step(x)
    assert {"loss/D", "loss/content", "loss/adv", "acc/D_real", "acc/D_fake"} <= set(out)
    assert all(math.isfinite(float(v)) for v in out.values()) and 0 <= float(out["acc/D_real"]) <= 1
    assert any(not torch.equal(d_before[k], v) for k, v in e.D.state_dict().items())
    step = e.optimizers["G"].state[next(iter(e.optimizers["G"].state))]["step"]
    e.start_epoch(4, 4)  # later epochs (and a resumed run) keep G's Adam
    assert e.optimizers["G"].state[next(iter(e.optimizers["G"].state))]["step"] == step
    assert e.lr_factor(1, 4) == e.lr_factor(3, 4) == 1.0 and e.lr_factor(4, 4) == 0.1
    assert [g["lr"] for g in e.optimizers["G"].param_groups] == [pytest.approx(1e-5)]


def test_gan_phase_g_loss_is_content_adversarial_and_pixel_terms(vgg22):
    for pixel in (0.0, 1.0):
        e = make(pixel_weight=pixel, content_weight=0.5, adv_weight=0.25)
        e.start_epoch(3, 4)
        out = e.train_step(hr_batch(4, 32))
        want = 0.5 * out["loss/content"] + 0.25 * out["loss/adv"] + pixel * out["loss/mse"]
        assert float(out["loss/G"]) == pytest.approx(float(want), rel=1e-5)
    assert SRGAN.default_config()["pixel_weight"] == 1.0
    with pytest.raises(ValueError, match="pixel_weight"):
        make(pixel_weight=-1)


def test_checkpoint_round_trip_is_exact(vgg22):
    x = hr_batch(4, 32)
    a = make()
    a.start_epoch(2, 2)
    a.train_step(x)
    state, rng = checkpoint_round_trip(a), torch.get_rng_state()
    outs_a = [a.train_step(x) for _ in range(2)]
    b = make(seed=5)
    b.load_state_dict_full(state)
    b.start_epoch(2, 2)  # a resumed epoch: gan_started came from the checkpoint, Adam is not reset
    torch.set_rng_state(rng)
    outs_b = [b.train_step(x) for _ in range(2)]
    for oa, ob in zip(outs_a, outs_b):
        assert all(torch.equal(oa[k], ob[k]) for k in oa)


# ---- inference: tiles, grids, exports ----------------------------------------------------------------------

def test_tiles_give_the_one_piece_result(monkeypatch):
    e = make(n_blocks=2).eval()
    for p in e.G.modules():  # non-trivial BN statistics, as after training
        if isinstance(p, torch.nn.BatchNorm2d):
            p.running_mean.uniform_(-0.2, 0.2)
            p.running_var.uniform_(0.5, 2)
    assert e.receptive_radius == math.ceil(4 + 2 * 2 + 1 + (1 + 0.5) + 4 / 4)  # 12 LR pixels
    x = uint8(torch.rand(1, 3, 37, 29) * 2 - 1)
    whole = e.upscale_tiled(x, tile=None)
    tiled = e.upscale_tiled(x, tile=8)
    assert whole.shape == tiled.shape == (1, 3, 148, 116) and tiled.dtype == torch.uint8
    assert (whole.int() - tiled.int()).abs().max() <= 1  # float rounding only
    fw = e.upscale_tiled(x, tile=None, dtype=torch.float32)
    assert (e.upscale_tiled(x, tile=8, dtype=torch.float32) - fw).abs().max() < 1e-6
    # one pixel less of overlap than the receptive field and the seams show (100x the float rounding)
    monkeypatch.setattr(type(e), "receptive_radius", property(lambda self: 11))
    assert (e.upscale_tiled(x, tile=8, dtype=torch.float32) - fw).abs().max() > 1e-6


def test_sample_grid_columns():
    e = make()
    hr = uint8(hr_batch(3, 32))
    g = e.sample_grid(hr)
    assert g["nrow"] == 4 and g["images"].shape == (12, 3, 32, 32) and g["images"].dtype == torch.uint8
    assert torch.equal(g["images"][3], hr[0]) and torch.equal(g["images"][7], hr[1])  # HR last
    lr = e.downsample(hr.float() / 127.5 - 1)
    near = uint8(lr[:1]).repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert (g["images"][0].int() - near[0].int()).abs().max() <= 1  # LR by nearest neighbour first


def test_export_round_trip(tmp_path):
    e = make()
    e.start_epoch(1, 2)
    e.train_step(hr_batch(4, 32))
    save_export(e, tmp_path / "export", trained={"epochs": 1})
    cfg = read_export_config(tmp_path / "export")
    assert cfg["kind"] == "upscale" and cfg["extra"]["scale"] == 4 and cfg["extra"]["input_size"] == 8
    assert cfg["extra"]["receptive_radius"] == e.receptive_radius
    loaded = load_export(tmp_path / "export")
    assert isinstance(loaded, SRGAN) and not hasattr(loaded, "D") and not loaded.optimizers
    x = uint8(torch.rand(2, 3, 9, 11) * 2 - 1)
    assert torch.equal(loaded.upscale_tiled(x), e.upscale_tiled(x))
    with pytest.raises(RuntimeError, match="training=False"):
        loaded.train_step(hr_batch(4, 32))


# ---- metrics -----------------------------------------------------------------------------------------------

def test_psnr_and_ssim_against_hand_computed_values():
    a = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    b = torch.full((1, 3, 16, 16), 10, dtype=torch.uint8)
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(255 ** 2 / 100))  # 28.1308 dB
    assert psnr(a, a).item() == math.inf
    assert rgb_to_y(torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)).item() == pytest.approx(81.481)
    white = torch.full((1, 3, 16, 16), 255, dtype=torch.uint8)
    assert psnr_y(a, white).item() == pytest.approx(20 * math.log10(255 / 219))  # Y 16 vs 235
    # SSIM of two flat pictures: the luminance term (2 m1 m2 + C1) / (m1^2 + m2^2 + C1), C1 = (0.01 * 255)^2
    g1 = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8)
    g2 = torch.full((1, 3, 16, 16), 150, dtype=torch.uint8)
    y1, y2 = 16 + 100 * 219 / 255, 16 + 150 * 219 / 255
    c1 = (0.01 * 255) ** 2
    assert ssim_y(g1, g2).item() == pytest.approx((2 * y1 * y2 + c1) / (y1 ** 2 + y2 ** 2 + c1), rel=1e-9)
    assert ssim_y(g1, g1).item() == pytest.approx(1.0)
    # the shaved border: a difference only there does not count
    c = g1.clone()
    c[..., :4, :] = 0
    assert psnr_y(g1, c, border=4).item() == math.inf and shave(c, 4).shape[-1] == 8


def test_ssim_matches_pytorch_msssim():
    pm = pytest.importorskip("pytorch_msssim")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (2, 3, 24, 24), generator=g, dtype=torch.uint8)
    b = (a.int() + torch.randint(-40, 41, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    ours = ssim_y(a, b)
    ref = pm.ssim(rgb_to_y(a).float(), rgb_to_y(b).float(), data_range=255, size_average=False)
    assert torch.allclose(ours.float(), ref, atol=1e-5)


def test_evaluate_upscaling_reports_engine_and_bicubic():
    e = make()
    hr = uint8(hr_batch(3, 32))
    res = evaluate_upscaling(e, hr, metrics="psnr,ssim", batch_size=2)
    assert res["eval_n"] == 3 and set(res) >= {"psnr", "ssim", "psnr/bicubic", "ssim/bicubic"}
    lr = e.downsample(hr.float() / 127.5 - 1)
    want = psnr_y(uint8(e.bicubic(lr)), hr, border=4).mean().item()
    assert res["psnr/bicubic"] == pytest.approx(want)
    with pytest.warns(RuntimeWarning, match="LPIPS left out"):
        small = evaluate_upscaling(make(16, crop_size=0), uint8(hr_batch(2, 16)), metrics="psnr,lpips")
    assert "lpips" not in small and "psnr" in small
    with pytest.raises(ValueError, match="unknown upscaling metric"):
        evaluate_upscaling(e, hr, metrics="fid")


# ---- the trainer: held-out split, grids, metrics, exact resume ------------------------------------------------

def dataset(n=20, size=32):
    return types.SimpleNamespace(images=uint8(blobs(n, size, 7)), key="sr-key", name="blobs", source="/nowhere",
                                 skipped=[], background="white")


def run_cfg(**kw):
    base = dict(image_size=32, batch_size=4, epochs=4, sample_every=2, eval_every=2, grid_n=8, seed=3,
                eval_metrics="psnr,ssim,lpips", engine=dict(TINY))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, vgg22):
    """A finished 4-epoch run on a folder of 20 pictures (the recorded source `pokelab eval` reads again)."""
    from engines.data.prepare import load_dataset

    root = tmp_path_factory.mktemp("sr-runs")
    (root / "pics").mkdir()
    for i, img in enumerate(dataset().images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / "pics" / f"{i}.png")
    ds = load_dataset(root / "pics", size=32, progress=False, cache_dir=root / "cache")
    t = Trainer("srgan", ds, root / "runs", run_cfg(), progress=False)
    return t, t.fit()


def test_trainer_run_holds_out_measures_and_draws_grids(trained_run):
    t, run = trained_run
    info = read_info(run)
    assert info["status"] == "finished" and info["kind"] == "upscale"
    assert info["engine_info"]["heldout_pictures"] == 2 and info["engine_info"]["train_pictures"] == 18
    assert info["step"] == 4 * (18 // 4)  # training batches come from the 18 training pictures only
    heldout = set(t.engine.heldout_split(20)[1].tolist())
    assert torch.equal(t.heldout, t.datasets[0].images[sorted(heldout)])
    m = read_metrics(run)
    assert [r["phase"] for r in m.train] == [0, 0, 1, 1]
    assert "loss/D" not in m.train[0] and "loss/D" in m.train[2]
    assert [r["epoch"] for r in m.eval] == [2, 4]
    for rec in m.eval:
        for k in ("psnr", "ssim", "lpips", "psnr/bicubic", "ssim/bicubic", "lpips/bicubic"):
            assert math.isfinite(rec[k]), k
        assert rec["eval_n"] == 2
    with Image.open(run / "samples" / "epoch_000004.png") as im:  # 2 held-out rows x 4 columns of 32 px
        assert im.size == (4 * 34 + 2, 2 * 34 + 2)
    grid = np.asarray(Image.open(run / "samples" / "epoch_000004.png"))
    hr0 = t.heldout[0].permute(1, 2, 0).numpy()
    assert np.array_equal(grid[2:34, 3 * 34 + 2:3 * 34 + 34], hr0)  # column 4: the HR original
    assert load_export(run).kind == "upscale"


def test_resume_after_kill_is_bit_identical(tmp_path, vgg22):
    ds = dataset()
    ref = Trainer("srgan", ds, tmp_path / "ref", run_cfg(eval_every=0, checkpoint_every=1), progress=False)
    ref.fit()
    t = Trainer("srgan", ds, tmp_path / "cut", run_cfg(eval_every=0, checkpoint_every=1), progress=False)
    kill_at_step(t.engine, 14)  # epoch 4's second step, in the GAN phase (4 steps an epoch)
    with pytest.raises(Killed):
        t.fit()
    resumed = Trainer.resume(t.run_dir, dataset=ds, progress=False)
    assert (resumed.epoch, resumed.step) == (3, 12) and bool(resumed.engine.gan_started)
    resumed.fit()
    sa, sb = ref.engine.state_dict(), resumed.engine.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    for name in ("G", "D"):
        oa = ref.engine.optimizers[name].state_dict()["state"]
        ob = resumed.engine.optimizers[name].state_dict()["state"]
        assert all(torch.equal(oa[i]["exp_avg"], ob[i]["exp_avg"]) for i in oa)
    a, b = read_metrics(ref.run_dir).train, read_metrics(resumed.run_dir).train
    assert [(r["loss/G"], r.get("loss/D")) for r in a] == [(r["loss/G"], r.get("loss/D")) for r in b]
    assert checkpoint_path(resumed.run_dir).is_file()


def test_nan_guard_rolls_back_and_lowers_the_scheduled_lr(tmp_path, vgg22):
    from helpers import on_nth_step

    t = Trainer("srgan", dataset(), tmp_path, run_cfg(eval_every=0, sample_every=0, checkpoint_every=1, epochs=3),
                progress=False)
    on_nth_step(t.engine, 10, after=lambda out: {**out, "loss/G": torch.tensor(float("nan"))})
    t.fit()
    m = read_metrics(t.run_dir)
    assert [e["event"] for e in m.events if e["event"] == "nan_rollback"] == ["nan_rollback"]
    assert [r["epoch"] for r in m.train] == [1, 2, 3]
    # the schedule keeps the guard's halving: 1e-4 x 0.5, x 0.1 in the second half of the GAN phase (epoch 3)
    assert m.train[-1]["lr"] == pytest.approx(0.5e-5) and m.train[0]["lr"] == pytest.approx(1e-4)


# ---- pokelab upscale -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sr_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr-export")
    e = make(scale=2)
    return save_export(e, root / "sr", trained={"epochs": 2, "run_id": "test-sr",
                                                  "dataset": {"name": "blobs", "size": 32}}), e


def test_pokelab_upscale_a_folder_with_bad_files(tmp_path, sr_export, capsys):
    from engines.cli import main

    export, engine = sr_export
    src = tmp_path / "pics"
    (src / "sub").mkdir(parents=True)
    (src / ".hidden").mkdir()
    rgba = np.zeros((9, 13, 4), np.uint8)
    rgba[2:7, 3:10] = (200, 30, 30, 255)  # a red patch on a transparent background
    Image.fromarray(rgba, "RGBA").save(src / "a.png")
    Image.fromarray(np.full((10, 6), 77, np.uint8), "L").save(src / "sub" / "b.jpg")
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(src / ".hidden" / "c.png")  # hidden: ignored
    (src / "notes.txt").write_text("not a picture, not an image name")                # ignored
    (src / "fake.png").write_bytes(b"this is not a PNG" * 10)
    good = (src / "a.png").read_bytes()
    (src / "cut.png").write_bytes(good[: len(good) // 2])
    os.symlink(src / "sub", src / "linkdir")
    os.symlink(src / "gone.png", src / "dangling.png")
    os.symlink(src / "a.png", src / "alias.png")  # a link to a regular file: followed
    out = tmp_path / "out"
    rc = main(["upscale", str(export), str(src), "--out", str(out), "--no-progress", "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a.png", "alias.png", "sub/b.png"]
    with Image.open(out / "a.png") as im:
        assert im.size == (26, 18) and im.mode == "RGB"
    with Image.open(out / "sub" / "b.png") as im:
        assert im.size == (12, 20)
    want = engine.upscale_tiled(_flat(src / "a.png"))  # on white, as the data layer reads it
    assert np.array_equal(np.asarray(Image.open(out / "a.png")), want[0].permute(1, 2, 0).numpy())
    assert "upscaled 3 picture(s) x2 with srgan" in text and "skipped 4 file(s):" in text
    assert "fake.png: not an image" in text and "cut.png: truncated or corrupt" in text
    assert "linkdir: link to a folder" in text and "dangling.png: broken link" in text
    assert "ignored 1 non-image file(s)" in text
    # again: nothing overwritten without --overwrite
    before = (out / "a.png").stat().st_mtime_ns
    (out / "a.png").write_bytes(b"mine")
    rc = main(["upscale", str(export), str(src / "a.png"), "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0 and (out / "a.png").read_bytes() == b"mine"
    assert "exists (kept; --overwrite" in capsys.readouterr().out
    rc = main(["upscale", str(export), str(src / "a.png"), "--out", str(out), "--overwrite", "--no-progress",
               "--device", "cpu", "--tile", "8"])
    assert rc == 0 and (out / "a.png").read_bytes()[:4] == b"\x89PNG" and (out / "a.png").stat().st_mtime_ns != before
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*"))  # atomic writes leave no temp files


def _flat(path):
    """A picture as `pokelab upscale` reads it: transparency flattened on white (engines.data.prepare.read_picture)."""
    from engines.data.prepare import read_picture

    return torch.from_numpy(read_picture(path)).permute(2, 0, 1)[None]


def test_pokelab_upscale_refuses_other_exports_and_empty_input(tmp_path, sr_export, capsys):
    from engines.cli import main
    from engines.upscale.base import DEFAULT_TILE
    from engines.upscale.cli import _DEFAULT_TILE

    assert DEFAULT_TILE == _DEFAULT_TILE
    export, _ = sr_export
    gen = save_export(get_engine("dcgan")({"g_width": 8, "d_width": 8, "z_dim": 8}, 32, training=False),
                      tmp_path / "dc")
    pic = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(pic)
    assert main(["upscale", str(gen), str(pic), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "needs an upscaling export" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["upscale", str(export), str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no pictures" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope" * 10)
    assert main(["upscale", str(export), str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "bad.png: not an image" in captured.out and "none of the 1 file(s)" in captured.err
    assert main(["sample", str(export), "--out", str(tmp_path / "s.png")]) == 2
    assert "upscaling engine" in capsys.readouterr().err
    assert main(["translate", str(export), str(tmp_path / "empty"), "--out", str(tmp_path / "t")]) == 2
    assert "upscales pictures; `pokelab translate` needs a translation export" in capsys.readouterr().err


# ---- the app: the "Upscale ×4" panel, and the studio ----------------------------------------------------------

@pytest.fixture(scope="module")
def app_with_sr(tmp_path_factory, sr_export):
    from test_app_support import make_export

    from app.main import create_app

    root = tmp_path_factory.mktemp("sr-app")
    ck = root / "ck"
    torch.manual_seed(0)
    save_export(make(), ck / "sr4", trained={"epochs": 3, "run_id": "test-sr4", "dataset": {"name": "blobs"}})
    make_export(ck / "dc", "dcgan", 32, 8, 0)
    app = create_app(["--checkpoints", str(ck), "--no-shipped", "--review-db", str(root / "r.sqlite"),
                      "--sd-model", str(root / "no-sd")])
    yield app
    app.close()


def test_app_upscale_panel_on_generate_translate_and_review(app_with_sr):
    from app import upscale as up
    from app.inputs import AppInputError

    app = app_with_sr
    assert [e.key for e in up.entries(app.catalog)] == ["sr4"]
    assert [e.key for e in app.catalog.generators()] == ["dc"] and not app.catalog.translators()
    names = {d.get("api_name") for d in app.demo.config["dependencies"]}
    assert {"upscale_generate", "upscale_translate", "upscale_review"} <= names
    gallery, _grid, seeds, *_ = app.generate("dc", 5, 3, 0.7, False)
    pairs, info = app.upscaler.generated("sr4", gallery, seeds, seeds[1])
    assert [c for _, c in pairs] == ["Seed 6 · nearest neighbour ×4", "Seed 6 · srgan ×4"]
    sample = np.asarray(Image.open(gallery[1][0]))
    near, sr = (np.asarray(Image.open(f)) for f, _ in pairs)
    assert near.shape == sr.shape == (128, 128, 3)
    assert np.array_equal(near, sample.repeat(4, 0).repeat(4, 1))
    eng = app.catalog.engine("sr4")
    want = eng.upscale_tiled(torch.from_numpy(sample.copy()).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.array_equal(sr, want) and "32×32 → 128×128" in info
    out = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)  # a Translate output
    pairs, _ = app.upscaler.translated("sr4", out)
    assert np.asarray(Image.open(pairs[1][0])).shape == (80, 96, 3)
    pairs, _ = app.upscaler.review("sr4", out, out[:10])
    assert [c.split(" · ")[0] for _, c in pairs] == ["Left", "Left", "Right", "Right"]
    with pytest.raises(AppInputError, match="Generate a grid first"):
        app.upscaler.generated("sr4", None, [], None)
    with pytest.raises(AppInputError, match="no left picture"):
        app.upscaler.review("sr4", None, out)
    with pytest.raises(AppInputError, match="pick an upscaling export"):
        app.upscaler.translated("dc", out)
    with pytest.raises(AppInputError, match="at most"):
        up.upscale(eng, np.zeros((1100, 1000, 3), np.uint8))


@pytest.mark.slow
def test_app_upscale_endpoint_through_gradio_client(sr_export, tmp_path):
    pytest.importorskip("gradio_client")
    from gradio_client import handle_file
    from test_app_support import RunningApp

    save_export(make(), tmp_path / "ck" / "sr4", trained={"epochs": 3})
    app = RunningApp(["--checkpoints", str(tmp_path / "ck"), "--no-shipped", "--review-db",
                      str(tmp_path / "r.sqlite"), "--sd-model", str(tmp_path / "no-sd")])
    try:
        pic = tmp_path / "mine.png"
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(pic)
        pairs, info = app.client.predict("sr4", handle_file(str(pic)), api_name="/upscale_translate")
        sizes = [Image.open(p["image"] if isinstance(p, dict) else p[0]).size for p in pairs]
        assert sizes == [(64, 48), (64, 48)] and "srgan" in info
    finally:
        app.close()


def test_pokelab_eval_measures_the_held_out_pictures_as_the_trainer(trained_run, capsys):
    import json

    from engines.cli import main

    _t, run = trained_run
    assert main(["eval", str(run), "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    last = read_metrics(run).eval[-1]
    assert out["kind"] == "upscaler" and out["split"].startswith("held-out pictures (2")
    for k in ("psnr", "ssim", "lpips", "psnr/bicubic", "ssim/bicubic", "lpips/bicubic"):
        assert out["metrics"][k] == pytest.approx(last[k], rel=1e-6), k
    assert main(["eval", str(run), "--metrics", "fid"]) == 2  # not an upscaling metric
    assert "unknown upscaling metric 'fid'" in capsys.readouterr().err


def test_studio_reads_an_upscale_run(trained_run):
    from studio import data as sd

    _t, run = trained_run
    r = sd.load_run(run)
    assert r.kind == "upscale" and not r.translate and not [w for w in r.warnings if "kind" in w]
    row = sd.summarize(r)
    assert row["kind"] == "upscale" and row["engine"] == "srgan"
    assert sd.runs_table([r]).shape[0] == 1 and sd.fid_panels([r]) == []


@pytest.mark.slow
def test_studio_page_renders_an_upscale_run(trained_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _t, run = trained_run
    monkeypatch.setenv("POKELAB_STUDIO_RUNS", str(run.parent))
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    at = AppTest.from_file(str(__import__("pathlib").Path(__file__).resolve().parents[1] / "studio" /
                               "streamlit_app.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
