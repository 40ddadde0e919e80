import json
import math
import types

import pytest
import torch

from engines.config import TrainConfig, apply_overrides
from engines.runs.export import load_export
from engines.runs.folder import checkpoint_path, list_samples, read_info, read_metrics
from engines.trainer import Trainer, TrainingError, epoch_indices
from helpers import Killed, kill_at_step, on_nth_step

TINY = {"g_width": 8, "d_width": 8, "z_dim": 16}


def cfg(**kw):
    base = dict(image_size=32, batch_size=8, epochs=4, sample_every=2, eval_every=0, grid_n=9, engine=dict(TINY))
    base.update(kw)
    return TrainConfig(**base)


def params(engine):
    return {k: v.clone() for k, v in engine.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("engine", ["dcgan", "wgan_gp"])
def test_run_directory_contents(tmp_path, tiny_dataset, engine):
    t = Trainer(engine, tiny_dataset, tmp_path, cfg(), progress=False)
    run = t.fit()
    info = read_info(run)
    assert info["status"] == "finished" and info["engine"] == engine
    assert info["epoch"] == 4 and info["step"] == 4 * 5  # 40 images / batch 8
    assert info["dataset"]["key"] == "tiny-key" and info["dataset"]["count"] == 40
    assert info["config"]["engine"]["g_width"] == 8 and "versions" in info
    m = read_metrics(run)
    assert [r["epoch"] for r in m.train] == [1, 2, 3, 4] and not m.warnings
    for rec in m.train:
        for k in ("loss/D", "loss/G", "acc/D_real", "acc/D_fake", "img_per_s"):
            assert math.isfinite(rec[k]), k
        assert 0 <= rec["acc/D_real"] <= 1 and 0 <= rec["acc/D_fake"] <= 1
    assert [e for e, _ in list_samples(run)] == [2, 4]
    assert checkpoint_path(run).is_file()
    # the export reproduces the trained sampler exactly
    exported = load_export(run)
    assert torch.equal(exported.sample(n=4, seed=3), t.engine.sample(n=4, seed=3))
    assert (run / "log.txt").read_text().count("epoch ") >= 4


def test_epoch_indices_depend_only_on_seed_and_epoch():
    a = epoch_indices(50, seed=1, epoch=3, batch_size=8)
    b = epoch_indices(50, seed=1, epoch=3, batch_size=8)
    c = epoch_indices(50, seed=1, epoch=4, batch_size=8)
    assert len(a) == 6 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(torch.cat(a), torch.cat(c))
    # shards of two ranks are disjoint and cover what one rank would see
    r0 = torch.cat(epoch_indices(48, 1, 3, 4, rank=0, world=2))
    r1 = torch.cat(epoch_indices(48, 1, 3, 4, rank=1, world=2))
    assert not set(r0.tolist()) & set(r1.tolist())


# checkpoint_every 1: every epoch; 0: the default time-based cadence (5 min); mirror: x-flips drawn from the RNG;
# channels_last false: the NCHW path (dcgan defaults to NHWC on a CPU)
@pytest.mark.parametrize("engine,checkpoint_every,extra", [("dcgan", 1, {}), ("dcgan", 0, {}),
                                                           ("wgan_gp", 1, {}), ("wgan_gp", 0, {}),
                                                           ("dcgan", 1, {"mirror": True}),
                                                           ("dcgan", 1, {"channels_last": False})])
def test_resume_after_kill_is_bit_identical(tmp_path, tiny_dataset, engine, checkpoint_every, extra):
    torch.manual_seed(0)
    ref = Trainer(engine, tiny_dataset, tmp_path / "ref", cfg(seed=5, **extra), progress=False)
    ref.fit()
    ref_lines = read_metrics(ref.run_dir).train

    t = Trainer(engine, tiny_dataset, tmp_path / "cut", cfg(seed=5, checkpoint_every=checkpoint_every, **extra),
                progress=False)
    kill_at_step(t.engine, 13)  # mid epoch 3 (5 steps per epoch)
    with pytest.raises(Killed):
        t.fit()
    with open(t.run_dir / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "epo')  # a torn line, as a kill -9 can leave
    resumed = Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False)
    # by epochs: the epoch-2 checkpoint; by time: nothing since epoch 0 (the run is seconds old)
    assert (resumed.epoch, resumed.step) == ((2, 10) if checkpoint_every else (0, 0))
    resumed.fit()

    assert_same_state(params(ref.engine), params(resumed.engine))
    for name in ref.engine.optimizers:
        sa, sb = ref.engine.optimizers[name].state_dict(), resumed.engine.optimizers[name].state_dict()
        for pid in sa["state"]:
            for k, v in sa["state"][pid].items():
                assert torch.equal(v, sb["state"][pid][k])
    got = read_metrics(resumed.run_dir)
    assert [r["epoch"] for r in got.train] == [1, 2, 3, 4] and not got.warnings
    for a, b in zip(ref_lines, got.train):
        assert a["loss/D"] == b["loss/D"] and a["loss/G"] == b["loss/G"]
    assert any(e.get("event") == "resumed" for e in got.events)
    assert read_info(resumed.run_dir)["status"] == "finished"


def test_stop_request_checkpoints_mid_epoch_and_resumes_exactly(tmp_path, tiny_dataset):
    ref = Trainer("dcgan", tiny_dataset, tmp_path / "ref", cfg(), progress=False)
    ref.fit()
    t = Trainer("dcgan", tiny_dataset, tmp_path / "int", cfg(), progress=False)
    on_nth_step(t.engine, 7, before=t.request_stop)  # SIGINT arrives during epoch 2, batch 2
    t.fit()
    info = read_info(t.run_dir)
    assert info["status"] == "interrupted"
    ck = torch.load(checkpoint_path(t.run_dir), weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"]) == (1, 2, 7)
    assert any(e.get("event") == "interrupted" for e in read_metrics(t.run_dir).events)
    r = Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False)
    r.fit()
    assert_same_state(params(ref.engine), params(r.engine))
    a, b = read_metrics(ref.run_dir).train, read_metrics(r.run_dir).train
    assert [x["loss/D"] for x in a] == [x["loss/D"] for x in b]


@pytest.mark.parametrize("checkpoint_every", [1, 0])
def test_nan_guard_rolls_back_with_lower_lr(tmp_path, tiny_dataset, checkpoint_every):
    t = Trainer("dcgan", tiny_dataset, tmp_path, cfg(epochs=3, checkpoint_every=checkpoint_every), progress=False)
    on_nth_step(t.engine, 8, after=lambda out: {**out, "loss/D": torch.tensor(float("nan"))})  # once, epoch 2
    t.fit()
    m = read_metrics(t.run_dir)
    ev = [e for e in m.events if e.get("event") == "nan_rollback"]
    # to the last checkpoint: epoch 1 when every epoch is checkpointed; epoch 0 on the time-based cadence
    assert len(ev) == 1 and f"epoch {checkpoint_every}" in ev[0]["message"]
    assert [r["epoch"] for r in m.train] == [1, 2, 3]
    assert m.train[-1]["lr"] == pytest.approx(1e-4)  # 2e-4 x 0.5
    assert read_info(t.run_dir)["status"] == "finished"


def test_nan_guard_stops_with_clear_message(tmp_path, tiny_dataset):
    t = Trainer("dcgan", tiny_dataset, tmp_path, cfg(nan_policy="stop"), progress=False)
    real_step = t.engine.train_step
    t.engine.train_step = lambda b: {**real_step(b), "loss/G": torch.tensor(float("inf"))}
    with pytest.raises(TrainingError, match="non-finite loss at epoch 1 .*loss/G"):
        t.fit()
    assert read_info(t.run_dir)["status"] == "failed"


def test_dataset_checks(tmp_path, tiny_dataset):
    with pytest.raises(TrainingError, match="image_size=64"):
        Trainer("dcgan", tiny_dataset, tmp_path, cfg(image_size=64))
    with pytest.raises(TrainingError, match="fewer than one batch"):
        Trainer("dcgan", tiny_dataset, tmp_path, cfg(batch_size=64))


@pytest.mark.parametrize("mirror", [False, True])
def test_mirror_flips_about_half_of_the_real_images(tmp_path, tiny_dataset, mirror):
    t = Trainer("dcgan", tiny_dataset, tmp_path, cfg(mirror=mirror, epochs=3, sample_every=0), progress=False)
    seen = []
    step = t.engine.train_step
    t.engine.train_step = lambda batch: (seen.append(batch.clone()), step(batch))[1]
    t.fit()
    assert read_info(t.run_dir)["config"]["mirror"] is mirror
    real = tiny_dataset.images.float() / 127.5 - 1
    flipped = 0
    for x in torch.cat(seen):  # every row is a training image, as it is or x-flipped
        as_is = ((real - x).abs().amax((1, 2, 3)) < 1e-5).any()
        mirrored = ((real.flip(3) - x).abs().amax((1, 2, 3)) < 1e-5).any()
        assert as_is or mirrored
        flipped += int(mirrored and not as_is)
    assert len(seen) == 15 and (0.3 < flipped / 120 < 0.7 if mirror else flipped == 0)


def test_mirror_flips_both_sides_of_a_pair_together():
    a = torch.arange(2 * 64 * 3 * 4 * 4, dtype=torch.float32).view(128, 3, 4, 4)
    torch.manual_seed(1)
    out_a, out_b = Trainer._mirror(types.SimpleNamespace(pairing=object()), [a, a.clone()])
    assert torch.equal(out_a, out_b) and not torch.equal(out_a, a)
    torch.manual_seed(1)  # unpaired domains draw their own flips
    out_a, out_b = Trainer._mirror(types.SimpleNamespace(pairing=None), [a, a.clone()])
    assert not torch.equal(out_a, out_b)


def test_resume_refuses_changed_dataset(tmp_path, tiny_dataset):
    t = Trainer("dcgan", tiny_dataset, tmp_path, cfg(epochs=1), progress=False)
    t.fit()
    tiny_dataset.key = "other"
    with pytest.raises(TrainingError, match="changed since the run started"):
        Trainer.resume(t.run_dir, dataset=tiny_dataset)


def test_overrides():
    c = apply_overrides(TrainConfig(), ["epochs=5", "lr=1e-4", "engine.g_width=32", "amp=false",
                                        "augment_options.policy=color", "betas=[0.0, 0.99]"])
    assert c.epochs == 5 and c.amp is False and c.augment_options["policy"] == "color"
    assert c.engine == {"lr": 1e-4, "g_width": 32, "betas": [0.0, 0.99]}
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(TrainConfig(), ["epochs"])
    with pytest.raises(ValueError, match="true/false"):
        apply_overrides(TrainConfig(), ["amp=3"])
    from engines.generate.dcgan import DCGAN

    with pytest.raises(ValueError, match="no setting 'g_widht'"):
        DCGAN.resolve_config({"g_widht": 3})
    assert json.dumps(c.to_dict())


def test_evaluation_on_the_cadence(tmp_path, tiny_dataset):
    """FID/KID/MS-SSIM lines land in metrics.jsonl at eval epochs; training RNG is untouched by them."""
    c = cfg(epochs=2, eval_every=2, eval_n=12, sample_every=0)
    t = Trainer("dcgan", tiny_dataset, tmp_path / "a", c, progress=False)
    t.fit()
    m = read_metrics(t.run_dir)
    (ev,) = m.eval
    assert ev["epoch"] == 2 and ev["eval_n"] == 12 and ev["eval_seconds"] > 0
    for k in ("fid", "kid", "kid_std", "ms_ssim/fake", "ms_ssim/real"):
        assert math.isfinite(ev[k]), k
    assert ev["fid"] > 0 and ev["collapse"] in (0, 1)
    # the small-sample warning is reported once as an event, not dropped and not repeated
    assert sum(e.get("event") == "eval_warning" for e in m.events) >= 1
    no_eval = Trainer("dcgan", tiny_dataset, tmp_path / "b", cfg(epochs=2, eval_every=0, sample_every=0),
                      progress=False)
    no_eval.fit()
    assert_same_state(params(t.engine), params(no_eval.engine))


def test_wgan_gp_critic_norm_none_from_the_command_line():
    # `--set critic_norm=none` parses to null; the critic must get the word, not None
    from engines.config import parse_value
    from engines.registry import get_engine

    cls = get_engine("wgan_gp")
    eng = cls({"critic_norm": parse_value("none"), "g_width": 4, "d_width": 4}, image_size=16)
    assert eng.config["critic_norm"] == "none"


def test_set_augment_none_means_no_augmentation():
    from engines.config import TrainConfig, apply_overrides

    assert apply_overrides(TrainConfig(), ["augment=none"]).augment == "none"
    assert TrainConfig().augment is None  # the engine's default (DiffAugment; ADA for StyleGAN2)


@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_setting_makes_weights_and_batches_nhwc(tmp_path, tiny_dataset, channels_last):
    t = Trainer("dcgan", tiny_dataset, tmp_path, cfg(channels_last=channels_last, epochs=1, sample_every=0),
                progress=False)
    seen = []
    step = t.engine.train_step
    t.engine.train_step = lambda batch: (seen.append(batch), step(batch))[1]
    t.fit()
    convs = [p for p in t.engine.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) is channels_last or
                         p.is_contiguous() for p in convs)  # (1x1 spatial weights are both)
    assert any(p.is_contiguous(memory_format=torch.channels_last) != p.is_contiguous() for p in convs)
    assert all(not p.is_contiguous() for p in convs if p.shape[2:] != (1, 1)) is channels_last
    assert all(b.is_contiguous(memory_format=torch.channels_last) is channels_last for b in seen)
    info = read_info(t.run_dir)
    assert info["memory_format"] == ("channels_last" if channels_last else "contiguous")
    assert info["config"]["channels_last"] is channels_last
    # an export loads in the layout its engine trains in by default here (dcgan: NHWC on a CPU), and then
    # samples bit for bit as the run's own engine
    exported = load_export(t.run_dir)
    assert exported.channels_last is True
    same = torch.equal(exported.sample(n=4, seed=3), t.engine.sample(n=4, seed=3))
    assert same if channels_last else torch.allclose(exported.sample(n=4, seed=3), t.engine.sample(n=4, seed=3),
                                                     atol=1e-5)


