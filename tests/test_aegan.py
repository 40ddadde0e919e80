"""AEGAN engine: shapes, losses, reconstruction learning, the variational option, recon grids,
exact resume and exports. Tiny widths and 32/64 px keep every test to a few seconds on CPU."""
import io
import json

import pytest
import torch

from engines.augment import build_augment
from engines.runs.export import load_export, save_export
from engines.generate.aegan import AEGAN, _kl_to_standard_normal
from engines.registry import get_engine
from helpers import Killed, blobs, kill_at_step

TINY = {"g_width": 8, "e_width": 8, "d_width": 8, "max_channels": 32, "dz_width": 16, "dz_layers": 2}
REQUIRED = ("loss/D", "loss/G", "acc/D_real", "acc/D_fake")
CPU = torch.device("cpu")


def make(size=32, training=True, augment=None, **overrides):
    return AEGAN({**TINY, **overrides}, size, training=training).setup(CPU, augment=augment)


def test_registered_under_its_name():
    assert get_engine("aegan") is AEGAN


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("variational", [False, True])
def test_network_shapes(size, variational):
    torch.manual_seed(0)
    e = make(size, variational=variational, z_dim=12)
    x = torch.rand(4, 3, size, size) * 2 - 1
    z = torch.randn(4, 12)
    assert e.G(z).shape == (4, 3, size, size)
    with torch.no_grad():
        assert float(e.G(z).abs().max()) <= 1.0  # tanh output
    enc = e.E(x)
    if variational:
        mu, logvar = enc
        assert mu.shape == (4, 12) and logvar.shape == (4, 12)
    else:
        assert isinstance(enc, torch.Tensor) and enc.shape == (4, 12)
    assert e.Dx(x).shape == (4,)
    assert e.Dz(z).shape == (4,)
    assert e.encode(x).shape == (4, 12)
    # depth follows the image size: one more stride-2 conv in E at 64 px than at 32 px
    n_strided = sum(1 for m in e.E.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2))
    assert n_strided == {32: 3, 64: 4}[size]


def test_train_step_losses_are_finite_scalars_and_only_the_right_nets_learn():
    torch.manual_seed(0)
    e = make(augment=build_augment("diffaugment"))
    x = blobs(8)
    before = {k: v.clone() for k, v in e.state_dict().items()}
    out = e.train_step(x)
    for key in REQUIRED + ("loss/D_latent", "loss/recon_x", "loss/recon_z", "loss/G_adv_x", "loss/G_adv_z",
                           "acc/D_recon", "acc/Dz_real", "acc/Dz_fake"):
        assert key in out, key
        v = out[key]
        assert isinstance(v, torch.Tensor) and v.dim() == 0 and torch.isfinite(v), (key, v)
    assert "loss/kl" not in out  # only the variational engine has a KL term
    for key in ("acc/D_real", "acc/D_fake", "acc/Dz_real", "acc/Dz_fake"):
        assert 0.0 <= float(out[key]) <= 1.0
    # the reconstruction loss reported is the real L1 of G(E(x)) against x, so it is in (0, 2]
    assert 0.0 < float(out["loss/recon_x"]) <= 2.0
    # every network was updated by its optimiser
    after = e.state_dict()
    for net in ("G", "E", "Dx", "Dz"):
        changed = [k for k in after if k.startswith(net + ".") and after[k].is_floating_point()
                   and not torch.equal(after[k], before[k])]
        assert changed, f"{net} was not updated"
    # freezing the discriminators for the G/E step is undone afterwards
    assert all(p.requires_grad for p in e.Dx.parameters()) and all(p.requires_grad for p in e.Dz.parameters())


def test_generator_loss_combines_the_configured_weights():
    torch.manual_seed(0)
    e = make(adv_x_weight=0.0, adv_z_weight=0.0, recon_x_weight=2.0, recon_z_weight=0.0)
    out = e.train_step(blobs(4))
    assert torch.allclose(out["loss/G"], 2.0 * out["loss/recon_x"])
    torch.manual_seed(0)
    e = make(adv_x_weight=0.0, adv_z_weight=3.0, recon_x_weight=0.0, recon_z_weight=0.5)
    out = e.train_step(blobs(4))
    assert torch.allclose(out["loss/G"], 3.0 * out["loss/G_adv_z"] + 0.5 * out["loss/recon_z"])


