"""The shared translation machinery (engines/translate/base.py), CycleGAN, translation metrics and the
trainer/CLI paths for two-domain engines."""
import json
import math
import types

import numpy as np
import pytest
import torch

from engines.cli import main as cli
from engines.config import TrainConfig
from engines.runs.export import load_export, save_export
from engines.registry import get_engine
from engines.runs.folder import checkpoint_path, list_samples, read_info, read_metrics
from engines.trainer import Trainer
from engines.translate.base import ImagePool, TranslationEngine, crop_margin, random_hflip, random_resized_crop
from engines.translate.cyclegan import PatchDiscriminator, ResnetGenerator
from helpers import Killed, kill_at_step

TINY = {"ngf": 8, "ndf": 8, "n_blocks": 1}


def domain(seed, name, n=12, size=32, files=None):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return types.SimpleNamespace(images=imgs, key=f"key-{name}", name=name, source="/nowhere", skipped=[],
                                 background="white", files=files or [f"{i + 1}.png" for i in range(n)])


def tiny_cfg(**kw):
    cfg = TrainConfig.for_engine(get_engine("cyclegan"))
    cfg.image_size, cfg.epochs, cfg.eval_every, cfg.sample_every = 32, 4, 0, 2
    cfg.engine = dict(TINY)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_translation_protocol_defaults():
    cfg = TrainConfig.for_engine(get_engine("cyclegan"))
    assert (cfg.batch_size, cfg.epochs, cfg.sample_every, cfg.image_size) == (4, 200, 5, 128)
    assert cfg.eval_metrics == "fid,kid,lpips,cycle,lpips_target"
    assert TrainConfig.for_engine(get_engine("dcgan")).batch_size == 64  # generation keeps its own protocol
    e = get_engine("cyclegan")(training=True)
    assert e.config["lr"] == 2e-4 and e.config["lambda_cycle"] == 10 and e.config["pool_size"] == 50


def test_resnet_generator_and_patchgan_shapes():
    g = ResnetGenerator(ngf=8, n_blocks=6)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    y = g(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert sum(isinstance(m, type(g.net[10])) for m in g.net) == 6  # six residual blocks at 128 px
    assert get_engine("cyclegan")(TINY | {"n_blocks": None}, 256, training=False).G_AB.net[10:19]
    blocks = lambda size: sum(type(m).__name__ == "ResnetBlock" for m in  # noqa: E731
                              get_engine("cyclegan")({"ngf": 4}, size, training=False).G_AB.net)
    assert blocks(128) == 6 and blocks(256) == 9
    d = PatchDiscriminator(ndf=8)
    assert d(x).shape == (2, 1, 14, 14)  # 128 px -> a 14x14 map of patch verdicts


def test_patchgan_receptive_field_is_70_pixels():
    d = PatchDiscriminator(ndf=4).eval()
    for i, m in enumerate(d.net):  # instance norm mixes the whole picture into every output; the convs alone
        if isinstance(m, torch.nn.InstanceNorm2d):  # define the patch
            d.net[i] = torch.nn.Identity()
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    out = d(x)
    out[0, 0, 7, 7].backward()  # a central patch verdict
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)))
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)))
    assert int(rows.max() - rows.min() + 1) == 70 and int(cols.max() - cols.min() + 1) == 70


def test_image_pool_mixes_history_and_round_trips():
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returned as given
    new = torch.full((200, 1, 1, 1), 9.0)
    out = pool.query(new)
    from_history = (out != 9).sum().item()
    assert 0 < from_history <= 4  # about half the draws swap, but only 4 old pictures exist
    state = pool.state_dict()
    other = ImagePool(4)
    other.load_state_dict(state)
    assert torch.equal(torch.cat(other.images), torch.cat(pool.images))
    assert torch.equal(ImagePool(0).query(new), new)  # size 0 disables the pool


def test_random_hflip_flips_about_half_and_only_mirrors():
    torch.manual_seed(0)
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(200, 3, 1, 1)
    y = random_hflip(x)
    flipped = torch.tensor([torch.equal(a, x[0].flip(-1)) for a in y])
    same = torch.tensor([torch.equal(a, x[0]) for a in y])
    assert bool((flipped | same).all()) and 60 < int(flipped.sum()) < 140


