"""stackgan: conditioning augmentation (KL against its closed form, the reparameterisation), Stage-II refining
Stage-I's image, the matching-aware D loss with its mismatched pairs, the phase switch that freezes Stage-I,
a tiny set it learns, exact resume across the switch, captions (a captions file, or composed from species.csv),
the export round trip, prompts with unknown words, the tiny-CLIP text encoder and the app's text-to-image call."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engines.cli import main
from engines.config import TrainConfig
from engines.runs.export import load_export, save_export
from engines.generate.stackgan import (CondAugment, StackGAN, Stage2Generator, discriminator_loss, generator_loss,
                                       kl_loss)
from engines.labels import LabelSpec
from engines.registry import get_engine
from engines.runs.folder import checkpoint_path, read_info, read_metrics
from engines.text import (CaptionError, UnknownWordsError, WordEncoder, WordVocabulary, compose_caption,
                          read_caption_table, words)
from engines.trainer import Trainer
from helpers import checkpoint_round_trip, labelled_set as write_labelled_set

SPEC = LabelSpec(("Fire", "Grass", "Water"), "types", (("Fire", 4), ("Grass", 4), ("Water", 4)))
NAMES = ["Fire", "Water", "Grass"] * 4
CAPS = {"Fire": "a red fire pokemon", "Water": "a blue water pokemon", "Grass": "a green grass pokemon"}
TINY = {"z_dim": 8, "cond_dim": 8, "g1_width": 8, "d1_width": 8, "g2_width": 4, "d2_width": 4, "word_dim": 16,
        "text_dim": 16, "stage1_epochs": 1, "labels": SPEC.to_json()}
TRAIN_TINY = {k: v for k, v in TINY.items() if k != "labels"}
COLOUR = {"Fire": (1, -1, -1), "Water": (-1, -1, 1), "Grass": (-1, 1, -1)}


def per_image(names=NAMES):
    return [(CAPS[n], f"{n.lower()} pokemon") for n in names]


def make(size=16, seed=0, training=True, names=NAMES, **cfg):
    caps = per_image(names)
    config = StackGAN.text_config({**TINY, **cfg}, caps, SPEC.encode(names))
    torch.manual_seed(seed)
    e = StackGAN(config, size, training=training)
    if training:
        e.setup(torch.device("cpu"))
    rows = e.set_captions(caps, SPEC.encode(names))
    return e, rows


def coloured(names=NAMES, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.tensor(COLOUR[n], dtype=torch.float32).view(3, 1, 1).expand(3, size, size)
                     for n in names])
    return (0.8 * x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def test_registry_defaults_and_paper_parts():
    assert get_engine("stackgan") is StackGAN and StackGAN.conditional
    c = StackGAN.default_config()
    assert (c["z_dim"], c["cond_dim"], c["kl_weight"], c["lr"], c["betas"]) == (100, 128, 1.0, 2e-4, [0.5, 0.999])
    assert c["text_encoder"] == "gru" and c["stage1_epochs"] == 500 and c["lr_decay_every"] == 100
    e, _ = make(32)
    assert e.D1.uncond is None and e.D2.uncond is not None          # STAGE1_D: conditional logits only
    assert len(e.G2.residual) == 2 and e.G2.encoder[-3].out_channels == 4 * 4
    with torch.no_grad():
        z, t = e.latent(2, 0), torch.randn(2, 16)
        assert e.generate(z, t, stage=1).shape == (2, 3, 16, 16)   # Stage-I at half the image size
        assert e.generate(z, t, stage=2).shape == (2, 3, 32, 32)
        h = e.D2.features(torch.zeros(2, 3, 32, 32))
        assert h.shape[-2:] == (4, 4) and e.D1.features(torch.zeros(2, 3, 16, 16)).shape[-2:] == (4, 4)
    with pytest.raises(ValueError, match="power-of-two image size of 16 or more"):
        make(24)
    with pytest.raises(ValueError, match="text_encoder must be one of gru, mean, clip"):
        make(text_encoder="bert")
    with pytest.raises(ValueError, match="builds its word vocabulary from the captions"):
        StackGAN({**TINY}, 16)
    # pokelab sweep checks the settings before any data is read: stand-ins for what the data decides
    from engines.runs.export import check_engine_size

    assert check_engine_size(StackGAN, StackGAN.stand_in_config({**TINY}), 32, training=True) > 0


def test_conditioning_augmentation_kl_matches_its_closed_form():
    g = torch.Generator().manual_seed(1)
    mu, log_sigma = torch.randn(5, 7, generator=g), 0.5 * torch.randn(5, 7, generator=g)
    want = torch.distributions.kl_divergence(torch.distributions.Normal(mu, log_sigma.exp()),
                                             torch.distributions.Normal(0.0, 1.0)).mean()
    assert torch.allclose(kl_loss(mu, log_sigma), want, atol=1e-6)
    # by hand for one dimension: log(1/sigma) + (sigma^2 + mu^2 - 1) / 2
    m, s = 0.7, 1.8
    assert math.isclose(float(kl_loss(torch.tensor([[m]]), torch.tensor([[math.log(s)]]))),
                        math.log(1 / s) + (s * s + m * m - 1) / 2, rel_tol=1e-6)
    assert float(kl_loss(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0   # N(0, I) itself


def test_reparameterisation_shape_and_gradients():
    torch.manual_seed(0)
    ca = CondAugment(6, 4)
    t = torch.randn(3, 6, requires_grad=True)
    eps = torch.randn(3, 4)
    c, mu, log_sigma = ca(t, eps)
    assert c.shape == mu.shape == log_sigma.shape == (3, 4)
    assert torch.allclose(c, mu + log_sigma.exp() * eps)                  # c = mu + sigma * eps
    assert torch.equal(ca(t, torch.zeros(3, 4))[0], mu)
    c.sum().backward()                                                   # gradients reach the text and the fc
    assert t.grad.abs().sum() > 0 and ca.fc.weight.grad.abs().sum() > 0
    # eps drawn inside: the spread of c around mu is sigma
    with torch.no_grad():
        draws = torch.stack([ca(t[:1])[0] for _ in range(4000)])
        assert torch.allclose(draws.std(0), log_sigma[:1].exp(), rtol=0.08)


def test_stage2_consumes_stage1_output():
    torch.manual_seed(0)
    g2 = Stage2Generator(text_dim=6, cond_dim=4, width=4, res_blocks=2, size=32)
    img1 = torch.rand(2, 3, 16, 16, requires_grad=True) * 2 - 1
    img1.retain_grad()
    out, mu, _ = g2(img1, torch.randn(2, 6), torch.zeros(2, 4))
    assert out.shape == (2, 3, 32, 32) and mu.shape == (2, 4)
    out.sum().backward()
    assert img1.grad.abs().sum() > 0                                    # Stage-II reads Stage-I's image
    # inside the engine: a change in Stage-I changes Stage-II's images (batch statistics: an untrained net's
    # running statistics would shrink everything towards 0)
    e, _ = make(16)
    with torch.no_grad():
        z, t = e.latent(3, 2), torch.randn(3, 16)
        before = e.generate(z, t, stage=2)
        e.G1.img[0].weight.mul_(3)
        assert (e.generate(z, t, stage=2) - before).abs().max() > 1e-3


class LinearD:
    """A stand-in discriminator: features are the images, the conditional logit of an image and a caption
    vector is image[0] * text[0], the unconditional one image[1]."""
    def __init__(self, uncond):
        self.uncond = True if uncond else None

    def features(self, x):
        return x

    def embed(self, t):
        return t

    def cond_logits(self, h, code):
        return h[:, 0] * code[:, 0]

    def uncond_logits(self, h):
        return h[:, 1]


def test_matching_aware_d_loss_includes_the_mismatched_pairs():
    real = torch.tensor([[2.0, 1.0], [-1.0, 3.0], [0.5, -2.0]])
    fake = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-3.0, 1.0]])
    text = torch.tensor([[1.0], [2.0], [-1.0]])
    sp = F.softplus
    real_l, fake_l = real[:, 0] * text[:, 0], fake[:, 0] * text[:, 0]
    wrong_l = real[:2, 0] * text[1:, 0]                    # image i with caption i + 1 (the reference's shift)
    out = discriminator_loss(LinearD(False), real, fake, text)
    want = sp(-real_l).mean() + (sp(fake_l).mean() + sp(wrong_l).mean()) / 2   # STAGE1_D
    assert torch.allclose(out["loss"], want) and torch.allclose(out["wrong"], sp(wrong_l).mean())
    out2 = discriminator_loss(LinearD(True), real, fake, text)
    want2 = ((sp(-real_l).mean() + sp(-real[:, 1]).mean()) / 2
             + (sp(fake_l).mean() + sp(wrong_l).mean() + sp(fake[:, 1]).mean()) / 3)   # STAGE2_D
    assert torch.allclose(out2["loss"], want2)
    # the mismatched term is what changes when only the pairing changes: swap two captions of the real images
    swapped = text[[1, 0, 2]]
    a, b = discriminator_loss(LinearD(False), real, fake, text), discriminator_loss(LinearD(False), real, fake, swapped)
    assert not torch.allclose(a["wrong"], b["wrong"])
    # G: the fake's conditional (+ unconditional) logits towards real
    assert torch.allclose(generator_loss(LinearD(True), fake, text), sp(-fake_l).mean() + sp(-fake[:, 1]).mean())


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_phase_switch_freezes_stage1():
    e, rows = make(16, lr_decay_every=1)
    x = coloured()
    e.start_epoch(1, 3)
    g1, g2, text, d1 = snapshot(e.G1), snapshot(e.G2), snapshot(e.text), snapshot(e.D1)
    out = e.train_step((x, rows))
    assert float(out["stage"]) == 1
    assert not same(g1, snapshot(e.G1)) and not same(text, snapshot(e.text)) and same(g2, snapshot(e.G2))
    assert next(iter(e.optimizers)) == "G1"
    e.start_epoch(2, 3)                                                   # stage1_epochs = 1: phase 2
    assert e.phase == 2 and bool(e.G2.active) and next(iter(e.optimizers)) == "G2"
    assert not any(p.requires_grad for p in [*e.G1.parameters(), *e.text.parameters()])
    e.train()
    assert not e.G1.training and not e.text.training and e.G2.training    # Stage-I stays in eval mode
    g1, text, d1, g2 = snapshot(e.G1), snapshot(e.text), snapshot(e.D1), snapshot(e.G2)
    d2 = snapshot(e.D2)
    for _ in range(2):
        out = e.train_step((x, rows))
    assert float(out["stage"]) == 2
    assert same(g1, snapshot(e.G1)) and same(text, snapshot(e.text)) and same(d1, snapshot(e.D1))
    assert not same(g2, snapshot(e.G2)) and not same(d2, snapshot(e.D2))
    # each phase's lr halves every lr_decay_every epochs of the phase
    e.start_epoch(3, 3)
    assert e.optimizers["G2"].param_groups[0]["lr"] == 1e-4 and e.optimizers["G1"].param_groups[0]["lr"] == 2e-4
    # samples: Stage-II's once it has trained; before, Stage-I's at the image size (nearest)
    f, _ = make(16)
    z, t = f.latent(2, 1), torch.randn(2, 16)
    with torch.no_grad():
        f.eval()
        assert torch.equal(f.generate(z, t), F.interpolate(f.generate(z, t, stage=1), size=16, mode="nearest"))


def overfit(steps):
    e, rows = make(16, lr=2e-3)
    e.start_epoch(1, 2)
    x = coloured()
    outs = [e.train_step((x, rows)) for _ in range(steps)]
    return e, outs


def mean_of(outs, key, part):
    v = [float(o[key]) for o in outs]
    return sum(v[:10]) / 10 if part == "first" else sum(v[-10:]) / 10


def test_tiny_overfit_lowers_the_d_loss_and_learns_the_captions():
    e, outs = overfit(120)
    assert mean_of(outs, "loss/D", "last") < mean_of(outs, "loss/D", "first") - 0.3
    # D learns to refuse real images with another image's caption: the word encoder's vectors became informative
    assert mean_of(outs, "loss/D_wrong", "last") < 0.2 < mean_of(outs, "loss/D_wrong", "first")
    red = e.sample(n=16, seed=5, prompt="a red fire pokemon").mean((0, 2, 3))
    blue = e.sample(n=16, seed=5, prompt="a blue water pokemon").mean((0, 2, 3))
    assert red[0] - red[2] > 0.3 and blue[2] - blue[0] > 0.3, (red, blue)


@pytest.mark.slow
def test_tiny_overfit_follows_all_three_captions():
    e, _ = overfit(300)
    for name, channel in (("Fire", 0), ("Grass", 1), ("Water", 2)):
        rgb = e.sample(n=16, seed=5, prompt=CAPS[name]).mean((0, 2, 3))
        assert int(rgb.argmax()) == channel, (name, rgb)


def test_sampling_reproducible_by_seed_and_prompt():
    e, _ = make(16)
    a = e.sample(n=4, seed=3, prompt="a blue water pokemon")
    assert torch.equal(a, e.sample(n=4, seed=3, prompt="a blue water pokemon"))
    assert not torch.equal(a, e.sample(n=4, seed=3, prompt="a red fire pokemon"))
    # no prompt: a training caption drawn by each latent, so image i alone is image i of a batch
    caps = e.prompts_for(e.latent(6, 9))
    assert all(c in {t for cs in per_image() for t in cs} for c in caps)
    many = e.sample(n=6, seed=9, batch_size=4)
    assert torch.allclose(many[5:], e.sample(z=e.latent(6, 9)[5:]), atol=1e-6)
    assert torch.allclose(many[5:], e.sample(z=e.latent(6, 9)[5:], prompt=caps[5]), atol=1e-6)
    # labels pick captions of images with those labels
    assert set(e.prompts_for(e.latent(20, 1), labels="Water")) == {CAPS["Water"], "water pokemon"}
    with pytest.raises(ValueError, match="a prompt or labels, not both"):
        e.sample(n=1, prompt="a red fire pokemon", labels="Fire")
    walk = e.interpolate(1, 2, frames=4, prompt="a red fire pokemon")
    assert torch.allclose(walk[0], e.sample(n=1, seed=1, prompt="a red fire pokemon")[0], atol=1e-5)
    ends = e.interpolate_prompts(4, "a red fire pokemon", "a blue water pokemon", frames=3)
    assert torch.allclose(ends[2], e.sample(n=1, seed=4, prompt="a blue water pokemon")[0], atol=1e-5)


def test_words_vocabulary_and_encoder_padding():
    assert words("A Grass and Poison type Pokémon, 6.9 kg") == ["a", "grass", "and", "poison", "type", "pokemon",
                                                                "6", ".", "9", "kg"]
    v = WordVocabulary.build(["a fire pokemon", "a water pokemon", "a pokemon 12 kg"])
    assert v.words == ("a", "pokemon", "1", "2", "fire", "kg", "water")  # by count, then alphabetical
    assert v.split("a FIRE thing 21") == ([1, 5, 4, 3], ["thing"])
    torch.manual_seed(0)
    for kind in ("gru", "mean"):
        enc = WordEncoder(len(v), 5, 6, kind)
        ids, lengths = v.encode(["a fire pokemon", "a water pokemon 12 kg"], max_words=10)
        both = enc(ids, lengths)
        alone = enc(*v.encode(["a fire pokemon"], max_words=10))
        assert torch.allclose(both[0], alone[0], atol=1e-6)              # padding changes nothing
    # the two-GRU layout computes what a packed bidirectional GRU computes
    enc = WordEncoder(len(v), 5, 6, "gru")
    bi = torch.nn.GRU(5, 3, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for d, rnn in (("", enc.forward_rnn), ("_reverse", enc.backward_rnn)):
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                getattr(bi, name + d).copy_(getattr(rnn, name))
        ids, lengths = v.encode(["a fire pokemon", "a water pokemon 12 kg"], max_words=10)
        packed = torch.nn.utils.rnn.pack_padded_sequence(enc.embed(ids), lengths, batch_first=True,
                                                         enforce_sorted=False)
        _, h = bi(packed)
        assert torch.allclose(enc(ids, lengths), torch.cat([h[0], h[1]], 1), atol=1e-6)


def test_unknown_words_in_a_prompt():
    e, _ = make(16)
    with pytest.raises(UnknownWordsError, match=r"has no word this text encoder knows \(unknown: 'zzz', 'dragon'\)"):
        e.sample(n=2, prompt="zzz dragon")
    assert e.prompt_notes("a red dragon") == ["unknown words left out: dragon"]
    assert torch.equal(e.sample(n=2, seed=1, prompt="a red dragon"), e.sample(n=2, seed=1, prompt="a red"))


# ---- captions ------------------------------------------------------------------------------------------------------
def test_composed_captions_and_captions_files(tmp_path):
    row = {"id": "1", "name": "Bulbasaur", "types": "Grass|Poison", "generation": "1", "egg_groups": "Monster|Grass",
           "weight_kg": "6.9"}
    assert compose_caption(row, ["types", "egg_groups", "weight_kg"]) == \
        "a Grass and Poison type Pokémon of the Monster and Grass egg groups, 6.9 kg"
    assert compose_caption({"types": "Ice", "egg_groups": "Undiscovered"}, ["types", "egg_groups"]) == \
        "an Ice type Pokémon of the Undiscovered egg group"
    (tmp_path / "species.csv").write_text("id,name,types,generation,egg_groups,weight_kg\n"
                                          "1,Bulbasaur,Grass|Poison,1,Monster|Grass,6.9\n4,Charmander,Fire,1,,8.5\n")
    t = read_caption_table(tmp_path / "species.csv")          # auto: species.csv's types, egg groups, weight
    assert t.kind == "composed" and t.columns == ("types", "egg_groups", "weight_kg")
    assert t.rows["4"] == ("a Fire type Pokémon, 8.5 kg",)
    assert read_caption_table(tmp_path / "species.csv", "generation,name").rows["1"] == \
        ("from generation 1 named Bulbasaur",)
    with pytest.raises(CaptionError, match="caption_columns colour not in the file"):
        read_caption_table(tmp_path / "species.csv", "colour")
    (tmp_path / "captions.csv").write_text('id,caption\n1,"a green\nseed monster"\n1,a toad with a bulb\n'
                                           '4,a fire lizard\n')
    c = read_caption_table(tmp_path / "captions.csv")
    assert c.kind == "captions" and c.rows == {"1": ("a green seed monster", "a toad with a bulb"),
                                               "4": ("a fire lizard",)}
    with pytest.raises(CaptionError, match="no such captions file"):
        read_caption_table(tmp_path / "nope.csv")


@pytest.fixture
def labelled_set(tmp_path):
    return write_labelled_set(tmp_path, NAMES[:3], 12, columns=("egg_groups", "weight_kg"),
                              values=lambda i: ("Monster|Field", f"{i * 1.5}"))


def tcfg(epochs, **engine):
    return TrainConfig(image_size=16, batch_size=4, epochs=epochs, sample_every=epochs, eval_every=0, grid_n=4,
                       checkpoint_every=1, engine={**TRAIN_TINY, **engine})


def test_trainer_composes_captions_and_feeds_caption_rows(tmp_path, labelled_set):
    t = Trainer("stackgan", labelled_set, tmp_path / "runs", tcfg(2), progress=False)
    seen = []
    real_step = t.engine.train_step

    def spy(batch):
        seen.append(batch)
        return real_step(batch)

    t.engine.train_step = spy
    run = t.fit()
    assert len(seen) == 6 and all(b[1].shape == (4, 2) for b in seen)
    # each row is the image's own caption: red pictures get Fire captions
    table_ids = t.engine._table["ids"]
    for x, rows in seen:
        for img, (first, count) in zip(x, rows.tolist()):
            assert count == 1
            text = " ".join(t.engine.vocab.words[i - 1] for i in table_ids[first].tolist() if i)
            assert ("fire" in text) == bool(img[0].mean() > 0.5 and img[2].mean() < -0.5)
    info = read_info(run)
    ec = info["config"]["engine"]
    assert ec["caption_source"]["kind"] == "composed" and ec["caption_source"]["file"].endswith("species.csv")
    assert "monster" in ec["text_vocabulary"] and ec["caption_bank"][0] == 12
    assert info["engine_info"]["captions"]["captions"] == 12
    stages = [r["stage"] for r in read_metrics(run).train]
    assert stages == [1.0, 2.0]
    for name in ("epoch_000002.png", "stage1_epoch_000002.png", "by_label_epoch_000002.png"):
        assert (run / "samples" / name).is_file()
    cfg = json.loads((run / "export" / "config.json").read_text())
    assert cfg["extra"]["text"]["stage"] == 2 and "text" in cfg["extra"]["supports"]
    assert cfg["extra"]["text"]["examples"][0].endswith("kg")


def test_trainer_with_a_captions_file(tmp_path, labelled_set):
    lines = ["id,caption"] + [f"{i},picture {i} of a {NAMES[i % 3].lower()} monster" for i in range(1, 13)] \
        + [f"{i},another {NAMES[i % 3].lower()} one" for i in range(1, 13, 2)] + ["99,nobody"]
    (tmp_path / "captions.csv").write_text("\n".join(lines) + "\n")
    run = Trainer("stackgan", labelled_set, tmp_path / "runs",
                  tcfg(1, captions=str(tmp_path / "captions.csv")), progress=False).fit()
    info = read_info(run)
    rep = info["engine_info"]["captions"]
    assert rep["kind"] == "captions" and rep["captions"] == 18 and rep["unmatched_names"] == ["99"]
    assert "another" in info["config"]["engine"]["text_vocabulary"]
    (tmp_path / "few.csv").write_text("id,caption\n1,only one\n")
    with pytest.raises(CaptionError, match=r"11 training image\(s\) have no caption: 2.png, 3.png, 4.png"):
        Trainer("stackgan", labelled_set, tmp_path / "runs", tcfg(1, captions=str(tmp_path / "few.csv")),
                progress=False)


def test_exact_resume_across_the_phase_switch(tmp_path, labelled_set):
    straight = Trainer("stackgan", labelled_set, tmp_path / "a", tcfg(3), progress=False).fit()
    first = Trainer("stackgan", labelled_set, tmp_path / "b", tcfg(1), progress=False).fit()
    assert read_info(first)["status"] == "finished"
    r = Trainer.resume(first, epochs=3, progress=False)
    assert r.engine.phase == 1                       # the checkpoint of epoch 1: still Stage-I
    r.fit()
    a = torch.load(checkpoint_path(straight), weights_only=True)["engine"]
    b = torch.load(checkpoint_path(first), weights_only=True)["engine"]
    assert a["modules"].keys() == b["modules"].keys()
    for k in a["modules"]:
        assert torch.equal(a["modules"][k], b["modules"][k]), k
    for name in ("G1", "D1", "G2", "D2"):
        sa, sb = a["optimizers"][name]["state"], b["optimizers"][name]["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    ma, mb = read_metrics(straight).train, read_metrics(first).train
    assert [m["loss/D"] for m in ma] == [m["loss/D"] for m in mb] and [m["stage"] for m in mb] == [1.0, 2.0, 2.0]
    # the captions are part of the run: a changed file is refused on resume
    csv = tmp_path / "species.csv"
    csv.write_text(csv.read_text().replace("mon3,Fire,Monster|Field,4.5", "mon3,Fire,Monster|Field,4.7"))
    with pytest.raises(CaptionError, match="the captions changed since the run started"):
        Trainer.resume(first, epochs=4, progress=False)


def test_in_engine_resume_is_bit_identical():
    a, rows = make(16)
    x = coloured()
    a.start_epoch(2, 3)                              # phase 2
    a.train_step((x, rows))
    state, rng = checkpoint_round_trip(a), torch.get_rng_state()
    outs_a = [a.train_step((x, rows)) for _ in range(2)]
    b, rows_b = make(16, seed=7)
    b.load_state_dict_full(state)                    # the phase comes from the checkpoint (G2.active)
    assert b.phase == 2 and not any(p.requires_grad for p in b.G1.parameters())
    torch.set_rng_state(rng)
    outs_b = [b.train_step((x, rows_b)) for _ in range(2)]
    for oa, ob in zip(outs_a, outs_b):
        assert all(torch.equal(oa[k], ob[k]) for k in oa)
    assert same(snapshot(a), snapshot(b))


def test_export_round_trip(tmp_path):
    e, rows = make(16)
    e.start_epoch(2, 2)
    e.train_step((coloured(), rows))
    save_export(e, tmp_path / "export")
    cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert cfg["engine_config"]["text_vocabulary"] == list(e.vocab.words)
    f = load_export(tmp_path / "export")
    assert not hasattr(f, "D1") and f.phase == 2 and f.bank.texts == e.bank.texts
    for kw in ({"prompt": "a blue water pokemon"}, {}, {"labels": "Fire"}, {"stage": 1}):
        assert torch.allclose(f.sample(n=3, seed=2, **kw), e.sample(n=3, seed=2, **kw), atol=1e-6), kw
    for key, value, msg in (("caption_bank", [3, "x"], r"caption_bank must be \[captions, bytes\]"),
                            ("text_vocabulary", "abc", "a word vocabulary must be a non-empty list of words"),
                            ("caption_bank", [10**9, 1], "larger than any engine setting")):
        bad = {**cfg, "engine_config": {**cfg["engine_config"], key: value}}
        (tmp_path / "export" / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=msg):
            load_export(tmp_path / "export")


def test_sample_cli_with_a_prompt(tmp_path, labelled_set, capsys):
    run = Trainer("stackgan", labelled_set, tmp_path / "runs", tcfg(1), progress=False).fit()
    out = tmp_path / "x.png"
    assert main(["sample", str(run), "--n", "4", "--prompt", "a Fire type pokemon", "--out", str(out)]) == 0
    assert Image.open(out).size == (2 * 18 + 2, 2 * 18 + 2)
    bad = tmp_path / "bad.png"
    assert main(["sample", str(run), "--prompt", "zzz dragon", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "has no word this text encoder knows (unknown: 'zzz', 'dragon')" in err and not bad.exists()
    assert main(["sample", str(run), "--prompt", "a dragon of fire", "--out", str(bad)]) == 0
    assert "note: unknown words left out: dragon" in capsys.readouterr().err


# ---- the tiny CLIP text encoder ---------------------------------------------------------------------------------
def build_tiny_clip(folder):
    """A CLIP text model with tiny sizes and a BPE tokenizer from a small vocabulary and merges written here."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    ws = ["a", "red", "blue", "green", "fire", "water", "grass", "pokemon"]
    chars = sorted(set("".join(ws)))
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    merges, seen = ["#version: 0.2"], set()
    for w in ws:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            m = f"{parts[0]} {parts[1]}"
            if m not in seen:
                seen.add(m)
                merges.append(m)
                if parts[0] + parts[1] not in vocab:
                    vocab.append(parts[0] + parts[1])
            parts = [parts[0] + parts[1]] + parts[2:]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=24, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)).save_pretrained(folder)
    return folder