def test_reconstructions_improve_on_a_tiny_overfit_set():
    torch.manual_seed(0)
    e = make(lr=2e-3)
    x = blobs(8)
    start = float((e.reconstruct(x) - x).abs().mean())
    first = float(e.train_step(x)["loss/recon_x"])
    for _ in range(149):
        last = float(e.train_step(x)["loss/recon_x"])
    end = float((e.reconstruct(x) - x).abs().mean())  # eval mode, as the app reconstructs
    assert end < 0.75 * start, (start, end)
    assert last < 0.75 * first, (first, last)


def test_mse_reconstruction_option():
    torch.manual_seed(0)
    e = make(recon_x_loss="MSE")
    assert e.config["recon_x_loss"] == "mse"
    x = blobs(4)
    torch.manual_seed(1)
    out = e.train_step(x)
    torch.manual_seed(0)
    e1 = make(recon_x_loss="l1")
    torch.manual_seed(1)
    out1 = e1.train_step(x)
    # same nets and randomness, so the two differ only in the distance: mean |d|^2 vs mean |d|
    assert not torch.allclose(out["loss/recon_x"], out1["loss/recon_x"])
    assert float(out["loss/recon_x"]) < float(out1["loss/recon_x"])  # |d| < 1 for most pixels


def test_variational_option_adds_the_kl_term_and_samples_codes():
    torch.manual_seed(0)
    e = make(variational=True, z_dim=8, adv_x_weight=0.0, adv_z_weight=0.0, recon_x_weight=0.0,
             recon_z_weight=0.0, kl_weight=1.0)
    x = blobs(4)
    mu, logvar = e.E(x)
    assert mu.shape == logvar.shape == (4, 8)
    out = e.train_step(x)
    assert "loss/kl" in out and float(out["loss/kl"]) > 0
    # with every other weight at 0 the G/E objective is exactly the KL term
    assert torch.allclose(out["loss/G"], out["loss/kl"])
    # encode() gives the posterior mean by default and a reparameterised draw with sample=True
    m1, m2 = e.encode(x), e.encode(x)
    assert torch.equal(m1, m2)
    s = e.encode(x, sample=True)
    assert s.shape == m1.shape and not torch.allclose(s, m1)
    assert e.export_extra()["variational"] is True


def test_kl_formula():
    z = torch.zeros(3, 5)
    assert float(_kl_to_standard_normal(z, z)) == 0.0
    # mu = 1, var = 1: 0.5 per dimension, summed over 5 dims
    assert float(_kl_to_standard_normal(torch.ones(3, 5), z)) == pytest.approx(2.5)
    # mu = 0, logvar = log 4: 0.5 * (4 - 1 - log 4) per dimension
    lv = torch.full((2, 1), float(torch.log(torch.tensor(4.0))))
    assert float(_kl_to_standard_normal(torch.zeros(2, 1), lv)) == pytest.approx(0.5 * (3 - 1.3862944), rel=1e-5)


def test_extra_grids_interleave_real_and_reconstruction():
    torch.manual_seed(0)
    e = make()
    e.train_step(blobs(8))
    real = blobs(6, seed=3)
    rng = torch.get_rng_state()
    grid = e.extra_grids(real)["recon"]
    assert torch.equal(torch.get_rng_state(), rng)  # sample grids must not disturb the training RNG
    assert grid.shape == (12, 3, 32, 32)
    assert torch.equal(grid[0::2], real)
    assert torch.allclose(grid[1::2], e.reconstruct(real))
    assert float(grid.abs().max()) <= 1.0
    assert e.extra_grids(blobs(40))["recon"].shape[0] == 64  # at most 32 pairs
    assert e.training  # put back in training mode


def test_bad_images_and_settings_get_clear_errors():
    e = make()
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\]"):
        e.encode(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="recon_x_loss"):
        make(recon_x_loss="l2")
    with pytest.raises(ValueError, match="variational"):
        make(variational="yes")
    with pytest.raises(ValueError, match="z_dim"):
        make(z_dim=0)
    with pytest.raises(ValueError, match="adv_x_weight"):
        make(adv_x_weight=-1)
    with pytest.raises(ValueError, match="no setting"):
        make(kl_wieght=1.0)
    with pytest.raises(ValueError, match="image size"):
        make(size=48)


def test_discriminator_learning_rate_option():
    e = make(d_lr=1e-4)
    assert e.optimizers["D"].param_groups[0]["lr"] == 1e-4
    assert e.optimizers["G"].param_groups[0]["lr"] == 2e-4
    assert make().optimizers["D"].param_groups[0]["lr"] == 2e-4