def test_resize_and_random_crop_as_the_references():
    assert crop_margin(256) == 30 and crop_margin(128) == 15 and crop_margin(64) == 8 and crop_margin(32) == 4
    for name in ("cyclegan", "ugatit", "cartoongan"):
        c = get_engine(name).default_config()
        assert c["resize_crop"] is True and c["flip"] is True, name
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g).repeat(64, 1, 1, 1) * 2 - 1
    torch.manual_seed(1)
    y = random_resized_crop(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    big = torch.nn.functional.interpolate(x[:1], size=(36, 36), mode="bicubic", align_corners=False).clamp(-1, 1)
    offsets = []
    for a in y:  # every output is one 32 x 32 window of the enlarged picture
        hit = [(i, j) for i in range(5) for j in range(5) if torch.equal(a, big[0, :, i:i + 32, j:j + 32])]
        assert len(hit) == 1
        offsets.append(hit[0])
    assert len(set(offsets)) > 10  # one draw per picture
    torch.manual_seed(1)
    assert torch.equal(random_resized_crop(x), y)  # the draws come from the global RNG (checkpointed)


def test_prepare_batch_augments_both_domains_independently():
    e = get_engine("cyclegan")(TINY, 32).setup(torch.device("cpu"))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    torch.manual_seed(0)
    a, b = e.prepare_batch((x, x.clone()))
    assert a.shape == b.shape == x.shape and not torch.equal(a, b)
    assert not any(torch.equal(a[i], x[i]) or torch.equal(a[i], x[i].flip(-1)) for i in range(4))  # not only flips
    torch.manual_seed(0)
    a2, b2 = e.prepare_batch((x, x.clone()))
    assert torch.equal(a, a2) and torch.equal(b, b2)
    off = get_engine("cyclegan")({**TINY, "resize_crop": False, "flip": False}, 32).setup(torch.device("cpu"))
    a, b = off.prepare_batch((x, x))
    assert a is x and b is x


def test_lr_is_constant_then_decays_linearly():
    e = get_engine("cyclegan")(TINY, 32)
    f = [e.lr_factor(ep, 200) for ep in range(1, 201)]
    assert f[:100] == [1.0] * 100
    assert all(a > b for a, b in zip(f[100:], f[101:])) and 0 < f[-1] < 0.02
    e.start_epoch(150, 200)
    assert e.optimizers["G"].param_groups[0]["lr"] == pytest.approx(2e-4 * (1 - 50 / 101))
    e.scale_lr(0.5)  # the NaN guard's lower lr survives the next epoch's schedule
    e.start_epoch(151, 200)
    assert e.optimizers["D"].param_groups[0]["lr"] == pytest.approx(1e-4 * (1 - 51 / 101))


def test_cyclegan_step_logs_per_direction_losses():
    torch.manual_seed(0)
    e = get_engine("cyclegan")(TINY, 32).setup(torch.device("cpu"))
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    out = e.train_step((a, b))
    for k in ("loss/G", "loss/D", "loss/D_A", "loss/D_B", "loss/G_AB", "loss/G_BA", "loss/cycle_A", "loss/cycle_B",
              "loss/idt_A", "loss/idt_B", "acc/D_real", "acc/D_fake"):
        assert torch.is_tensor(out[k]) and out[k].dim() == 0 and math.isfinite(float(out[k])), k
    assert float(out["loss/D"]) == pytest.approx(0.5 * float(out["loss/D_A"] + out["loss/D_B"]))
    no_idt = get_engine("cyclegan")(TINY | {"lambda_identity": 0}, 32).setup(torch.device("cpu"))
    assert "loss/idt_A" not in no_idt.train_step((a, b))


def test_cycle_loss_falls_on_a_tiny_overfit_set():
    torch.manual_seed(0)
    fixed = {"flip": False, "resize_crop": False}  # overfit the same pictures
    e = get_engine("cyclegan")({"ngf": 8, "ndf": 8, "n_blocks": 2, **fixed}, 32).setup(torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    # smooth pictures (bilinear blow-ups of 4x4 noise): something a tiny generator can learn to invert
    a, b = (torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4, generator=g) * 2 - 1, size=32, mode="bilinear")
            for _ in range(2))
    cyc = [float(e.train_step((a, b))["loss/cycle_A"]) for _ in range(40)]
    assert np.mean(cyc[-5:]) < 0.75 * np.mean(cyc[:5])  # measured: 0.39 -> 0.26


def test_translate_grid_and_errors():
    e = get_engine("cyclegan")(TINY, 32, training=False)
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    y = e.translate(x)
    assert y.shape == (3, 3, 32, 32) and y.dtype == torch.float32 and y.abs().max() <= 1
    assert torch.equal(e.reconstruct(x), e.translate(e.translate(x), "BA"))
    grid = e.sample_grid(x)
    assert grid["nrow"] == 3 and grid["images"].shape == (9, 3, 32, 32)
    assert torch.equal(grid["images"][0], x[0]) and torch.equal(grid["images"][3], x[1])  # one row per input
    with pytest.raises(ValueError, match="translates AB and BA, not 'XY'"):
        e.translate(x, "XY")
    with pytest.raises(ValueError, match="RGB pictures"):
        e.translate(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="translation engine"):
        e.sample(n=2)
    with pytest.raises(ValueError, match="no attention maps"):
        e.attention(x)


