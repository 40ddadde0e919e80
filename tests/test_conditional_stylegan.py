"""Conditional StyleGAN2-ADA and Projected GAN (--labels): the label joins z in the mapping network (embedded,
normalised, concatenated) and D projects it (stylegan2-ada's cmap epilogue, projected-gan's SingleDiscCond);
unconditional runs and the shipped exports are unchanged; a tiny labelled set is learnt; exact resume; export,
trainer, CLI (sample, interpolate between labels) and the app's label pickers."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from engines.cli import main
from engines.config import TrainConfig
from engines.data.prepare import load_dataset
from engines.runs.export import load_export, save_export
from engines.generate.projected_gan import CondBatchNorm, FastGANGenerator, ProjectedGAN, UpBlock
from engines.generate.stylegan2_ada import Discriminator, MappingNetwork, StyleGAN2ADA, normalize_2nd_moment
from engines.data.images import to_uint8
from engines.labels import LabelError, LabelSpec, UnknownLabelError
from engines.registry import get_engine
from engines.runs.folder import read_info
from engines.trainer import Trainer
from helpers import checkpoint_round_trip, labelled_set as write_labelled_set

ROOT = Path(__file__).resolve().parents[1]
SPEC = LabelSpec(("Fire", "Grass", "Poison", "Water"), "types", (("Fire", 3), ("Grass|Poison", 2), ("Water", 3)))
TINY = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 128, "channel_max": 16}
PG_TINY = {"ngf": 4, "z_dim": 16, "d_input_size": 32, "d_cout": 8, "d_width": 0.125, "d_cmap_dim": 8,
           "d_embedding_dim": 8}
NAMES = ["Fire", "Water", "Grass|Poison", "Fire", "Water", "Grass|Poison", "Fire", "Water"] * 2


def make(size=16, training=True, seed=0, labels=True, **cfg):
    torch.manual_seed(seed)
    e = StyleGAN2ADA({**TINY, **({"labels": SPEC.to_json()} if labels else {}), **cfg}, size, training=training)
    if training:
        e.setup(torch.device("cpu"))
    return e


def coloured(labels, size=16, seed=0):
    """Fire: red pictures, Water: blue, Grass|Poison: green; a little noise."""
    g = torch.Generator().manual_seed(seed)
    colour = {"Fire": (1, -1, -1), "Water": (-1, -1, 1), "Grass|Poison": (-1, 1, -1)}
    x = torch.stack([torch.tensor(colour[t], dtype=torch.float32).view(3, 1, 1).expand(3, size, size)
                     for t in labels])
    return (0.8 * x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


# ---- the parts -------------------------------------------------------------------------------------------------
def test_optional_labels_in_the_registry_and_config():
    for name in ("stylegan2_ada", "projected_gan"):
        cls = get_engine(name)
        assert cls.labels_optional and not cls.conditional  # --labels accepted, not required
        assert cls.default_config()["labels"] is None
    assert make(labels=False).conditional is False and make().conditional is True
    assert get_engine("cgan").conditional and not get_engine("dcgan").labels_optional


def test_mapping_joins_the_embedded_normalised_label_to_z():
    e = make(training=False)
    m = e.G_ema.mapping
    assert m.c_dim == 4 and m.embed.weight.shape == (16, 4)      # FC embedding, w_dim wide
    assert m.net[0].weight.shape == (16, 16 + 16)                  # the first layer sees [z, embed(c)]
    z = e.latent(3, 1)
    fire, water = SPEC.encode(["Fire"] * 3), SPEC.encode(["Water"] * 3)
    with torch.inference_mode():
        w_fire, w_water = e.mapping(z, labels=fire), e.mapping(z, labels=water)
        assert (w_fire - w_water).abs().max() > 1e-3                   # changing c changes w
        assert torch.equal(w_fire, e.mapping(z, labels=fire))
        # exactly the reference's input: cat(normalise(z), normalise(embed(c))) through the FC layers
        gp = SPEC.encode(["Grass|Poison"] * 3)
        x = torch.cat([normalize_2nd_moment(z), normalize_2nd_moment(m.embed(gp))], 1)
        assert torch.allclose(e.mapping(z, labels=gp)[:, 0], m.net(x), atol=1e-6)
    with pytest.raises(ValueError, match=r"needs labels \[3, 4\]"):
        e.mapping(z)
    with pytest.raises(ValueError, match="trained without labels"):
        make(training=False, labels=False).mapping(z, labels=fire)


def test_discriminator_projects_the_label():
    torch.manual_seed(0)
    d = Discriminator(16, 128, 16, c_dim=4).eval()
    assert d.cmap_dim == 16 and d.out.weight.shape == (16, 16)   # cmap_dim: the 4x4 width, as the reference
    assert len(d.mapping.net) == 8 and d.mapping.z_dim == 0       # the label's own mapping network (8 FC layers)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    fire, water = SPEC.encode(["Fire"] * 4), SPEC.encode(["Water"] * 4)
    with torch.no_grad():
        a, b = d(x, fire), d(x, water)
        assert a.shape == (4,) and (a - b).abs().max() > 1e-4       # D's logit depends on c
        # out = sum(epilogue(x) * cmap(c)) / sqrt(cmap_dim)
        h = d.conv(d.mbstd(d.blocks(d.from_rgb(x))))
        feats = d.out(d.fc(h.flatten(1)))
        assert torch.allclose(a, (feats * d.mapping(None, c=fire)).sum(1) / math.sqrt(16), atol=1e-5)
    assert not hasattr(Discriminator(16, 128, 16), "mapping")       # unconditional: one output, no mapping
    assert Discriminator(16, 128, 16).out.weight.shape == (1, 16)
    with pytest.raises(ValueError, match="conditional"):
        MappingNetwork(0, 8, None, c_dim=4)(None, c=None)


def test_projected_gan_parts_use_the_label():
    torch.manual_seed(0)
    g = FastGANGenerator(16, 64, 4, lite=True, num_classes=4).eval()
    assert isinstance(g.up["8"].bn1, CondBatchNorm) and g.embed.weight.shape == (4, 16)
    assert isinstance(FastGANGenerator(16, 64, 4, lite=True).up["8"], UpBlock)   # unconditional: as before
    with torch.no_grad():  # gain 1 + g(e), bias b(e): each label's embedding moves them from the start
        z = torch.randn(2, 16)
        assert (g(z, SPEC.encode(["Fire"] * 2)) - g(z, SPEC.encode(["Water"] * 2))).abs().max() > 1e-3
    e = ProjectedGAN({**PG_TINY, "labels": SPEC.to_json()}, 64)
    disc = e.D.discs[0]
    assert disc.cmap_dim == 8 and disc.embed.weight.shape == (4, 8)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        e.D.eval()
        a = e.D(x, SPEC.encode(["Fire"] * 2))
        b = e.D(x, SPEC.encode(["Water"] * 2))
        assert a.shape == e.D(x, SPEC.encode(["Grass|Poison"] * 2)).shape and (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="needs the labels"):
        e.D(x)


# ---- unconditional runs and the shipped exports are unchanged -------------------------------------------------
def shipped(engine: str) -> Path:
    """The engine's one shipped unconditional export (a conditional one may be shipped beside it)."""
    (d,) = [d for d in sorted((ROOT / "checkpoints" / "runs").glob(f"*-{engine}-*/export"))
            if not (json.loads((d / "config.json").read_text()).get("extra") or {}).get("labels")]
    return d


