"""U-GAT-IT engine: network shapes and depth rule, AdaLIN/LIN maths and rho clipping, the light and full
variants, the training scalars, CAM attention maps, the sample grid, learning on a tiny overfit set,
exports and an end-to-end trainer run. Tiny widths (8) and 32 px keep each test to seconds on CPU."""
import io
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engines.runs.export import load_export, save_export
from engines.registry import get_engine
from engines.translate.ugatit import (LIN, UGATIT, AdaLIN, UGATITDiscriminator, UGATITGenerator,
                                      discriminator_depths)
import helpers
from helpers import Killed, kill_at_step

TINY = {"ngf": 8, "ndf": 8, "n_res": 1}
CPU = torch.device("cpu")
KEYS = ("loss/G", "loss/D", "loss/D_A", "loss/D_B", "loss/G_AB", "loss/G_BA", "loss/cycle_A", "loss/cycle_B",
        "loss/idt_A", "loss/idt_B", "loss/cam_G", "loss/cam_D", "acc/D_real", "acc/D_fake")


def make(size=32, training=True, **overrides):
    return UGATIT({**TINY, **overrides}, size, training=training).setup(CPU)


def blobs(n=4, size=32, seed=1, square=False):
    return helpers.blobs(n, size, seed, square=square, r_spread=0.4)


def stride2_convs(d: UGATITDiscriminator) -> int:
    return sum(1 for m in d.body.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2))


def test_registered_with_paper_defaults():
    assert get_engine("ugatit") is UGATIT
    c = UGATIT.default_config()
    assert (c["ngf"], c["ndf"], c["n_res"], c["light"]) == (64, 64, 4, True)
    assert (c["adv_weight"], c["cycle_weight"], c["identity_weight"], c["cam_weight"]) == (1, 10, 10, 1000)
    assert c["weight_decay"] == 1e-4 and c["lr"] == 2e-4 and "decay_start" in c and "flip" in c
    assert "1e-4" in UGATIT.protocol_notes and UGATIT.has_attention


def test_network_shapes():
    g = UGATITGenerator(ngf=8, n_res=2, image_size=32)
    img, cam_logit, heat = g(blobs(2))
    assert img.shape == (2, 3, 32, 32) and cam_logit.shape == (2, 2) and heat.shape == (2, 8, 8)
    assert img.abs().max() <= 1  # tanh
    assert len(g.bottleneck) == 2 and len(g.rhos()) == 2 * 2 + 2  # two AdaLINs per block, one LIN per upsampling
    e = make()
    # 32 px: global D with 3 stride-2 convs (a 4x4 map, 2x2 patches), local D with 2 (8x8 map, 6x6 patches)
    for d, n_down, patches, heat_side in ((e.D_GA, 3, 2, 3), (e.D_LB, 2, 6, 7)):
        out, cam_logit, heat = d(blobs(2))
        assert stride2_convs(d) == n_down
        assert out.shape == (2, 1, patches, patches) and cam_logit.shape == (2, 2) and heat.shape == (2, heat_side,
                                                                                                      heat_side)
        assert all(hasattr(m, "weight_orig") for m in d.modules() if isinstance(m, torch.nn.Conv2d)
                   and m is not d.cam.fuse)  # spectral norm on every conv but the 1x1 fusion


def test_discriminator_depth_rule():
    # the paper's global/local depths from 128 px up, shallower on small pictures, local always shallower
    assert [discriminator_depths(s) for s in (512, 256, 128, 96, 64, 32, 16)] == \
        [(5, 3), (5, 3), (5, 3), (4, 3), (4, 3), (3, 2), (2, 1)]
    for s in (16, 32, 64, 96, 128, 256):
        g, l = discriminator_depths(s)
        for n in (g, l):
            out, _, _ = UGATITDiscriminator(4, n)(torch.zeros(1, 3, s, s))
            assert out.shape[-1] >= 2
    with pytest.raises(ValueError, match="at least 16 px"):
        discriminator_depths(8)


def test_layer_instance_norms_mix_in_and_ln():
    x = torch.randn(3, 4, 5, 6) * 3 + 1
    gamma, beta = torch.rand(3, 4) + 0.5, torch.randn(3, 4)
    n = AdaLIN(4)
    assert torch.all(n.rho == 1)  # paper: residual blocks start as instance norm
    inorm, lnorm = F.instance_norm(x), F.layer_norm(x, x.shape[1:])
    affine = lambda t: t * gamma[:, :, None, None] + beta[:, :, None, None]  # noqa: E731
    assert torch.allclose(n(x, gamma, beta), affine(inorm), atol=1e-5)
    with torch.no_grad():
        n.rho.fill_(0.0)
    assert torch.allclose(n(x, gamma, beta), affine(lnorm), atol=1e-5)
    with torch.no_grad():
        n.rho.fill_(0.25)
    assert torch.allclose(n(x, gamma, beta), affine(0.25 * inorm + 0.75 * lnorm), atol=1e-5)
    lin = LIN(4)
    assert torch.all(lin.rho == 0) and torch.all(lin.gamma == 1) and torch.all(lin.beta == 0)
    assert torch.allclose(lin(x), lnorm, atol=1e-5)  # up-sampling blocks start as layer norm