def test_tiny_clip_text_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = build_tiny_clip(tmp_path / "clip")
    e, rows = make(16, text_encoder="clip", clip_model=str(clip))
    assert e.config["text_dim"] == 24 and e.config["text_vocabulary"] is None and e.vocab is None
    assert not list(e.text.parameters())                               # frozen, outside the state
    before = e.encode_prompts(["a red fire pokemon"])
    e.start_epoch(1, 2)
    out = [e.train_step((coloured(), rows)) for _ in range(3)]
    assert all(math.isfinite(float(o["loss/D"])) for o in out)
    assert torch.equal(before, e.encode_prompts(["a red fire pokemon"]))   # CLIP is not trained
    assert not torch.equal(before, e.encode_prompts(["a blue water pokemon"]))
    save_export(e, tmp_path / "export")
    f = load_export(tmp_path / "export")
    assert torch.allclose(f.sample(n=2, seed=1, prompt="a green grass pokemon"),
                          e.sample(n=2, seed=1, prompt="a green grass pokemon"), atol=1e-6)
    assert f.export_info["extra"]["text"]["clip_model"] == str(clip)
    with pytest.raises(CaptionError, match="cannot load the CLIP text encoder"):
        make(16, text_encoder="clip", clip_model=str(tmp_path / "no-such-clip"))