def test_augmentation_sees_every_discriminator_input_and_gets_feedback():
    class Recorder:
        p = 1.0

        def __init__(self):
            self.calls, self.feedback = [], []

        def __call__(self, x):
            self.calls.append(tuple(x.shape))
            return x.flip(3)

        def update(self, real_logits):
            self.feedback.append(real_logits.shape)

    aug = Recorder()
    e = make(augment=aug)
    e.train_step(blobs(4))
    # D step: real, G(z), G(E(x)); G step: G(z), G(E(x)) — all images of the batch
    assert aug.calls == [(4, 3, 32, 32)] * 5
    assert aug.feedback == [torch.Size([4])]


@pytest.mark.parametrize("variational", [False, True])
def test_exact_resume(variational):
    torch.manual_seed(0)
    a = make(variational=variational, augment=build_augment("diffaugment"))
    x = blobs(8)
    for _ in range(2):
        a.train_step(x)
    buf = io.BytesIO()
    torch.save(a.state_dict_full(), buf)  # as a checkpoint would, so a's later steps cannot alias it
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    torch.manual_seed(123)  # a fresh engine starts from different weights
    b = make(variational=variational, augment=build_augment("diffaugment"))
    b.load_state_dict_full(state)

    rng = torch.get_rng_state()
    out_a = a.train_step(x)
    torch.set_rng_state(rng)
    out_b = b.train_step(x)
    assert out_a.keys() == out_b.keys()
    for k in out_a:
        assert torch.equal(out_a[k], out_b[k]), k
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_export_loads_into_a_sampling_engine(tmp_path):
    torch.manual_seed(0)
    a = make(variational=True)
    x = blobs(8)
    for _ in range(2):
        a.train_step(x)
    save_export(a, tmp_path / "export")
    cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert cfg["engine"] == "aegan"
    assert "encode" in cfg["extra"]["supports"] and cfg["extra"]["variational"] is True

    b = load_export(tmp_path / "export")
    assert isinstance(b, AEGAN) and not b.training_mode
    assert not hasattr(b, "Dx") and not hasattr(b, "Dz") and b.optimizers == {}
    assert torch.equal(a.sample(n=6, seed=7), b.sample(n=6, seed=7))
    assert torch.equal(a.encode(x), b.encode(x))
    assert torch.equal(a.reconstruct(x), b.reconstruct(x))


def test_sampling_engine_has_an_encoder_but_no_discriminators():
    e = AEGAN(TINY, 32, training=False)
    assert set(e.export_modules()) == {"G", "E"}
    assert not hasattr(e, "Dx") and e.optimizers == {}
    assert e.encode(blobs(2)).shape == (2, 16)  # default z_dim


def test_trainer_run_writes_recon_grids_and_resumes_bit_identically(tmp_path, tiny_dataset):
    """End to end with the generic trainer: extra 'recon' grids, AEGAN scalars in metrics.jsonl, export
    with the encoder, and a run killed mid-epoch that resumes to the same weights as an uninterrupted one."""
    from PIL import Image

    from engines.config import TrainConfig
    from engines.runs.folder import read_metrics
    from engines.trainer import Trainer

    def cfg():
        return TrainConfig(image_size=32, batch_size=8, epochs=2, sample_every=2, eval_every=0, grid_n=4,
                           seed=3, engine=dict(TINY))

    ref = Trainer("aegan", tiny_dataset, tmp_path / "ref", cfg(), progress=False)
    run = ref.fit()
    recon = run / "samples" / "recon_epoch_000002.png"
    assert recon.is_file()
    # 16 real images + 16 reconstructions, 8 per row -> 4 rows of 32 px tiles (with 2 px padding)
    assert Image.open(recon).size == (8 * 34 + 2, 4 * 34 + 2)
    lines = read_metrics(run).train
    assert [r["epoch"] for r in lines] == [1, 2]
    for k in ("loss/D_latent", "loss/recon_x", "loss/recon_z", "acc/Dz_real"):
        assert k in lines[-1] and lines[-1][k] == lines[-1][k], k  # present and not NaN
    exported = load_export(run)
    assert set(exported.export_modules()) == {"G", "E"}
    x = blobs(4)
    assert torch.equal(exported.encode(x), ref.engine.encode(x))

    t = Trainer("aegan", tiny_dataset, tmp_path / "cut", cfg(), progress=False)
    kill_at_step(t.engine, 8)  # mid epoch 2 (5 steps per epoch)
    with pytest.raises(Killed):
        t.fit()
    resumed = Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False)
    resumed.fit()
    sa, sb = ref.engine.state_dict(), resumed.engine.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