def test_light_and_full_variants_differ_in_the_mlp_input_and_both_train():
    light, full = make(light=True), make(light=False)
    ch = 4 * TINY["ngf"]
    assert light.G_AB.mlp[0].in_features == ch
    assert full.G_AB.mlp[0].in_features == 8 * 8 * ch  # the whole 8x8 feature map of a 32 px picture
    for e in (light, full):
        out = e.train_step((blobs(2), blobs(2, seed=2)))
        assert all(math.isfinite(float(out[k])) for k in KEYS)
    # the light generator takes any size (multiple of 4); the full one only its training size
    assert light.translate(blobs(1, size=48)).shape == (1, 3, 48, 48)
    with pytest.raises(ValueError, match="only takes 32x32"):
        full.translate(blobs(1, size=48))
    with pytest.raises(ValueError, match="multiples of 4"):
        light.translate(torch.zeros(1, 3, 30, 30))


def test_train_step_returns_finite_scalars_and_both_nets_learn():
    torch.manual_seed(0)
    e = make()
    before = {k: v.clone() for k, v in e.state_dict().items()}
    out = e.train_step((blobs(2), blobs(2, seed=2)))
    assert set(KEYS) <= set(out)
    for k in KEYS:
        assert torch.is_tensor(out[k]) and out[k].dim() == 0 and math.isfinite(float(out[k])), k
    assert 0 <= float(out["acc/D_real"]) <= 1 and 0 <= float(out["acc/D_fake"]) <= 1
    assert float(out["loss/D"]) == pytest.approx(0.5 * (float(out["loss/D_A"]) + float(out["loss/D_B"])))
    # loss/G is the weighted sum of its parts (adv 1, cycle 10, identity 10, CAM 1000)
    parts = (out["loss/G_AB"] + out["loss/G_BA"] + 10 * (out["loss/cycle_A"] + out["loss/cycle_B"])
             + 10 * (out["loss/idt_A"] + out["loss/idt_B"]) + 1000 * out["loss/cam_G"])
    assert float(out["loss/G"]) == pytest.approx(float(parts), rel=1e-5)
    after = e.state_dict()
    for name in ("G_AB.cam.gap_fc.weight", "G_BA.gamma.weight", "D_GA.head.1.weight_orig",
                 "D_LB.cam.gmp_fc.weight_orig"):
        assert not torch.equal(before[name], after[name]), name
    for name in ("G", "D"):
        assert all(g["weight_decay"] == 1e-4 for g in e.optimizers[name].param_groups)


def test_mixed_precision_step_keeps_dtypes_and_stays_finite():
    """bf16 autocast (on CPU here; the trainer picks it on CUDA): norms compute in fp32 and hand back bf16."""
    torch.manual_seed(0)
    e = make()
    e.amp_dtype = torch.bfloat16
    out = e.train_step((blobs(2), blobs(2, seed=2)))
    assert all(math.isfinite(float(out[k])) for k in KEYS)
    x = torch.randn(2, 4, 8, 8, dtype=torch.bfloat16)
    assert LIN(4)(x).dtype == torch.bfloat16 and AdaLIN(4)(x, torch.ones(2, 4), torch.zeros(2, 4)).dtype == x.dtype
    assert e.translate(blobs(1)).dtype == torch.float32


def test_rho_is_clipped_to_the_unit_interval_after_each_step():
    e = make(n_res=2)
    rhos = e.G_AB.rhos() + e.G_BA.rhos()
    with torch.no_grad():
        for i, r in enumerate(rhos):
            r.fill_(1.5 if i % 2 else -0.5)
    e.train_step((blobs(2), blobs(2, seed=2)))
    for i, r in enumerate(rhos):
        assert torch.all(r == (1.0 if i % 2 else 0.0)), i


def test_attention_maps_are_raw_cam_heatmaps_at_input_size():
    torch.manual_seed(0)
    e = make()
    a, b = blobs(2), blobs(2, seed=2, square=True)
    for _ in range(3):
        e.train_step((a, b))
    x, y = blobs(3, seed=5), blobs(3, seed=6, square=True)
    maps = e.attention(x)
    assert maps.dtype == np.float32
    assert maps.shape == (3, 32, 32)
    assert maps.std() > 0 and all(m.std() > 0 for m in maps)  # not constant, within each map too
    assert not (abs(maps - e.attention(y)) < 1e-6).all()
    # the map is G_AB's heat map (channel sum of the attended features), upsampled
    with torch.no_grad():
        heat = e.eval().G_AB(x)[2]
    e.train()
    assert torch.allclose(torch.from_numpy(maps), F.interpolate(heat[:, None], size=(32, 32), mode="bilinear",
                                                                align_corners=False)[:, 0], atol=1e-5)