def test_export_round_trip_translates_identically(tmp_path):
    e = get_engine("cyclegan")(TINY, 32, training=False)
    save_export(e, tmp_path / "export")
    cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert cfg["kind"] == "translate" and cfg["extra"] == {"directions": ["AB", "BA"], "attention": False}
    back = load_export(tmp_path / "export")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(back.translate(x), e.translate(x)) and torch.equal(back.translate(x, "BA"), e.translate(x, "BA"))


def test_trainer_runs_two_domains_and_resumes_exactly_after_kill(tmp_path):
    a, b = domain(0, "sprites"), domain(1, "art")
    ref = Trainer("cyclegan", (a, b), tmp_path / "ref", tiny_cfg(seed=3), progress=False)
    ref.fit()
    info = read_info(ref.run_dir)
    assert info["kind"] == "translate" and [d["name"] for d in info["dataset"]] == ["sprites", "art"]
    assert ref.run_dir.name.endswith("cyclegan-sprites-to-art")
    m = read_metrics(ref.run_dir).train
    assert [r["epoch"] for r in m] == [1, 2, 3, 4] and m[0]["lr"] == m[1]["lr"] == 2e-4 > m[2]["lr"] > m[3]["lr"]
    assert [e for e, _ in list_samples(ref.run_dir)] == [2, 4]
    exp = json.loads((ref.run_dir / "export" / "config.json").read_text())
    assert exp["trained"]["source_dataset"]["name"] == "sprites" and exp["trained"]["dataset"]["name"] == "art"

    t = Trainer("cyclegan", (a, b), tmp_path / "cut", tiny_cfg(seed=3, checkpoint_every=1), progress=False)
    kill_at_step(t.engine, 8)  # 3 steps per epoch (12 pictures, batch 4): dies in epoch 3
    with pytest.raises(Killed):
        t.fit()
    r = Trainer.resume(t.run_dir, dataset=(a, b), progress=False)
    assert (r.epoch, r.step) == (2, 6)
    r.fit()
    for k, v in ref.engine.state_dict().items():
        assert torch.equal(v, r.engine.state_dict()[k]), k
    for name in ("A", "B"):  # the image pools (what D saw of past fakes) are part of the resume state
        assert torch.equal(torch.cat(ref.engine.pools()[name].images), torch.cat(r.engine.pools()[name].images))
    assert [x["loss/cycle_A"] for x in m] == [x["loss/cycle_A"] for x in read_metrics(r.run_dir).train]


def test_cli_train_needs_both_domains(tmp_path, capsys):
    assert cli(["train", "cyclegan", "--data", str(tmp_path), "--runs", str(tmp_path)]) == 2
    assert "--source DIR_A --target DIR_B" in capsys.readouterr().err


class Identity(TranslationEngine):
    """A translator that returns its input: every fidelity metric has a known value."""
    name = "identity-test"

    def __init__(self, size):
        super().__init__({}, size, training=False)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def _translate(self, x, direction):
        return x


@pytest.mark.filterwarnings("ignore:FID from")  # 6 pictures: the small-sample warning is expected here
def test_translation_metrics_have_their_known_values_on_an_identity_translator():
    from engines.metrics.translation import evaluate_translation, paired_indices

    src = domain(0, "a", n=6, size=48, files=["7.png", "1.png", "x/3.png", "4.png", "5.png", "6.png"])
    # the target set holds the same pictures in another order, two of them missing
    order = [2, 0, 1, 3]
    tgt = domain(0, "b", n=6, size=48)
    tgt.images, tgt.files = src.images[order].clone(), [src.files[i].split("/")[-1].upper() for i in order]
    i, j = paired_indices(src.files, tgt.files)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (1, 2), (2, 0), (3, 3)]
    res = evaluate_translation(Identity(48), src, tgt, metrics="fid,lpips,cycle,lpips_target", device="cpu")
    assert res["fid"] == pytest.approx(res["fid_input"], abs=1e-6)  # the do-nothing baseline is itself
    assert res["lpips/content"] == pytest.approx(0, abs=1e-6)
    assert res["cycle/A"] == pytest.approx(0, abs=1e-6)
    assert res["lpips/target"] == pytest.approx(0, abs=1e-6) and res["paired_n"] == 4 and res["eval_n"] == 6
    assert res["lpips/target_input"] == res["lpips/target"]  # doing nothing is what this translator does
    with pytest.raises(ValueError, match="unknown translation metric 'ms_ssim'"):
        evaluate_translation(Identity(48), src, tgt, metrics="ms_ssim")


