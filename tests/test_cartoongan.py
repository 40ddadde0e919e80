import math
import types
import urllib.error

import pytest
import torch
from PIL import Image

from engines.runs.export import load_export, save_export
from engines.runs.folder import list_samples, read_info, read_metrics
from engines.translate import cartoongan as cg
from engines.translate.cartoongan import CartoonGAN, canny_edges, edge_smooth, get_vgg_content

TINY = {"ngf": 8, "ndf": 8, "n_blocks": 2, "init_epochs": 1, "flip": False, "resize_crop": False}


@pytest.fixture(scope="module")
def vgg():
    """The real VGG16 weights, loaded once for the whole file (the engine's per-process cache)."""
    try:
        return get_vgg_content("cpu")
    except cg.VGGUnavailable as e:
        pytest.skip(str(e))


def batch(seed=0, n=2, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def engine(**kw):
    torch.manual_seed(0)
    return CartoonGAN({**TINY, **kw}, 32)


def gray(levels, size=32):
    """A [-1, 1] RGB picture from a 2-D array of gray levels 0..255 (all channels equal)."""
    t = torch.as_tensor(levels, dtype=torch.float32) / 127.5 - 1
    return t.expand(3, size, size).clone()


# ---- networks ---------------------------------------------------------------------------------------

def test_network_shapes_and_layout():
    e = CartoonGAN({"ngf": 8, "ndf": 8}, 32)
    x = batch()
    assert e.G_AB(x).shape == (2, 3, 32, 32)
    assert e.G_AB(x).abs().max() <= 1  # tanh
    assert e.D(x).shape == (2, 1, 8, 8)  # two stride-2 stages: one score per 4x4 step
    assert sum(isinstance(m, cg.ResnetBlock) for m in e.G_AB.modules()) == 8  # the paper's 8 blocks
    strided = [m for m in e.G_AB.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    ups = [m for m in e.G_AB.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(strided) == 2 and len(ups) == 2
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in e.D.modules())
    assert CartoonGAN.directions == ("AB",)
    with pytest.raises(ValueError, match="multiple of 4"):
        CartoonGAN(TINY, 30)


def test_config_validation():
    with pytest.raises(ValueError, match="gan_loss"):
        CartoonGAN({**TINY, "gan_loss": "hinge"}, 32)
    with pytest.raises(ValueError, match="odd"):
        CartoonGAN({**TINY, "edge_dilation": 4}, 32)
    with pytest.raises(ValueError, match="low <= high"):
        CartoonGAN({**TINY, "edge_low": 250.0}, 32)
    with pytest.raises(ValueError, match="init_epochs"):
        CartoonGAN({**TINY, "init_epochs": -1}, 32)


# ---- edge smoothing ---------------------------------------------------------------------------------

def step_picture():
    """Flat dark left half (gray 40), flat bright right half (gray 200): one vertical edge at x = 15 | 16."""
    lv = torch.full((32, 32), 40.0)
    lv[:, 16:] = 200.0
    return gray(lv)


def test_edge_smoothing_changes_only_the_dilated_edge_band():
    x = torch.stack([step_picture(), gray(torch.full((32, 32), 120.0))])  # an edge and a flat picture
    out, band = edge_smooth(x, dilation=5)
    assert out.shape == x.shape and out.dtype == x.dtype and band.shape == (2, 1, 32, 32) and band.dtype == torch.bool
    edges = canny_edges(x)
    # the edge is found where it is, one pixel thin: one edge pixel per row, in column 15 or 16
    cols = edges[0, 0].nonzero()[:, 1]
    assert edges[0, 0].sum(1).eq(1).all() and set(cols.tolist()) <= {15, 16}
    # the band is the edge dilated by 5x5 (two pixels either side), and contains the edge
    assert (band[0] >= edges[0]).all()
    assert band[0, 0].any(0).nonzero().flatten().tolist() == list(range(cols.min() - 2, cols.max() + 3))
    # outside the band: bit-identical; inside: the pixels next to the step are blurred
    outside = ~band.expand_as(x)
    assert torch.equal(out[outside], x[outside])
    changed = (out != x).any(1, keepdim=True)
    assert changed[0].any() and (changed <= band).all()
    assert changed[0, 0, :, 15].all() and changed[0, 0, :, 16].all()
    assert (out[0, :, :, 15] > x[0, :, :, 15]).all() and (out[0, :, :, 16] < x[0, :, :, 16]).all()
    # the flat picture in the same batch: no edge, empty band, returned unchanged
    assert not band[1].any() and torch.equal(out[1], x[1])


def test_edge_smoothing_keeps_dtype_and_layout_and_rejects_bad_input():
    x = step_picture()[None].to(memory_format=torch.channels_last)
    out, band = edge_smooth(x)
    ref, ref_band = edge_smooth(x.contiguous())
    assert torch.equal(out, ref) and torch.equal(band, ref_band)
    half, hb = edge_smooth(x.double())
    assert half.dtype == torch.float64 and torch.equal(hb, band)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        edge_smooth(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        edge_smooth(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="odd"):
        edge_smooth(x, blur_kernel=4)


def test_canny_hysteresis_keeps_weak_edges_only_when_connected():
    # a step of 100 gray levels is strong (|gx| + |gy| = 400 > 200), one of 40 is weak (160, in (100, 200])
    weak_only = torch.full((32, 32), 60.0)
    weak_only[:, 16:] = 100.0
    joined = torch.full((32, 32), 60.0)
    joined[:16, 16:] = 160.0  # strong step on the top half of the column...
    joined[16:, 16:] = 100.0  # ...continued by a weak one below
    x = torch.stack([gray(weak_only), gray(joined)])
    e = canny_edges(x, 100, 200, hysteresis_iters=32)
    assert not e[0].any()                           # weak and alone: not an edge
    assert e[1, 0, 2:30, 15:17].any(1).all()         # weak but connected: followed all the way down
    e0 = canny_edges(x, 100, 200, hysteresis_iters=0)
    assert not e0[1, 0, 20:30, 15:17].any()          # without hysteresis only the strong part survives


# ---- content loss -----------------------------------------------------------------------------------

def test_edge_kernels_are_built_once_per_device(monkeypatch):
    """torch.tensor(..., device=cuda) per call is a host-to-device copy that would stall every D step."""
    x = batch(n=2)
    first, _ = edge_smooth(x)
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(1) or real(*a, **k))
    again, _ = edge_smooth(x)
    assert not made and torch.equal(first, again)


def test_content_network_is_the_pretrained_vgg16(vgg):
    assert get_vgg_content("cpu") is vgg  # cached per process and device
    state = torch.load(cg.Path(torch.hub.get_dir()) / "checkpoints" / cg.VGG16_FILE, map_location="cpu",
                       weights_only=True, mmap=True)
    assert torch.equal(vgg.features[21].weight, state["features.21.weight"])  # conv4_3
    assert not any(p.requires_grad for p in vgg.parameters()) and not vgg.training
    a, b = batch(1), batch(2)
    fa, fb = vgg(a), vgg(b)
    assert fa.shape == (2, 512, 4, 4) and (fa >= 0).all()  # relu4_3 at 1/8 resolution
    assert not torch.allclose(fa, fb)


def test_content_loss_is_zero_for_identical_pictures_and_trains_only_the_cartoon(vgg):
    e = engine()
    a, b = batch(1), batch(2)
    assert e.content_loss(a, a).item() == 0.0
    b.requires_grad_(True)
    loss = e.content_loss(a, b)
    assert loss.item() > 0 and loss.dtype == torch.float32
    loss.backward()
    assert b.grad is not None and b.grad.abs().sum() > 0
    assert not any(k.startswith("vgg") or "features" in k for k in e.state_dict())  # not in checkpoints


def test_missing_vgg_weights_give_a_clear_error(monkeypatch, tmp_path):
    # torchvision binds torch.hub's loader when it is first imported: import it before patching, or the
    # patched loader would stay inside torchvision (and break LPIPS) for the rest of the session
    import torchvision.models  # noqa: F401

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(cg.VGGUnavailable, match="TORCH_HOME.*vgg16-397923af.pth"):
        cg._vgg16_state_dict()


# ---- training ---------------------------------------------------------------------------------------

def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


KEYS = {"loss/G", "loss/D", "loss/G_adv", "loss/content", "loss/D_edge", "acc/D_real", "acc/D_fake", "init_phase"}


def test_init_phase_trains_g_on_content_only_then_adversarial_terms_appear(vgg):
    e = engine()
    a, b = batch(1), batch(2)
    e.start_epoch(1, 3)
    d0, g0 = params(e.D), params(e.G_AB)
    out = e.train_step((a, b))
    assert KEYS <= set(out) and all(v.dim() == 0 and math.isfinite(v.item()) for v in out.values())
    assert out["init_phase"].item() == 1.0
    assert out["loss/G_adv"].item() == 0 and out["loss/D"].item() == 0 and out["loss/D_edge"].item() == 0
    assert out["loss/content"].item() > 0 and out["loss/G"].item() == pytest.approx(10 * out["loss/content"].item())
    assert not changed(d0, e.D) and changed(g0, e.G_AB)
    assert not e.optimizers["D"].state  # D's optimiser never stepped

    e.start_epoch(2, 3)
    d1 = params(e.D)
    out = e.train_step((a, b))
    assert (KEYS | {"acc/D_edge"}) <= set(out) and all(math.isfinite(v.item()) for v in out.values())
    assert out["init_phase"].item() == 0.0
    assert out["loss/G_adv"].item() > 0 and out["loss/D_edge"].item() > 0 and out["loss/D"].item() > 0
    assert out["loss/G"].item() == pytest.approx(out["loss/G_adv"].item() + 10 * out["loss/content"].item(), rel=1e-5)
    assert changed(d1, e.D)
    assert all(0 <= out[k].item() <= 1 for k in ("acc/D_real", "acc/D_fake", "acc/D_edge"))


def test_init_phase_lowers_the_content_loss(vgg):
    e = engine(lr=1e-3)
    a, b = batch(1), batch(2)
    e.start_epoch(1, 3)
    losses = [e.train_step((a, b))["loss/content"].item() for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0]


def test_discriminator_sees_real_edge_smoothed_and_generated_cartoons(vgg):
    e = engine(gan_loss="lsgan", init_epochs=0)
    a, b = batch(1), step_picture()[None].repeat(2, 1, 1, 1)
    seen, outs = [], []

    def hook(module, inp, out):
        seen.append(inp[0].detach().clone())
        outs.append(out.detach())

    e.D.register_forward_hook(hook)
    e.start_epoch(1, 2)
    out = e.train_step((a, b))
    d_in = seen[0]  # the D step: [real | edge-smoothed | generated]
    e_scores = outs[0][2:4].float()
    assert d_in.shape[0] == 6
    assert torch.equal(d_in[:2], b) and torch.equal(d_in[2:4], edge_smooth(b)[0])
    assert not torch.equal(d_in[2:4], b)
    assert seen[1].shape[0] == 2  # then G's pass: its fakes only
    # LSGAN: D's loss on the edge-smoothed group is the mean squared score of that group (target 0)
    assert out["loss/D_edge"].item() == pytest.approx(e_scores.pow(2).mean().item(), rel=1e-5)


def test_start_epoch_keeps_the_lr_schedule_and_refuses_runs_shorter_than_the_init_phase():
    e = engine()
    e.start_epoch(3, 4)  # decay starts after epoch 2: factor 1 - 1/3
    assert e.optimizers["G"].param_groups[0]["lr"] == pytest.approx(2e-4 * 2 / 3)
    assert not e.init_phase
    with pytest.raises(ValueError, match="init_epochs"):
        engine(init_epochs=10).start_epoch(1, 10)


def test_export_round_trip_and_directions(tmp_path):
    e = engine()
    x = batch(3)
    save_export(e, tmp_path / "exp")
    loaded = load_export(tmp_path / "exp")
    assert not hasattr(loaded, "D") and set(loaded.export_modules()) == {"G_AB"}
    assert torch.equal(loaded.translate(x), e.translate(x))
    assert loaded.export_info["extra"] == {"directions": ["AB"], "attention": False}
    with pytest.raises(ValueError, match="translates AB, not 'BA'"):
        e.translate(x, "BA")
    grid = e.sample_grid(x)
    assert grid["nrow"] == 2 and grid["images"].shape == (4, 3, 32, 32)


def test_trainer_end_to_end(tmp_path, vgg):
    from engines.config import TrainConfig
    from engines.trainer import Trainer

    def ds(seed, name):
        g = torch.Generator().manual_seed(seed)
        imgs = torch.randint(0, 256, (8, 3, 32, 32), generator=g, dtype=torch.uint8)
        return types.SimpleNamespace(images=imgs, key=f"{name}-key", name=name, source="/nowhere", skipped=[])

    cfg = TrainConfig(image_size=32, batch_size=4, epochs=2, sample_every=2, eval_every=0,
                      engine={**TINY, "flip": True})
    t = Trainer("cartoongan", (ds(0, "photos"), ds(1, "pokemon")), tmp_path, cfg, progress=False)
    run = t.fit()
    info = read_info(run)
    assert info["status"] == "finished" and "VGG16" in info["protocol_notes"]
    m = read_metrics(run).train
    assert [r["epoch"] for r in m] == [1, 2]
    assert m[0]["init_phase"] == 1.0 and m[0]["loss/G_adv"] == 0.0 and m[0]["loss/D"] == 0.0
    assert m[1]["init_phase"] == 0.0 and m[1]["loss/G_adv"] > 0 and m[1]["loss/D_edge"] > 0
    samples = list_samples(run)
    assert [ep for ep, _ in samples] == [2]
    with Image.open(samples[0][1]) as im:  # 8 rows of input | output, 32 px tiles with 2 px padding
        assert im.size == (2 * 34 + 2, 8 * 34 + 2)
    exported = load_export(run)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(exported.translate(x), t.engine.translate(x))