def test_sample_grid_has_input_output_reconstruction_and_attention_columns():
    e = make()
    x = ((blobs(3) + 1) * 127.5).round().to(torch.uint8)
    grid = e.sample_grid(x)
    assert grid["nrow"] == 4 and grid["images"].shape == (3 * 4, 3, 32, 32)
    assert grid["images"].dtype == torch.uint8
    assert torch.equal(grid["images"][0], x[0])  # row 0: the input first
    assert torch.equal(grid["images"][1], ((e.translate(x[:1]) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)[0])


def test_cycle_and_cam_losses_fall_on_a_tiny_overfit_set():
    torch.manual_seed(0)
    e = make(flip=False)
    a, b = blobs(4, seed=1), blobs(4, seed=2, square=True)
    cyc, cam = [], []
    for _ in range(40):
        out = e.train_step((a, b))
        cyc.append(float(out["loss/cycle_A"] + out["loss/cycle_B"]))
        cam.append(float(out["loss/cam_G"]))
    first, last = sum(cyc[:5]) / 5, sum(cyc[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    # the generators' CAM classifiers learn to tell their source domain from their target domain
    assert sum(cam[-5:]) / 5 < 0.75 * sum(cam[:5]) / 5, cam


def test_export_round_trip_gives_identical_translations(tmp_path):
    torch.manual_seed(0)
    e = make()
    e.train_step((blobs(2), blobs(2, seed=2)))
    save_export(e, tmp_path / "export")
    cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert cfg["engine"] == "ugatit" and cfg["extra"] == {"directions": ["AB", "BA"], "attention": True}
    b = load_export(tmp_path / "export")
    assert isinstance(b, UGATIT) and not hasattr(b, "D_GA") and b.optimizers == {}
    assert set(b.export_modules()) == {"G_AB", "G_BA"}
    x = blobs(3, seed=4)
    for d in ("AB", "BA"):
        assert torch.equal(e.translate(x, d), b.translate(x, d))
    assert (e.attention(x) == b.attention(x)).all()


def test_bad_settings_get_clear_errors():
    with pytest.raises(ValueError, match="multiple of 4"):
        UGATIT(TINY, 30)
    with pytest.raises(ValueError, match="at least 16 px"):
        UGATIT(TINY, 8)
    with pytest.raises(ValueError, match="n_res"):
        UGATIT({**TINY, "n_res": 0}, 32)
    with pytest.raises(ValueError, match="has no setting 'cam_wieght'"):
        UGATIT({"cam_wieght": 1}, 32)
    with pytest.raises(ValueError, match="translation engine"):
        make(training=False).sample(n=1)


def test_exact_resume_state():
    torch.manual_seed(0)
    a = make()
    x, y = blobs(2), blobs(2, seed=2)
    a.train_step((x, y))
    buf = io.BytesIO()
    torch.save(a.state_dict_full(), buf)
    buf.seek(0)
    torch.manual_seed(9)
    b = make()
    b.load_state_dict_full(torch.load(buf, weights_only=True))
    rng = torch.get_rng_state()
    out_a = a.train_step((x, y))
    torch.set_rng_state(rng)
    out_b = b.train_step((x, y))
    assert all(torch.equal(out_a[k], out_b[k]) for k in out_a)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # includes the spectral norms' power-iteration vectors


def test_trainer_end_to_end_writes_grids_and_resumes(tmp_path, tiny_dataset):
    import types

    from PIL import Image

    from engines.config import TrainConfig
    from engines.runs.folder import checkpoint_path, list_samples, read_info, read_metrics
    from engines.trainer import Trainer

    g = torch.Generator().manual_seed(1)
    other = types.SimpleNamespace(images=torch.randint(0, 256, (24, 3, 32, 32), generator=g, dtype=torch.uint8),
                                  key="tiny-b", name="tiny-b", source="/nowhere", skipped=[], background="white")

    def cfg(**kw):
        return TrainConfig(image_size=32, batch_size=8, epochs=2, sample_every=2, eval_every=0, seed=3,
                           engine=dict(TINY), **kw)

    ref = Trainer("ugatit", (tiny_dataset, other), tmp_path / "ref", cfg(), progress=False)
    run = ref.fit()
    assert read_info(run)["status"] == "finished" and read_info(run)["step"] == 2 * 3  # 24 B pictures / 8
    lines = read_metrics(run).train
    assert [r["epoch"] for r in lines] == [1, 2]
    for k in KEYS:
        assert math.isfinite(lines[-1][k]), k
    assert [e for e, _ in list_samples(run)] == [2]
    # 8 inputs, one row each: input | output | reconstruction | attention, 32 px tiles with 2 px padding
    assert Image.open(list_samples(run)[0][1]).size == (4 * 34 + 2, 8 * 34 + 2)
    assert checkpoint_path(run).is_file()
    x = blobs(2)
    assert torch.equal(load_export(run).translate(x), ref.engine.translate(x))

    t = Trainer("ugatit", (tiny_dataset, other), tmp_path / "cut", cfg(checkpoint_every=1), progress=False)
    kill_at_step(t.engine, 5)  # mid epoch 2 (3 steps per epoch)
    with pytest.raises(Killed):
        t.fit()
    resumed = Trainer.resume(t.run_dir, dataset=(tiny_dataset, other), progress=False)
    assert (resumed.epoch, resumed.step) == (1, 3)
    resumed.fit()
    sa, sb = ref.engine.state_dict(), resumed.engine.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
