"""cgan: projection discriminator and conditional batch norm (or concatenation), label-conditioned sampling that is
reproducible by (seed, label), a tiny set it learns the labels of, exact resume, export round trip, and the trainer
and CLI with --labels."""
import json

import pytest
import torch
from PIL import Image

from engines.cli import main
from engines.config import TrainConfig
from engines.runs.export import load_export, save_export
from engines.generate.cgan import CGAN, ConditionalBatchNorm2d, ProjectionDiscriminator, pool_labels
from engines.labels import LabelSpec, UnknownLabelError
from engines.registry import get_engine
from engines.runs.folder import read_info
from engines.trainer import Trainer
from helpers import checkpoint_round_trip, labelled_set as write_labelled_set

SPEC = LabelSpec(("Fire", "Grass", "Poison", "Water"), "types", (("Fire", 3), ("Grass|Poison", 2), ("Water", 3)))
TINY = {"g_width": 8, "d_width": 8, "z_dim": 8, "labels": SPEC.to_json()}


def make(size=16, training=True, seed=0, **cfg):
    torch.manual_seed(seed)
    e = CGAN({**TINY, **cfg}, size, training=training)
    if training:
        e.setup(torch.device("cpu"))
    return e


def coloured(labels: list[str], size=16, seed=0):
    """Fire: red pictures, Water: blue, Grass|Poison: green; a little noise."""
    g = torch.Generator().manual_seed(seed)
    colour = {"Fire": (1, -1, -1), "Water": (-1, -1, 1), "Grass|Poison": (-1, 1, -1)}
    x = torch.stack([torch.tensor(colour[t], dtype=torch.float32).view(3, 1, 1).expand(3, size, size)
                     for t in labels])
    return (0.8 * x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def test_registry_defaults_and_paper_parts():
    assert get_engine("cgan") is CGAN and CGAN.conditional
    c = CGAN.default_config()
    assert c["conditioning"] == "projection" and c["loss"] == "hinge" and c["spectral_norm"] is True
    assert c["label_pool"] == "mean" and c["labels"] is None and "discriminator" not in c
    e = make()
    cbn = [m for m in e.G.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(cbn) == 2 and all(m.gamma.shape == (4, m.beta.shape[1]) for m in cbn)  # per-class gamma/beta
    assert all(torch.equal(m.gamma, torch.ones_like(m.gamma)) and not m.beta.any() for m in cbn)  # 1 / 0
    assert isinstance(e.D, ProjectionDiscriminator)
    assert hasattr(e.D.embed, "parametrizations") and any(hasattr(m, "parametrizations") for m in e.D.trunk.net)
    with pytest.raises(ValueError, match="needs labels"):
        CGAN({"g_width": 8}, 16)
    with pytest.raises(ValueError, match="conditioning must be one of projection, concat"):
        make(conditioning="film")


def test_projection_discriminator_uses_the_label():
    e = make()
    e.eval()
    x = coloured(["Fire", "Water"])
    fire, water = SPEC.encode(["Fire", "Fire"]), SPEC.encode(["Water", "Water"])
    with torch.no_grad():
        d_fire, d_water = e.D(x, fire), e.D(x, water)
        assert (d_fire - d_water).abs().min() > 1e-4  # changing y changes D(x, y)
        # ... by exactly <embed(y) - embed(y'), sum_hw phi(x)>: psi(phi(x)) does not see y
        h = e.D.trunk.features(x).sum((2, 3))
        want = ((e.D.embed(fire) - e.D.embed(water)) * h).sum(1)
        assert torch.allclose(d_fire - d_water, want, atol=1e-5)
        # a multi-label row mixes the embeddings: the mean of its labels' (label_pool=mean)
        gp = SPEC.encode(["Grass|Poison"] * 2)
        assert torch.allclose(pool_labels(gp), gp / 2)
        mixed = e.D(x, gp) - e.D.trunk.head(e.D.trunk.features(x)).flatten()
        emb = 0.5 * (e.D.embed(SPEC.encode(["Grass"] * 2)) + e.D.embed(SPEC.encode(["Poison"] * 2)))
        assert torch.allclose(mixed, (emb * h).sum(1), atol=1e-5)


def test_concat_conditioning_feeds_y_to_both_inputs():
    e = make(conditioning="concat")
    assert e.G.net[0].in_channels == 8 + 4 and e.D.net.net[0].in_channels == 3 + 4
    assert not any(isinstance(m, ConditionalBatchNorm2d) for m in e.G.modules())
    e.eval()
    x = coloured(["Fire", "Water"])
    with torch.no_grad():
        assert (e.D(x, SPEC.encode(["Fire"] * 2)) - e.D(x, SPEC.encode(["Water"] * 2))).abs().min() > 1e-5


def test_cbn_mixes_label_gammas():
    cbn = ConditionalBatchNorm2d(2, 3)
    with torch.no_grad():
        cbn.gamma.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        cbn.beta.copy_(torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]))
    cbn.eval()  # running stats 0/1: the normalisation is the identity (up to eps)
    x = torch.ones(1, 2, 1, 1)
    y = torch.tensor([[1.0, 0.0, 1.0]])
    out = cbn(x, y).flatten()
    assert torch.allclose(out, torch.tensor([3.0 + 2.0, 4.0 + 3.0]), atol=1e-3)  # mean of rows 0 and 2


