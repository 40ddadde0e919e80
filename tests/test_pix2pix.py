"""pix2pix (engines/translate/pix2pix.py), paired data (engines/paired.py) and the paired evaluation
(engines/metrics/paired_eval.py, `pokelab eval-paired`)."""
import json
import math
import types

import numpy as np
import pytest
import torch
from PIL import Image

from engines.cli import main as cli
from engines.config import TrainConfig
from engines.runs.export import load_export, save_export
from engines.paired import PairedSplit, PairingError, held_out_subset, picture_id, split_ids
from engines.registry import get_engine
from engines.runs.folder import list_samples, read_info, read_metrics
from engines.trainer import Trainer, TrainingError
from engines.translate.pix2pix import (Pix2Pix, UnetGenerator, auto_n_down, dropout_stages, patch_map_side,
                                       receptive_field)
from helpers import Killed, kill_at_step

TINY = {"ngf": 8, "ndf": 8}


def pictures(seed, n, size=32):
    """Smooth pictures (bilinear blow-ups of 4x4 noise): a tiny U-Net can learn a map between such sets."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bilinear")
    return (x * 255).round().to(torch.uint8)


def target_of(x):
    """The true translation of the test task: colours inverted and the picture mirrored."""
    return (255 - x).flip(-1)


def domain(name, images, files):
    return types.SimpleNamespace(images=images, key=f"key-{name}", name=name, source="/nowhere", skipped=[],
                                 background="white", files=list(files))


def paired_domains(n=12, size=32, extra_source=(), extra_target=(), seed=0):
    """Sources 1..n and their targets (stored in reverse order, with upper-case names), plus unpaired files."""
    src = pictures(seed, n + len(extra_source), size)
    a = domain("sprites", src, [f"{i + 1}.png" for i in range(n)] + list(extra_source))
    tgt = target_of(src[:n]).flip(0)
    extra = pictures(seed + 1, len(extra_target), size) if extra_target else tgt[:0]
    b = domain("art", torch.cat([tgt, extra]), [f"art/{i}.PNG" for i in range(n, 0, -1)] + list(extra_target))
    return a, b


def tiny_cfg(**kw):
    cfg = TrainConfig.for_engine(get_engine("pix2pix"))
    cfg.image_size, cfg.epochs, cfg.eval_every, cfg.sample_every = 32, 3, 0, 3
    cfg.engine = dict(TINY, val_fraction=0.25)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


# ---- pairing and the held-out split ---------------------------------------------------------------
def test_pairing_reports_unpaired_files_by_name_and_refuses_what_cannot_be_paired():
    a, b = paired_domains(8, extra_source=["sub/99.png", "zubat.png"], extra_target=["1000.png"])
    sp = PairedSplit.from_datasets(a, b, val_fraction=0.25, split_seed=0)
    assert sp.unpaired_source == ["sub/99.png", "zubat.png"] and sp.unpaired_target == ["1000.png"]
    rep = sp.report()
    assert "paired 8 picture(s) by id" in rep and "6 for training, 2 held out" in rep
    for name in ("sub/99.png", "zubat.png", "1000.png"):
        assert f"    {name}" in rep
    rec = sp.record()
    assert (rec["pairs"], rec["train"], rec["val"], rec["unpaired_source"], rec["unpaired_target"]) == (8, 6, 2, 2, 1)
    assert rec["unpaired_source_files"] == ["sub/99.png", "zubat.png"] and rec["val_ids"] == sp.val_ids
    # the pairs are aligned: target row = the true translation of source row, in the train and held-out parts
    for s, t in ((sp.train_src, sp.train_tgt), (sp.val_src, sp.val_tgt)):
        assert torch.equal(b.images[t], target_of(a.images[s]))
    assert picture_id("Art/25.PNG") == picture_id("25.png") == "25"

    with pytest.raises(PairingError, match="no pairs: none of the 3 source picture"):
        PairedSplit.from_datasets(domain("a", pictures(0, 3), ["a.png", "b.png", "c.png"]),
                                  domain("b", pictures(1, 2), ["x.png", "y.png"]))
    with pytest.raises(PairingError, match=r"share an id .*'1': 1.png, x/1.jpg"):
        PairedSplit.from_datasets(domain("a", pictures(0, 2), ["1.png", "x/1.jpg"]), b)
    with pytest.raises(PairingError, match="no file names to pair by"):
        PairedSplit.from_datasets(domain("a", pictures(0, 2), []), b)
    with pytest.raises(PairingError, match=r"val_fraction must be in \[0, 1\)"):
        PairedSplit.from_datasets(a, b, val_fraction=1.0)
    with pytest.raises(PairingError, match="leaves no training pair"):
        split_ids(["1", "2"], 0.9, 0)


def test_split_is_reproducible_by_seed_disjoint_and_independent_of_file_order():
    ids = [str(i) for i in range(1, 650)]
    train, val = split_ids(ids, 0.1, seed=0)
    assert len(val) == 65 and len(train) == 584 and not set(train) & set(val) and set(train) | set(val) == set(ids)
    assert (train, val) == split_ids(list(reversed(ids)), 0.1, seed=0)  # file order does not matter
    assert split_ids(ids, 0.1, seed=1)[1] != val                         # another seed, other ids
    assert split_ids(ids, 0.0, seed=0) == (sorted(ids, key=int), [])
    assert len(split_ids(ids[:5], 0.01, seed=0)[1]) == 1                 # a fraction above 0 holds out one at least


def test_trainer_trains_only_on_training_pairs_and_shuffles_them_together(tmp_path, capsys):
    a, b = paired_domains(12, extra_source=["151.png"], extra_target=["mew.png"])
    t = Trainer("pix2pix", (a, b), tmp_path, tiny_cfg(epochs=2, sample_every=2), progress=False)
    assert "151.png" in capsys.readouterr().err  # the unpaired picture is named on the terminal
    seen = []
    real = t.engine.train_step

    def step(batch):
        seen.append([x.clone() for x in batch])
        return real(batch)

    t.engine.train_step = step
    t.fit()
    val = set(t.pairing.val_ids)
    held = {tuple(a.images[i].flatten()[:16].tolist()) for i in t.pairing.val_src.tolist()}
    firsts = []
    for x, y in seen:  # every batch: targets are the true translations of its inputs (the pairs survive shuffling)
        xs, ys = [((v + 1) * 127.5).round().to(torch.uint8) for v in (x, y)]
        assert torch.equal(ys, target_of(xs))
        for img in xs:
            assert tuple(img.flatten()[:16].tolist()) not in held  # never a held-out pair
        firsts.append(tuple(xs[0].flatten()[:8].tolist()))
    assert len(seen) == 2 * (9 // 4) and len(set(firsts)) > 1  # 9 training pairs, batch 4; shuffled per epoch
    info = read_info(t.run_dir)
    assert info["pairing"]["val_ids"] == sorted(val, key=int)
    assert info["pairing"]["unpaired_target_files"] == ["mew.png"]
    log = (t.run_dir / "log.txt").read_text()
    assert "left out 1 source picture(s)" in log and "    151.png" in log and "    mew.png" in log
    exp = json.loads((t.run_dir / "export" / "config.json").read_text())
    assert exp["trained"]["pairing"]["val_ids"] == info["pairing"]["val_ids"] and exp["extra"]["paired"] is True
    # the grid: held-out inputs | outputs | true targets
    (ep, grid), = list_samples(t.run_dir)
    assert ep == 2 and Image.open(grid).size == (3 * 34 + 2, 3 * 34 + 2)

    with pytest.raises(TrainingError, match="fewer than one batch"):
        Trainer("pix2pix", (a, b), tmp_path, tiny_cfg(batch_size=10), progress=False)


def test_without_held_out_pairs_the_evaluation_says_it_measures_training_pairs(tmp_path):
    a, b = paired_domains(8)
    cfg = tiny_cfg(epochs=1, eval_every=1, eval_metrics="l1_target,ssim_target")
    cfg.engine["val_fraction"] = 0
    t = Trainer("pix2pix", (a, b), tmp_path, cfg, progress=False)
    t.fit()
    m = read_metrics(t.run_dir)
    assert m.eval[-1]["eval_n"] == 8 and math.isfinite(m.eval[-1]["l1/target"])
    assert any("no held-out pairs" in e.get("message", "") for e in m.events)


def test_cli_train_with_no_pairs_is_a_clear_error(tmp_path, capsys):
    for d, names in (("a", ["1", "2", "3"]), ("b", ["x", "y", "z"])):
        (tmp_path / d).mkdir()
        for k in names:
            Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / d / f"{k}.png")
    argv = ["train", "pix2pix", "--source", str(tmp_path / "a"), "--target", str(tmp_path / "b"), "--runs",
            str(tmp_path / "runs"), "--image-size", "32", "--batch-size", "1", "--no-progress"]
    assert cli(argv) == 2
    assert "no pairs: none of the 3 source picture(s)" in capsys.readouterr().err


# ---- networks ------------------------------------------------------------------------------------
def test_unet_depth_follows_the_size_and_every_decoder_stage_takes_its_skip():
    assert [auto_n_down(s) for s in (16, 32, 64, 128, 256, 512, 96)] == [4, 5, 6, 7, 8, 8, 5]
    assert dropout_stages(8) == [4, 5, 6] and dropout_stages(7) == [4, 5] and dropout_stages(6) == [4]
    assert dropout_stages(5) == [3] and dropout_stages(5, 0) == [] and dropout_stages(8, 2) == [5, 6]
    with pytest.raises(ValueError, match="dropout_blocks must be between 0 and 3"):
        dropout_stages(5, 4)
    g = UnetGenerator(64, ngf=4)
    assert g.n_down == 6 and g.widths == [4, 8, 16, 32, 32, 32]
    x = torch.randn(2, 3, 64, 64)
    skips = g.encode(x)
    assert [tuple(s.shape[1:]) for s in skips] == [(4, 32, 32), (8, 16, 16), (16, 8, 8), (32, 4, 4), (32, 2, 2),
                                                   (32, 1, 1)]
    g.eval()  # no dropout: the two passes below see the same activations
    seen, outs = {}, {}  # inputs cloned before the stage runs: its first op is an in-place ReLU
    hooks = [g.up[i].register_forward_pre_hook(lambda m, inp, i=i: seen.__setitem__(i, inp[0].clone()))
             for i in range(g.n_down)]
    hooks += [g.up[i].register_forward_hook(lambda m, inp, out, i=i: outs.__setitem__(i, out))
              for i in range(g.n_down)]
    y = g(x)
    for h in hooks:
        h.remove()
    assert y.shape == x.shape and y.abs().max() <= 1
    for i in range(g.n_down):  # up[i] takes cat(down[i] output, up[i + 1] output); the innermost the bottleneck
        inp, out = seen[i], outs[i]
        c = skips[i].shape[1]
        assert inp.shape[1] == (c if i == g.n_down - 1 else 2 * c), i
        assert torch.equal(inp[:, :c], skips[i]), i  # the skip: the encoder's output of the same resolution
        if i < g.n_down - 1:
            assert torch.equal(inp[:, c:], outs[i + 1]), i
        assert tuple(out.shape[2:]) == tuple(skips[i - 1].shape[2:] if i else x.shape[2:])
    with pytest.raises(ValueError, match="divisible by 64"):
        UnetGenerator(48, n_down=6)


def test_patchgan_receptive_field_is_70_pixels_and_it_sees_input_and_output():
    d = Pix2Pix(TINY, 128).D
    assert receptive_field(d) == 70  # 1 + 3 * (1 + 2 + 4 + 8 + 8)
    assert d.net[0].in_channels == 6  # conditional: input and output concatenated
    assert [patch_map_side(s) for s in (256, 128, 64, 32)] == [30, 14, 6, 2]
    for i, m in enumerate(d.net):  # the convs alone define the patch (instance norm mixes the whole picture)
        if isinstance(m, torch.nn.InstanceNorm2d):
            d.net[i] = torch.nn.Identity()
    x = torch.randn(1, 6, 128, 128, requires_grad=True)
    out = d(x)
    assert out.shape == (1, 1, 14, 14)
    out[0, 0, 7, 7].backward()
    for ch in (slice(0, 3), slice(3, 6)):  # the verdict depends on the input picture and on the output picture
        g = x.grad[0, ch].abs().sum(0)
        rows, cols = torch.nonzero(g.sum(1)), torch.nonzero(g.sum(0))
        assert int(rows.max() - rows.min() + 1) == 70 and int(cols.max() - cols.min() + 1) == 70
    with pytest.raises(ValueError, match="no output on 16 px"):
        Pix2Pix(TINY, 16)
    with pytest.raises(ValueError, match="gan_mode must be"):
        Pix2Pix({**TINY, "gan_mode": "wgan"}, 32)


# ---- losses and training ---------------------------------------------------------------------------
def test_the_l1_term_is_weighted_by_lambda():
    torch.manual_seed(0)
    a, b = (torch.rand(2, 3, 32, 32) * 2 - 1 for _ in range(2))
    fake = torch.rand(2, 3, 32, 32) * 2 - 1
    pred = torch.randn(2, 1, 2, 2)
    l1 = (fake - b).abs().mean()
    totals = {}
    for lam in (100.0, 1.0, 0.0):
        e = Pix2Pix({**TINY, "lambda_l1": lam}, 32)
        total, parts = e.generator_loss(pred, fake, b)
        assert parts["loss/G_L1"] == pytest.approx(float(l1), rel=1e-6)
        assert parts["loss/G_GAN"] == pytest.approx(float(torch.nn.functional.softplus(-pred).mean()), rel=1e-6)
        totals[lam] = float(total)
    assert totals[100.0] - totals[1.0] == pytest.approx(99 * float(l1), rel=1e-5)
    assert totals[0.0] == pytest.approx(float(parts["loss/G_GAN"]), rel=1e-6)
    assert Pix2Pix(training=False).config["lambda_l1"] == 100.0  # the paper's lambda
    e = Pix2Pix(TINY, 32).setup(torch.device("cpu"))
    out = e.train_step((a, b))  # the logged total is the same sum
    assert float(out["loss/G"]) == pytest.approx(float(out["loss/G_GAN"]) + 100 * float(out["loss/G_L1"]), rel=1e-5)
    assert {"loss/D", "loss/G", "acc/D_real", "acc/D_fake", "loss/D_real", "loss/D_fake"} <= set(out)


@pytest.mark.parametrize("gan_mode", ["vanilla", "lsgan"])
def test_a_tiny_overfit_on_four_pairs_lowers_the_l1_loss(gan_mode):
    torch.manual_seed(0)
    fixed = {"flip": False, "resize_crop": False, "gan_mode": gan_mode, "lr": 1e-3}  # lr: a short test
    e = Pix2Pix({**TINY, **fixed}, 32).setup(torch.device("cpu"))
    x = pictures(3, 4).float() / 127.5 - 1
    y = target_of(pictures(3, 4)).float() / 127.5 - 1  # inverted and mirrored: needs the whole U-Net
    l1 = [float(e.train_step((x, y))["loss/G_L1"]) for _ in range(50)]
    assert np.mean(l1[-5:]) < 0.5 * np.mean(l1[:5]), l1[::5]  # measured (vanilla): 0.39 -> 0.15
    assert (e.translate(x) - y).abs().mean() < 0.5 * (x - y).abs().mean()


def test_aligned_augmentation_crops_and_flips_input_and_target_together():
    torch.manual_seed(1)
    e = Pix2Pix(TINY, 32)
    x = pictures(4, 16).float() / 127.5 - 1
    a, b = e.prepare_batch((x, x.clone()))
    assert not torch.equal(a, x) and torch.equal(a, b)  # augmented, and the same draw for both sides


def test_run_resumes_exactly_after_a_kill(tmp_path):
    a, b = paired_domains(12)
    ref = Trainer("pix2pix", (a, b), tmp_path / "ref", tiny_cfg(seed=3), progress=False)
    ref.fit()
    m = read_metrics(ref.run_dir).train
    assert [r["epoch"] for r in m] == [1, 2, 3]
    t = Trainer("pix2pix", (a, b), tmp_path / "cut", tiny_cfg(seed=3, checkpoint_every=1), progress=False)
    kill_at_step(t.engine, 4)  # 9 training pairs, batch 4: 2 steps per epoch, dies in epoch 2
    with pytest.raises(Killed):
        t.fit()
    r = Trainer.resume(t.run_dir, dataset=(a, b), progress=False)
    assert (r.epoch, r.step) == (1, 2) and r.pairing.val_ids == ref.pairing.val_ids
    r.fit()
    for k, v in ref.engine.state_dict().items():
        assert torch.equal(v, r.engine.state_dict()[k]), k
    assert [x["loss/G_L1"] for x in m] == [x["loss/G_L1"] for x in read_metrics(r.run_dir).train]


# ---- inference, export and the app -----------------------------------------------------------------
def test_one_direction_and_seeded_test_time_dropout():
    e = Pix2Pix(TINY, 32, training=False).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with pytest.raises(ValueError, match="translates AB, not 'BA'"):
        e.translate(x, "BA")
    with pytest.raises(ValueError, match="one way"):
        e.reconstruct(x)
    y = e.translate(x)
    assert torch.equal(y, e.translate(x))                        # seed 0 by default: reproducible
    assert torch.equal(y[1:2], e.translate(x[1:2]))              # and independent of the batch
    assert not torch.allclose(y, e.translate(x, seed=1))         # another seed, another draw of the noise
    assert not torch.allclose(e.translate(x, seed=None), e.translate(x, seed=None))  # fresh masks
    off = Pix2Pix({**TINY, "test_dropout": False}, 32, training=False)
    off.load_state_dict(e.state_dict())
    assert torch.equal(off.translate(x), off.translate(x, seed=5))  # no noise at inference
    assert not torch.allclose(off.translate(x), y)
    grid = e.sample_grid(x, targets=x)
    assert grid["nrow"] == 3 and torch.equal(grid["images"][2], grid["images"][0])  # input | output | target
    assert e.sample_grid(x)["nrow"] == 2


def test_export_round_trip_through_the_app_loader(tmp_path):
    from app import translate as tr
    from app.exports import ExportCatalog

    torch.manual_seed(0)
    e = Pix2Pix(TINY, 32, training=False)
    save_export(e, tmp_path / "ck" / "p2p")
    cfg = json.loads((tmp_path / "ck" / "p2p" / "config.json").read_text())
    assert cfg["extra"] == {"directions": ["AB"], "attention": False, "paired": True}
    back = load_export(tmp_path / "ck" / "p2p")
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(back.translate(x), e.translate(x))
    cat = ExportCatalog([tmp_path / "ck"])
    entry = cat.translator("p2p")
    assert entry.directions == ("AB",) and entry.engine_name == "pix2pix"
    res = tr.translate_picture(cat.engine(entry.key), x[0].permute(1, 2, 0).numpy())
    assert res.reconstruction is None and res.attention_overlay is None
    assert np.array_equal(res.output, ((e.translate(x[:1])[0] + 1) * 127.5).round().clamp(0, 255)
                          .to(torch.uint8).permute(1, 2, 0).numpy())
    with pytest.raises(Exception, match="direction"):
        tr.translate_picture(cat.engine(entry.key), x[0].permute(1, 2, 0).numpy(), "BA")


# ---- paired evaluation -----------------------------------------------------------------------------
def test_paired_scores_have_known_values():
    from engines.metrics.msssim import ssim
    from engines.metrics.translation import paired_scores

    x = pictures(5, 3, 40)
    same = paired_scores(x, x.clone(), ("l1_target", "ssim_target", "lpips_target"), "cpu")
    assert same == pytest.approx({"l1/target": 0.0, "ssim/target": 1.0, "lpips/target": 0.0}, abs=1e-6)
    y = (x.int() + 51).clamp(0, 255).to(torch.uint8)
    r = paired_scores(x, y, ("l1_target", "ssim_target"))
    assert r["l1/target"] == pytest.approx(float((y.int() - x.int()).abs().double().mean()) / 127.5)
    assert 0 < r["ssim/target"] < 1 and r["ssim/target"] == pytest.approx(float(ssim(x, y, 255.0).mean()))
    assert float(ssim(x, 255 - x, 255.0).mean()) < 0  # no ReLU: opposite pictures score below 0


def _write_pairs(root, n=8, size=40):
    src, tgt = pictures(7, n, size), None
    tgt = target_of(src)
    for d, imgs in (("sprites", src), ("art", tgt)):
        (root / d).mkdir(parents=True)
        for i, im in enumerate(imgs):
            Image.fromarray(im.permute(1, 2, 0).numpy()).save(root / d / f"{i + 1}.png")
    return root / "sprites", root / "art"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:FID from")
def test_eval_paired_table_on_a_tiny_run(tmp_path, capsys):
    sprites, art = _write_pairs(tmp_path / "data")
    argv = ["train", "pix2pix", "--source", str(sprites), "--target", str(art), "--runs", str(tmp_path / "runs"),
            "--image-size", "32", "--epochs", "1", "--batch-size", "2", "--set", "ngf=8", "--set", "ndf=8",
            "--set", "val_fraction=0.375", "--set", "eval_every=1", "--no-progress"]
    assert cli(argv) == 0
    run = next((tmp_path / "runs").iterdir())
    ev = read_metrics(run).eval[-1]
    assert ev["eval_n"] == 3 and ev["paired_n"] == 3  # the three held-out ids only
    for k in ("l1/target", "ssim/target", "lpips/target", "l1/target_input", "fid", "kid"):
        assert math.isfinite(ev[k]), k
    # baselines: a CycleGAN export at the run's size and one at another size (its outputs are resized)
    torch.manual_seed(0)
    for name, size in (("cg", 32), ("cg48", 48)):
        save_export(get_engine("cyclegan")({"ngf": 8, "ndf": 8, "n_blocks": 1}, size, training=False),
                    tmp_path / name)
    capsys.readouterr()
    assert cli(["eval-paired", str(run), "--baseline", str(tmp_path / "cg"), "--baseline", str(tmp_path / "cg48"),
                "--device", "cpu", "--json", "--no-log"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"]
    assert list(rows) == ["pix2pix", "do nothing (input)", "cyclegan", "cyclegan-2"] and out["pairs"] == 3
    for k in ("l1/target", "ssim/target", "lpips/target", "fid"):  # the trainer's last evaluation, same pictures
        assert rows["pix2pix"][k] == pytest.approx(ev[k], rel=1e-5, abs=1e-6), k
        assert rows["do nothing (input)"][k] == pytest.approx(ev[k + "_input" if k != "fid" else "fid_input"],
                                                              rel=1e-5, abs=1e-6), k
    # do nothing, by hand: the held-out sprites against their artworks at 32 px
    from engines.data.prepare import load_dataset

    val = read_info(run)["pairing"]["val_ids"]
    a = held_out_subset(load_dataset(sprites, size=32, progress=False), read_info(run)["pairing"])
    b = load_dataset(art, size=32, progress=False)
    truth = torch.stack([b.images[b.files.index(f"{k}.png")] for k in val])
    want = (a.images.int() - truth.int()).abs().double().mean().item() / 127.5
    assert rows["do nothing (input)"]["l1/target"] == pytest.approx(want)
    assert rows["cyclegan"]["l1/target"] != rows["cyclegan-2"]["l1/target"]

    # the table, logged into the run
    assert cli(["eval-paired", str(run), "--baseline", str(tmp_path / "cg"), "--device", "cpu",
                "--metrics", "l1_target,ssim_target,kid"]) == 0
    text = capsys.readouterr().out
    assert "translator" in text and "L1 ↓" in text and "KID×10³ ↓" in text and "LPIPS" not in text
    assert [line.split()[0] for line in text.splitlines()[2:5]] == ["pix2pix", "do", "cyclegan"]
    logged = read_metrics(run).eval[-1]
    assert logged["eval_by"] == "pokelab eval-paired" and logged["eval_split"] == "held-out"
    assert logged["l1/target"] == pytest.approx(ev["l1/target"], rel=1e-5)
    assert logged["l1/target_input"] == pytest.approx(want) and "baseline/cyclegan/kid" in logged
    assert "pokelab eval-paired:" in (run / "log.txt").read_text()

    # plain `pokelab eval` measures the held-out ids too, as the trainer did
    assert cli(["eval", str(run), "--json", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["split"] == "held-out ids (3)" and res["metrics"]["l1/target"] == pytest.approx(ev["l1/target"])

    # a run without a held-out split is refused with a reason
    cg_run = tmp_path / "cg"
    assert cli(["eval-paired", str(cg_run), "--device", "cpu"]) == 2
    assert "no held-out split is recorded" in capsys.readouterr().err


def test_registry_lists_pix2pix(capsys):
    assert cli(["engines"]) == 0
    assert any(line.startswith("pix2pix") and "translate" in line for line in capsys.readouterr().out.splitlines())