# ---- the app -----------------------------------------------------------------------------------------------------
def test_app_text_to_image_with_a_stackgan_export(tmp_path):
    from app.exports import ExportCatalog
    from app.inputs import AppInputError
    from app import text_to_image as t2i

    e, rows = make(16)
    e.start_epoch(2, 2)
    e.train_step((coloured(), rows))
    save_export(e, tmp_path / "ck" / "sg", trained={"run_id": "test-sg", "epochs": 2, "steps": 2, "image_size": 16,
                                                   "dataset": {"name": "tiny", "count": 12}})
    cat = ExportCatalog([tmp_path / "ck"])
    assert [x.key for x in t2i.text_exports(cat)] == ["sg"]
    eng = cat.engine("sg")
    r = t2i.generate(eng, "a blue water pokemon", seed=3, count=4)
    assert r.final.shape == (4, 3, 16, 16) and r.stage1.shape == (4, 3, 8, 8) and r.seeds == [3, 4, 5, 6]
    one = t2i.generate(eng, "a blue water pokemon", seed=5, count=1)
    assert torch.equal(r.final[2], one.final[0])                     # image i of seed s is the image of seed s + i
    grid = t2i.picture(r, min_side=64)
    assert grid.shape[0] >= 2 * 64 and grid.shape[2] == 3            # Stage-I row over the final row
    with pytest.raises(AppInputError, match="has no word this text encoder knows"):
        t2i.generate(eng, "zzz", seed=0, count=2)
    with pytest.raises(AppInputError, match="prompt is empty"):
        t2i.generate(eng, "   ", seed=0, count=2)
    r2 = t2i.generate(eng, "a blue dragon", seed=0, count=1)
    assert r2.notes == ["unknown words left out: dragon"]