def test_shipped_unconditional_exports_load_and_sample_as_before():
    """tests/data: uint8 samples of the shipped exports made with the code before conditional support (checked
    bit-identical in float when this was written; uint8 +-1 here for other CPUs' last bits)."""
    ref = load_file(str(ROOT / "tests" / "data" / "shipped_unconditional_samples.safetensors"))

    def close(a, key):
        diff = (to_uint8(a).int() - ref[key].int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01, key

    sg = load_export(shipped("stylegan2_ada"))
    assert sg.conditional is False and sg.label_spec is None and not hasattr(sg.G_ema.mapping, "embed")
    close(sg.sample(n=4, seed=0), "stylegan2_ada/sample")
    close(sg.sample(n=2, seed=5, truncation_psi=0.7), "stylegan2_ada/psi07")
    close(sg.interpolate(1, 2, frames=3), "stylegan2_ada/interp")
    cfg = json.loads((shipped("stylegan2_ada") / "config.json").read_text())
    assert sg.export_extra() == cfg["extra"]  # what a re-export would write: unchanged
    pg = load_export(shipped("projected_gan"))
    assert pg.conditional is False and not hasattr(pg.G_ema, "embed")
    close(pg.sample(n=4, seed=0), "projected_gan/sample")
    assert pg.export_extra() == {}
    with pytest.raises(LabelError, match="trained without labels"):
        sg.sample(n=1, labels="Fire")


def test_unlabelled_training_is_unchanged():
    """Three steps of a tiny unconditional StyleGAN2 give the losses and weights they gave before conditional
    support was added (pinned from that code on the same seed, in its NCHW memory format: channels_last changes
    which random numbers the path-length noise gets, as torch.randn_like follows the layout)."""
    torch.manual_seed(0)
    e = StyleGAN2ADA(TINY, 16)
    e.setup(torch.device("cpu"), channels_last=False)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        out = e.train_step(torch.rand(8, 3, 16, 16, generator=g) * 2 - 1)
    want = {"loss/D": 1.404914379119873, "loss/G": 0.4810217022895813, "loss/pl": 2.382331371307373,
            "pl_mean": 0.010280660353600979, "score/real": 0.5383918285369873, "score/fake": 0.44277456402778625}
    for k, v in want.items():
        assert float(out[k]) == pytest.approx(v, rel=1e-5), k
    total = sum(float(v.double().abs().sum()) for v in e.state_dict_full()["modules"].values() if v.is_floating_point())
    assert total == pytest.approx(110310.00073179236, rel=1e-6)
    assert not any("embed" in k or "mapping.net" in k and k.startswith("D.") for k in e.state_dict())


# ---- training ------------------------------------------------------------------------------------------------
def test_tiny_overfit_learns_the_labels():
    """16 px, a red/blue/green set by label, 60 steps: D's loss goes down and the samples asked for a label have
    its colour (an unconditional G could not do this)."""
    e = make(lr=0.01, style_mixing_prob=0.0, pl_weight=0.0, r1_gamma=0.1)
    x, y = coloured(NAMES), SPEC.encode(NAMES)
    d_losses = [float(e.train_step((x, y))["loss/D"]) for _ in range(60)]
    assert all(math.isfinite(v) for v in d_losses)
    assert sum(d_losses[-10:]) / 10 < sum(d_losses[:10]) / 10
    red = e.sample(n=16, seed=5, labels="Fire").mean((0, 2, 3))
    blue = e.sample(n=16, seed=5, labels="Water").mean((0, 2, 3))
    assert red[0] - red[2] > 0.5 and blue[2] - blue[0] > 0.5, (red, blue)
    green = e.sample(n=16, seed=5, labels=["Grass", "Poison"]).mean((0, 2, 3))
    assert green[1] > green[0] + 0.3 and green[1] > green[2] + 0.3, green


def test_train_step_checks_the_batch():
    x = coloured(["Fire", "Water"])
    with pytest.raises(ValueError, match=r"\(images, labels\) batches"):
        make().train_step(x)
    with pytest.raises(ValueError, match="built without labels"):
        make(labels=False).train_step((x, SPEC.encode(["Fire", "Water"])))


def test_exact_resume_is_bit_identical():
    names = ["Fire", "Water", "Grass|Poison", "Fire"]
    x, y = coloured(names), SPEC.encode(names)
    a = make(r1_interval=2, pl_interval=2)
    a.train_step((x, y))
    state, rng = checkpoint_round_trip(a), torch.get_rng_state()
    outs_a = [a.train_step((x, y)) for _ in range(2)]  # a plain step, then both regularisers (with labels)
    b = make(seed=9, r1_interval=2, pl_interval=2)
    b.load_state_dict_full(state)
    torch.set_rng_state(rng)
    outs_b = [b.train_step((x, y)) for _ in range(2)]
    for oa, ob in zip(outs_a, outs_b):
        assert all(torch.equal(oa[k], ob[k]) for k in oa)
    sa, sb = a.state_dict(), b.state_dict()
    assert any(k.startswith("D.mapping.") for k in sa) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_micro_batches_carry_the_labels():
    """batch_gpu (accumulate in rounds) splits each phase's labels with its images: every D call sees one label row
    per image, the reals' own labels with the reals."""
    names = ["Fire", "Water", "Grass|Poison", "Fire"]
    x, y = coloured(names), SPEC.encode(names)
    e = make(r1_interval=1, pl_interval=1)
    e.batch_rounds = 2
    seen = []
    forward = e.D.forward

    def spy(img, c=None):
        seen.append((img.shape[0], None if c is None else c.clone()))
        return forward(img, c)

    e.D.forward = spy
    out = e.train_step((x, y))
    assert all(math.isfinite(float(v)) for v in out.values())
    assert seen and all(c is not None and len(c) == n for n, c in seen)
    assert any(n == 2 and torch.equal(c, y[:2]) for n, c in seen)  # the first half of the reals, their labels


def test_projected_gan_trains_with_labels_and_resumes_exactly():
    def fresh(seed):
        torch.manual_seed(seed)
        return ProjectedGAN({**PG_TINY, "labels": SPEC.to_json()}, 64).setup(torch.device("cpu"))

    names = ["Fire", "Water", "Grass|Poison", "Fire"]
    x, y = coloured(names, 64), SPEC.encode(names)
    a = fresh(0)
    a.train_step((x, y))
    state, rng = checkpoint_round_trip(a), torch.get_rng_state()
    outs_a = [a.train_step((x, y)) for _ in range(2)]
    b = fresh(5)
    b.load_state_dict_full(state)
    torch.set_rng_state(rng)
    outs_b = [b.train_step((x, y)) for _ in range(2)]
    for oa, ob in zip(outs_a, outs_b):
        assert all(torch.equal(oa[k], ob[k]) for k in oa) and all(math.isfinite(float(v)) for v in oa.values())
    with pytest.raises(ValueError, match=r"\(images, labels\) batches"):
        a.train_step(x)


# ---- sampling and exports ------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["stylegan2_ada", "projected_gan"])
def test_sampling_by_label_and_the_export_round_trip(tmp_path, engine):
    if engine == "stylegan2_ada":
        e = make()
        e.train_step((coloured(NAMES[:8]), SPEC.encode(NAMES[:8])))
    else:
        torch.manual_seed(0)
        e = ProjectedGAN({**PG_TINY, "labels": SPEC.to_json()}, 64).setup(torch.device("cpu"))
    fire = e.sample(n=3, seed=7, labels="Fire")
    assert torch.equal(fire, e.sample(n=3, seed=7, labels="Fire"))              # (seed, label) -> same images
    assert (fire - e.sample(n=3, seed=7, labels="Water")).abs().max() > 1e-3     # another label -> others
    assert torch.equal(e.sample(n=5, seed=3), e.sample(z=e.latent(5, 3), labels=SPEC.draw(5, 3)))  # training mix
    with pytest.raises(UnknownLabelError, match="unknown label 'Ghost'"):
        e.sample(n=1, labels="Ghost")
    save_export(e, tmp_path / "export")
    cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert cfg["engine_config"]["labels"]["vocabulary"] == list(SPEC.vocabulary)
    assert cfg["extra"]["labels"]["vocabulary"] == list(SPEC.vocabulary) and "labels" in cfg["extra"]["supports"]
    f = load_export(tmp_path / "export")
    assert f.conditional and f.label_spec == SPEC and not hasattr(f, "D")
    for lab in ("Fire", "Grass|Poison"):
        assert torch.allclose(f.sample(n=3, seed=2, labels=lab), e.sample(n=3, seed=2, labels=lab), atol=1e-6)
    walk = f.interpolate(1, 2, frames=4, labels="Water")  # a seed walk with the label held
    assert torch.allclose(walk[0], f.sample(n=1, seed=1, labels="Water")[0], atol=1e-5)


def test_interpolation_between_labels_at_one_latent():
    e = make()
    e.train_step((coloured(NAMES[:8]), SPEC.encode(NAMES[:8])))
    walk = e.interpolate_labels(4, "Fire", "Water", frames=5)
    assert walk.shape == (5, 3, 16, 16)
    assert torch.allclose(walk[0], e.sample(n=1, seed=4, labels="Fire")[0], atol=1e-5)    # both ends are the
    assert torch.allclose(walk[-1], e.sample(n=1, seed=4, labels="Water")[0], atol=1e-5)  # labels' own images
    with torch.inference_mode():  # lerp: straight in W between w(z, Fire) and w(z, Water)
        z = e.latent(1, 4)
        mid = (e.mapping(z, labels=SPEC.encode(["Fire"])) + e.mapping(z, labels=SPEC.encode(["Water"]))) / 2
        assert torch.allclose(walk[2], e.synthesis(mid)[0].clamp(-1, 1), atol=1e-5)
    mix = e.interpolate_labels(4, "Fire", "Grass|Poison", frames=3, mode="slerp")  # label rows mixed, then mapped
    assert torch.allclose(mix[-1], e.sample(n=1, seed=4, labels="Grass|Poison")[0], atol=1e-5)
    assert torch.equal(e.label_path("Fire", "Water", 3)[1], torch.tensor([0.5, 0.0, 0.0, 0.5]))
    with pytest.raises(LabelError, match="without labels"):
        make(labels=False).interpolate_labels(1, "Fire", "Water")


# ---- trainer, CLI and app --------------------------------------------------------------------------------------
@pytest.fixture
def labelled_set(tmp_path):
    return write_labelled_set(tmp_path, ["Fire", "Water", "Grass|Poison"], 18)


def test_trainer_and_cli_with_a_conditional_stylegan(tmp_path, labelled_set, capsys):
    cfg = TrainConfig(image_size=16, batch_size=6, epochs=1, sample_every=1, eval_every=0, grid_n=4,
                      engine=dict(TINY))
    t = Trainer("stylegan2_ada", labelled_set, tmp_path / "runs", cfg, progress=False)
    assert t.engine.conditional and t.labels is not None
    run = t.fit()
    info = read_info(run)
    assert info["status"] == "finished"
    assert info["config"]["engine"]["labels"]["vocabulary"] == ["Fire", "Grass", "Poison", "Water"]
    assert (run / "samples" / "by_label_epoch_000001.png").is_file()
    # the same engine without labels is the unconditional StyleGAN2 (no by-label grid, labels null)
    ds = load_dataset(tmp_path / "pics", size=16, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(Exception, match="give the labels with --labels"):  # a config naming labels, none in the data
        Trainer("stylegan2_ada", ds, tmp_path / "runs", TrainConfig(
            image_size=16, batch_size=6, engine={**TINY, "labels": SPEC.to_json()}), progress=False)
    cfg = TrainConfig(image_size=16, batch_size=6, epochs=1, sample_every=1, eval_every=0, grid_n=4,
                      engine=dict(TINY))
    plain = Trainer("stylegan2_ada", ds, tmp_path / "runs", cfg, progress=False).fit()
    assert read_info(plain)["config"]["engine"]["labels"] is None
    assert not list((plain / "samples").glob("by_label_*"))

    # pokelab interpolate: --label held along a seed walk; --label A --label-to B walks between labels at one seed
    out = tmp_path / "walk.gif"
    assert main(["interpolate", str(run), "--label", "Fire", "--label-to", "Water", "--seeds", "3", "--frames", "4",
                 "--out", str(out)]) == 0
    assert Image.open(out).n_frames == 6  # 4 frames, played back and forth
    assert "from Fire to Water at seed 3" in capsys.readouterr().out
    assert main(["interpolate", str(run), "--label", "Grass", "--label", "Poison", "--seeds", "1", "2",
                 "--frames", "3", "--out", str(tmp_path / "held.gif")]) == 0
    for argv, msg in ((["--label-to", "Water"], "--label-to needs --label"),
                      (["--label", "Fire", "--label-to", "Ghost", "--seeds", "3"], "unknown label 'Ghost'"),
                      (["--label", "Fire", "--label-to", "Water", "--seeds", "1", "2"], "give one seed")):
        assert main(["interpolate", str(run), *argv, "--out", str(tmp_path / "bad.gif")]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "bad.gif").exists()
    assert main(["interpolate", str(plain), "--label", "Fire", "--label-to", "Water", "--seeds", "1",
                 "--out", str(tmp_path / "bad.gif")]) == 2
    assert "not conditional" in capsys.readouterr().err
    assert main(["sample", str(run), "--n", "2", "--label", "Water", "--out", str(tmp_path / "w.png")]) == 0

    assert main(["sample", str(plain), "--n", "2", "--out", str(tmp_path / "p.png")]) == 0


def test_app_label_pickers_for_a_conditional_stylegan(tmp_path):
    """Generate and Interpolate show label pickers for a conditional StyleGAN2 export (not for an unconditional
    one); a walk between labels ends on the Generate tab's images; style mixing heads keep each seed's label."""
    from app import gan
    from app.inputs import AppInputError
    from app.main import create_app

    ck = tmp_path / "ck"
    for name, labels in (("cond", True), ("plain", False)):
        e = make(labels=labels)
        x = coloured(NAMES[:8])
        e.train_step((x, SPEC.encode(NAMES[:8])) if labels else x)
        save_export(e, ck / name, trained={"run_id": name, "epochs": 1, "steps": 1, "image_size": 16})
    app = create_app(["--checkpoints", str(ck), "--no-shipped", "--review-db", str(tmp_path / "r.sqlite"),
                      "--sd-model", str(tmp_path / "no-sd")])
    try:
        keys = dict(app.catalog.entries)
        cond = next(k for k, e in keys.items() if e.vocabulary)
        other = next(k for k, e in keys.items() if not e.vocabulary)
        *_, pick = app.on_gen_export_change(cond)
        assert pick["visible"] is True
        *_, pick_a, pick_b = app.on_interp_export_change(cond)
        assert pick_a["visible"] and pick_b["visible"]
        assert [c if isinstance(c, str) else c[0] for c in pick_a["choices"]] == ["Fire", "Grass", "Poison", "Water"]
        *_, pick_a, _ = app.on_interp_export_change(other)
        assert pick_a["visible"] is False
        eng = app.catalog.engine(cond)
        strip, gif, _video, text = app.interpolate(cond, 3, 9, 4, "lerp", 0.7, 12, False, False, ["Fire"], ["Water"])
        assert "from Fire to Water at seed 3" in text and Path(gif).is_file()
        frames = gan.interpolate(eng, 3, 9, 4, "lerp", labels=["Fire"], labels_to=["Water"])
        assert (frames[0].int() - gan.generate(eng, 3, 1, labels=["Fire"])[0][0].int()).abs().max() <= 1
        assert (frames[-1].int() - gan.generate(eng, 3, 1, labels=["Water"])[0][0].int()).abs().max() <= 1
        *_, text = app.interpolate(cond, 3, 9, 4, "lerp", 0.7, 12, False, False, ["Water"], [])
        assert "label Water" in text
        gallery, *_ = app.generate(cond, 3, 2, 0.7, False, ["Water"])
        assert [c for _, c in gallery] == ["seed 3 · Water", "seed 4 · Water"]
        # style mixing: the heads are the seeds' own images (each with its own label draw), as in the grid
        fig = gan.style_mix(eng, "1", "2", eng.num_ws)
        head = gan.generate(eng, 1, 1)[0][0].permute(1, 2, 0).numpy()
        for tile in (fig[20:36, 2:18], fig[20:36, 20:36]):  # the row's head, and the row's image at crossover num_ws
            assert np.abs(tile.astype(int) - head.astype(int)).max() <= 1
        with pytest.raises(AppInputError, match="needs label A"):
            gan.interpolate(eng, 3, 9, 4, "lerp", labels=[], labels_to=["Water"])
        with pytest.raises(AppInputError, match="not conditional"):
            gan.interpolate(app.catalog.engine(other), 3, 9, 4, "lerp", labels=["Fire"])
    finally:
        app.close()


def test_cli_train_accepts_labels_for_optional_engines(tmp_path, labelled_set, capsys):
    pics = tmp_path / "pics"
    rc = main(["train", "dcgan", "--data", str(pics), "--labels", str(tmp_path / "species.csv"), "--label-column",
               "types", "--runs", str(tmp_path / "runs"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot use --labels" in err and "stylegan2_ada" in err and "projected_gan" in err
    rc = main(["train", "stylegan2_ada", "--data", str(pics), "--labels", str(tmp_path / "species.csv"),
               "--label-column", "types", "--runs", str(tmp_path / "runs"), "--epochs", "1", "--image-size", "16",
               "--batch-size", "6", "--set", "eval_every=0", "--set", "sample_every=0",
               *[f"--set={k}={v}" for k, v in TINY.items()]])
    assert rc == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert read_info(run)["config"]["engine"]["labels"]["column"] == "types"