NAMES = ["Fire", "Water", "Grass|Poison", "Fire", "Water", "Grass|Poison", "Fire", "Water"] * 2


def overfit(conditioning="projection"):
    """A tiny set at a high lr for 150 steps: red for Fire, blue for Water, green for Grass|Poison."""
    e = make(conditioning=conditioning, lr=2e-3)
    x, y = coloured(NAMES), SPEC.encode(NAMES)
    d_losses = [float(e.train_step((x, y))["loss/D"]) for _ in range(150)]
    return e, d_losses


@pytest.fixture(scope="module")
def trained():
    return overfit()


def check_follows_labels(e):
    red, blue = e.sample(n=16, seed=5, labels="Fire"), e.sample(n=16, seed=5, labels="Water")
    red_rgb, blue_rgb = red.mean((0, 2, 3)), blue.mean((0, 2, 3))
    assert red_rgb[0] - red_rgb[2] > 0.5 and blue_rgb[2] - blue_rgb[0] > 0.5, (red_rgb, blue_rgb)
    green = e.sample(n=16, seed=5, labels=["Grass", "Poison"]).mean((0, 2, 3))
    assert green[1] > green[0] + 0.3 and green[1] > green[2] + 0.3


def test_tiny_overfit_loss_goes_down_and_samples_follow_the_label(trained):
    e, d_losses = trained
    assert sum(d_losses[-10:]) / 10 < sum(d_losses[:10]) / 10
    check_follows_labels(e)


def test_tiny_overfit_with_concatenation():
    e, _ = overfit("concat")  # D wins early and its loss climbs back as G catches up: the samples are the check
    check_follows_labels(e)


def test_sampling_differs_by_label_and_is_reproducible(trained):
    e, _ = trained
    fire = e.sample(n=4, seed=7, labels="Fire")
    assert torch.equal(fire, e.sample(n=4, seed=7, labels="Fire"))            # (seed, label) -> same images
    assert (fire - e.sample(n=4, seed=7, labels="Water")).abs().max() > 0.5   # another label -> others
    # one image alone is the same as in a batch, and per-image labels are taken in order
    mixed = e.sample(n=2, seed=7, labels=["Water", "Fire"])
    assert torch.allclose(mixed[1], e.sample(z=e.latent(2, 7)[1:], labels="Fire")[0], atol=1e-6)
    assert torch.allclose(mixed[0], e.sample(z=e.latent(2, 7)[:1], labels="Water")[0], atol=1e-6)
    # no labels: drawn from the training mix with the seed (reproducible), batched in several pieces alike
    a = e.sample(n=10, seed=3, batch_size=4)
    assert torch.equal(a, e.sample(n=10, seed=3, batch_size=64))
    assert torch.equal(a, e.sample(z=e.latent(10, 3), labels=SPEC.draw(10, 3)))
    with pytest.raises(UnknownLabelError, match="unknown label 'Ghost'; the vocabulary is: Fire, Grass, Poison, Water"):
        e.sample(n=1, labels="Ghost")
    walk = e.interpolate(1, 2, frames=4, labels="Water")
    assert torch.allclose(walk[0], e.sample(n=1, seed=1, labels="Water")[0], atol=1e-5)
    assert walk[:, 2].mean() > walk[:, 0].mean() + 0.5  # the label is held along the walk: blue throughout


def test_exact_resume_is_bit_identical():
    names = ["Fire", "Water", "Grass|Poison", "Fire"]
    x, y = coloured(names), SPEC.encode(names)
    a = make()
    a.train_step((x, y))
    state, rng = checkpoint_round_trip(a), torch.get_rng_state()
    outs_a = [a.train_step((x, y)) for _ in range(2)]
    b = make(seed=9)
    b.load_state_dict_full(state)
    torch.set_rng_state(rng)
    outs_b = [b.train_step((x, y)) for _ in range(2)]
    for oa, ob in zip(outs_a, outs_b):
        assert all(torch.equal(oa[k], ob[k]) for k in oa)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_export_round_trip_keeps_the_vocabulary(tmp_path):
    e = make()
    e.train_step((coloured(["Fire", "Water"]), SPEC.encode(["Fire", "Water"])))
    save_export(e, tmp_path / "export")
    cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert cfg["engine_config"]["labels"]["vocabulary"] == list(SPEC.vocabulary)
    assert cfg["extra"]["labels"]["vocabulary"] == list(SPEC.vocabulary) and "labels" in cfg["extra"]["supports"]
    f = load_export(tmp_path / "export")
    assert f.conditional and f.label_spec == SPEC and not hasattr(f, "D")
    for lab in ("Fire", "Grass|Poison"):
        assert torch.allclose(f.sample(n=3, seed=2, labels=lab), e.sample(n=3, seed=2, labels=lab), atol=1e-6)
    bad = {**cfg, "engine_config": {**cfg["engine_config"], "labels": {"vocabulary": 7}}}
    (tmp_path / "export" / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="vocabulary must be a list"):
        load_export(tmp_path / "export")