def test_channels_last_computes_the_same_step():
    """NHWC changes the kernels, not the arithmetic: one step from the same weights, batch and random draws
    (DiffAugment's gathers included) gives the same losses and gradients up to float reassociation."""
    from engines.augment import build_augment
    from engines.registry import get_engine

    x = torch.rand(8, 3, 32, 32) * 2 - 1
    got = {}
    for cl in (False, True):
        torch.manual_seed(0)
        eng = get_engine("dcgan")(dict(TINY), 32, training=True)
        eng.setup(torch.device("cpu"), augment=build_augment("diffaugment"), channels_last=cl)
        torch.manual_seed(1)
        out = eng.train_step(x.contiguous(memory_format=torch.channels_last) if cl else x)
        got[cl] = out, {k: p.grad.clone() for k, p in eng.named_parameters() if p.grad is not None}
    (out_a, grads_a), (out_b, grads_b) = got[False], got[True]
    for k in out_a:
        torch.testing.assert_close(out_b[k], out_a[k], rtol=1e-4, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 4
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-3, atol=1e-5)


def test_channels_last_setting_is_checked():
    with pytest.raises(ValueError, match="channels_last must be true, false or null"):
        TrainConfig(channels_last="yes").validate()
    assert apply_overrides(TrainConfig(), ["channels_last=false"]).channels_last is False