@pytest.mark.slow
def test_sprite_to_artwork_run_is_evaluated_with_pairs_by_id(tmp_path, capsys, pokemon_dir):
    """The shared data's real task in miniature: 6 B/W sprites -> Dream World artwork, paired by Pokémon id."""
    import shutil

    root = tmp_path / "data"
    for d, folder in (("a", pokemon_dir.parent / "bw-sprites-96"), ("b", pokemon_dir)):
        (root / d).mkdir(parents=True)
        for k in range(1, 7):
            shutil.copy(folder / f"{k}.png", root / d / f"{k}.png")
    argv = ["train", "cyclegan", "--source", str(root / "a"), "--target", str(root / "b"), "--runs",
            str(tmp_path / "runs"), "--image-size", "32", "--epochs", "2", "--batch-size", "2",
            "--set", "ngf=8", "--set", "ndf=8", "--set", "n_blocks=1", "--set", "eval_every=2", "--no-progress"]
    assert cli(argv) == 0
    run = next((tmp_path / "runs").iterdir())
    ev = read_metrics(run).eval
    assert len(ev) == 1 and ev[0]["paired_n"] == 6
    for k in ("fid", "kid", "fid_input", "kid_input", "lpips/content", "cycle/A", "lpips/target"):
        assert math.isfinite(ev[0][k]) and ev[0][k] >= 0, k
    capsys.readouterr()
    # the recorded source and target are the defaults; same numbers as the trainer's evaluation
    assert cli(["eval", str(run), "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "translator" and out["metrics"]["lpips/content"] == pytest.approx(ev[0]["lpips/content"])
    assert out["metrics"]["fid"] == pytest.approx(ev[0]["fid"], rel=1e-6)
    assert cli(["eval", str(run), "--metrics", "ms_ssim"]) == 2
    assert "unknown translation metric" in capsys.readouterr().err


def test_resume_redoes_a_recorded_background_removal():
    from engines.trainer import _removal_options

    assert _removal_options(None) == {}
    assert _removal_options({"model": "u2net", "model_path": None, "removed": 3}) == \
        {"remove_background": True, "rembg_model": "u2net"}
    assert _removal_options({"model": "u2net_custom", "model_path": "/m/tiny.onnx"}) == \
        {"remove_background": True, "rembg_model_path": "/m/tiny.onnx"}


def test_cli_translate_writes_one_png_per_picture(tmp_path, capsys):
    from PIL import Image

    e = get_engine("cyclegan")(TINY, 32, training=False)
    save_export(e, tmp_path / "export")
    pics = tmp_path / "pics"
    (pics / "sub").mkdir(parents=True)
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 256, (20, 40, 3), dtype=np.uint8)).save(pics / "wide.jpg")  # padded, not cropped
    Image.fromarray(g.integers(0, 256, (32, 32, 4), dtype=np.uint8)).save(pics / "sub" / "rgba.png")
    (pics / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert cli(["translate", str(tmp_path / "export"), str(pics), "--out", str(out), "--no-progress",
                "--device", "cpu"]) == 0
    assert "translated 2 picture(s) AB" in capsys.readouterr().out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["sub/rgba.png", "wide.png"]
    from engines.data.prepare import prepare_image

    want = e.translate(torch.from_numpy(np.array(prepare_image(pics / "wide.jpg", size=32))).permute(2, 0, 1)[None])
    got = torch.from_numpy(np.array(Image.open(out / "wide.png"))).permute(2, 0, 1)[None]
    from engines.data.images import to_uint8

    # batched with the other picture in the CLI, alone here: the same up to float rounding in the convolutions
    assert (got.int() - to_uint8(want).int()).abs().max() <= 1
    assert cli(["translate", str(tmp_path / "export"), str(pics), "--out", str(out), "--direction", "XY"]) == 2
    assert "not 'XY'" in capsys.readouterr().err
    gen = get_engine("dcgan")({"g_width": 8, "d_width": 8, "z_dim": 8}, 32, training=False)
    save_export(gen, tmp_path / "gen")
    assert cli(["translate", str(tmp_path / "gen"), str(pics), "--out", str(out)]) == 2
    assert "needs a translation export" in capsys.readouterr().err