@pytest.fixture
def labelled_set(tmp_path):
    # a row without an image: reported
    return write_labelled_set(tmp_path, ["Fire", "Water", "Grass|Poison"], 18, extra_rows=["900,Missingno,Bird"])


def test_trainer_feeds_labels_records_them_and_resumes(tmp_path, labelled_set):
    cfg = TrainConfig(image_size=16, batch_size=6, epochs=1, sample_every=1, eval_every=0, grid_n=4,
                      engine={"g_width": 8, "d_width": 8, "z_dim": 8})
    seen = []
    t = Trainer("cgan", labelled_set, tmp_path / "runs", cfg, progress=False)
    real_step = t.engine.train_step

    def spy(batch):
        seen.append(batch)
        return real_step(batch)

    t.engine.train_step = spy
    run = t.fit()
    assert len(seen) == 3 and all(isinstance(b, tuple) and b[1].shape == (6, 4) for b in seen)
    # the labels are the images' own: Fire pictures are red
    for x, y in seen:
        for img, row in zip(x, y):
            if row[0] == 1:  # Fire
                assert img[0].mean() > 0.5 and img[2].mean() < -0.5
    info = read_info(run)
    assert info["config"]["engine"]["labels"]["vocabulary"] == ["Fire", "Grass", "Poison", "Water"]
    assert info["dataset"]["key"] == labelled_set.key != labelled_set.image_key
    assert info["dataset"]["labels"]["unmatched_names"] == ["900"] and info["dataset"]["labels"]["column"] == "types"
    assert (run / "samples" / "by_label_epoch_000001.png").is_file()
    grid = Image.open(run / "samples" / "by_label_epoch_000001.png")
    assert grid.size == (8 * 18 + 2, 4 * 18 + 2)  # a row per label (4), 8 seeds
    assert "1 label row(s) match no image: 900" in (run / "log.txt").read_text()
    # resume takes the recorded labels file again and checks the key
    r = Trainer.resume(run, epochs=2, progress=False)
    assert r.labels is not None and r.datasets[0].key == labelled_set.key
    r.fit()
    assert read_info(run)["status"] == "finished" and read_info(run)["epoch"] == 2
    # a changed label is a changed dataset
    csv = tmp_path / "species.csv"
    csv.write_text(csv.read_text().replace("3,mon3,Fire", "3,mon3,Water"))
    with pytest.raises(Exception, match="changed since the run started"):
        Trainer.resume(run, epochs=3, progress=False)
    csv.write_text(csv.read_text().replace("3,mon3,Water", "3,mon3,Fire"))

    # pokelab sample --label: every --label joins the combination; unknown -> error naming it, nothing written
    out = tmp_path / "fire.png"
    assert main(["sample", str(run), "--n", "4", "--label", "Fire", "--out", str(out)]) == 0 and out.is_file()
    out2 = tmp_path / "gp.png"
    assert main(["sample", str(run), "--n", "4", "--label", "Grass", "--label", "Poison", "--out", str(out2)]) == 0
    out3 = tmp_path / "gp2.png"
    assert main(["sample", str(run), "--n", "4", "--label", "Poison|Grass", "--out", str(out3)]) == 0
    assert out2.read_bytes() == out3.read_bytes() != out.read_bytes()


def test_sample_cli_errors(tmp_path, labelled_set, capsys):
    cfg = TrainConfig(image_size=16, batch_size=6, epochs=1, sample_every=1, eval_every=0, grid_n=4,
                      engine={"g_width": 8, "d_width": 8, "z_dim": 8})
    run = Trainer("cgan", labelled_set, tmp_path / "runs", cfg, progress=False).fit()
    out = tmp_path / "x.png"
    assert main(["sample", str(run), "--label", "Ghost", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown label 'Ghost'" in err and "Fire, Grass, Poison, Water" in err and not out.exists()
    d = Trainer("dcgan", labelled_set.base, tmp_path / "runs", TrainConfig(
        image_size=16, batch_size=6, epochs=1, sample_every=1, eval_every=0, grid_n=4,
        engine={"g_width": 8, "d_width": 8, "z_dim": 8}), progress=False).fit()
    assert main(["sample", str(d), "--label", "Fire", "--out", str(out)]) == 2
    assert "not conditional" in capsys.readouterr().err and not out.exists()
    with pytest.raises(Exception, match="not conditional and cannot use labels"):
        Trainer("dcgan", labelled_set, tmp_path / "runs", cfg, progress=False)