@pytest.fixture
def app_exports(tmp_path):
    from test_app_support import make_export, write_image_folder

    data = write_image_folder(tmp_path / "data" / "tinyset", n=4, size=32)
    make_export(tmp_path / "ck" / "dc", "dcgan", 32, 8, 0, data)
    e, rows = make(16)
    e.start_epoch(2, 2)
    e.train_step((coloured(), rows))
    save_export(e, tmp_path / "ck" / "sg", trained={"run_id": "test-sg", "epochs": 2, "image_size": 16})
    return ["--checkpoints", str(tmp_path / "ck"), "--no-shipped", "--review-db", str(tmp_path / "r.sqlite"),
            "--sd-model", str(tmp_path / "no-sd")]


def test_app_tab_picks_the_engine_and_calls_it_with_a_prompt(app_exports):
    """The Text-to-image tab: SD first, then the text exports; the engine change swaps SD's controls for the
    image count; the handler makes the grid for a prompt."""
    from app.inputs import AppInputError
    from app.main import create_app

    app = create_app(app_exports)
    try:
        choices = app.t2i_choices()
        assert choices[0][1] == "sd" and [v for _, v in choices[1:]] == ["export:sg"]   # dcgan takes no prompt
        facts, count, btn_gan, btn_sd, *sd_parts = app.on_t2i_engine_change("export:sg")
        assert count["visible"] and btn_gan["visible"] and not btn_sd["visible"]
        assert all(u["visible"] is False for u in sd_parts) and "text encoder **gru**" in facts["value"]
        assert app.on_t2i_engine_change("sd")[3]["visible"] is True
        grid, info = app.text_to_image_gan("export:sg", "a blue water pokemon", 3, 2)
        assert grid.shape[0] == 2 * 128 + 3 * 2 and "seeds 3–4" in info and "Stage-II (16 px)" in info
        with pytest.raises(AppInputError, match="does not take a prompt"):
            app.text_to_image_gan("dc", "a cat", 0, 1)
        with pytest.raises(AppInputError, match="has no word this text encoder knows"):
            app.text_to_image_gan("sg", "zzz", 0, 1)
    finally:
        app.close()


@pytest.mark.slow
def test_app_text_to_image_gan_through_gradio_client(app_exports):
    from gradio_client.exceptions import AppError

    from test_app_support import RunningApp

    running = RunningApp(app_exports)
    try:
        path, info = running.client.predict("sg", "a red dragon pokemon", 0, 1, api_name="/text_to_image_gan")
        assert np.asarray(Image.open(path)).shape[0] == 2 * 128 + 3 * 2 and "unknown words left out: dragon" in info
        with pytest.raises(AppError, match="has no word this text encoder knows"):
            running.client.predict("sg", "zzz", 0, 1, api_name="/text_to_image_gan")
    finally:
        running.close()
