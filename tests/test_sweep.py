"""The plan's ablation grid: DCGAN's (and cgan's) norm / optimizer / loss / dropout / weight_clip / spectral_norm
settings change the nets, optimisers and losses as stated; `pokelab sweep` runs a grid under one tag, skips
finished runs, resumes interrupted ones; the studio groups the runs by tag into a table."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from engines.cli import main
from engines.runs.export import load_export
from engines.generate.cgan import CGAN, ConditionalBatchNorm2d
from engines.generate.dcgan import DCGAN, d_accuracy, d_loss, g_loss
from engines.labels import LabelSpec
from engines.runs.folder import RunWriter, read_info, read_metrics
from engines.sweep import SweepError, load_sweep, plan, run_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = {"g_width": 8, "d_width": 8, "z_dim": 8}


def dcgan(**cfg):
    torch.manual_seed(0)
    e = DCGAN({**TINY, **cfg}, 16)
    e.setup(torch.device("cpu"))
    return e


def kinds(module):
    return [type(m) for m in module.modules()]


# ---- the ablation settings ---------------------------------------------------------------------------------
def test_defaults_are_the_paper_and_keep_the_export_layout():
    e = dcgan()
    c = e.config
    assert (c["norm"], c["optimizer"], c["loss"], c["dropout"], c["weight_clip"], c["spectral_norm"]) == \
        ("batch", "adam", "bce", 0.0, 0.0, False)
    assert isinstance(e.optimizers["D"], torch.optim.Adam) and e.optimizers["D"].param_groups[0]["betas"] == (0.5, 0.999)
    # the state-dict keys of exports made before these settings existed
    assert list(e.G.state_dict())[:6] == ["net.0.weight", "net.1.weight", "net.1.bias", "net.1.running_mean",
                                          "net.1.running_var", "net.1.num_batches_tracked"]
    assert not any(isinstance(m, (nn.Dropout,)) for m in e.D.modules())
    shipped = sorted((ROOT / "checkpoints" / "runs").glob("*-dcgan-*/export"))
    if shipped:  # the shipped DCGAN still loads and samples
        assert load_export(shipped[0]).sample(n=2, seed=0).shape[0] == 2


def test_norm_none_removes_batch_norm_from_both_nets():
    e = dcgan(norm="none")
    assert nn.BatchNorm2d not in kinds(e.G) and nn.BatchNorm2d not in kinds(e.D)
    assert all(m.bias is not None for m in e.G.modules() if isinstance(m, nn.ConvTranspose2d))
    assert all(m.bias is not None for m in e.D.modules() if isinstance(m, nn.Conv2d))
    assert nn.BatchNorm2d in kinds(dcgan().G) and nn.BatchNorm2d in kinds(dcgan().D)
    # cgan: the label's per-class gamma/beta stay, only the batch statistics go
    spec = LabelSpec(("a", "b"), "label", (("a", 1), ("b", 1)))
    c = CGAN({**TINY, "labels": spec.to_json(), "norm": "none"}, 16)
    cbn = [m for m in c.G.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert cbn and all(m.bn is None for m in cbn) and nn.BatchNorm2d not in kinds(c.D)


def test_optimizer_setting():
    e = dcgan(optimizer="rmsprop", lr=5e-5)
    for opt in e.optimizers.values():
        assert type(opt) is torch.optim.RMSprop and opt.param_groups[0]["lr"] == 5e-5
    spec = LabelSpec(("a",), "label", (("a", 1),))
    c = CGAN({**TINY, "labels": spec.to_json(), "optimizer": "rmsprop"}, 16)
    assert all(type(o) is torch.optim.RMSprop for o in c.optimizers.values())


def test_losses_are_the_stated_formulas():
    r, f = torch.tensor([2.0, -0.1]), torch.tensor([0.5, -3.0])
    sp = torch.nn.functional.softplus
    assert torch.allclose(d_loss("bce", r, f), sp(-r).mean() + sp(f).mean())
    assert torch.allclose(g_loss("bce", f), sp(-f).mean())
    assert torch.allclose(d_loss("hinge", r, f), torch.tensor((0 + 1.1) / 2 + (1.5 + 0) / 2))
    assert torch.allclose(g_loss("hinge", f), torch.tensor(1.25))
    assert torch.allclose(d_loss("wasserstein", r, f), torch.tensor(-1.25 - 0.95))  # E[D(fake)] - E[D(real)]
    assert torch.allclose(g_loss("wasserstein", f), torch.tensor(1.25))
    # a critic has no 0.5 threshold: accuracy against the midpoint of the mean scores (-0.15)
    assert [float(a) for a in d_accuracy("wasserstein", r, f)] == [1.0, 0.5]
    assert [float(a) for a in d_accuracy("bce", r, f)] == [0.5, 0.5]
    with pytest.raises(ValueError, match="loss must be one of bce, wasserstein, hinge"):
        dcgan(loss="l2")
    # the engine's step uses the setting: with one D logit per image, loss/D is the formula on D's outputs
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    for kind in ("bce", "hinge", "wasserstein"):
        e = dcgan(loss=kind)
        e.eval()  # BN from running stats in G and D: the same outputs before and inside the step
        torch.manual_seed(3)
        z = torch.randn(4, e.z_dim)
        with torch.no_grad():
            want = d_loss(kind, e.D(x), e.D(e.G(z)))
        torch.manual_seed(3)
        out = e.train_step(x)
        assert torch.allclose(out["loss/D"], want, atol=1e-5), kind


def test_dropout_and_weight_clip_and_spectral_norm():
    e = dcgan(dropout=0.3)
    drops = [m for m in e.D.modules() if isinstance(m, nn.Dropout)]
    leaky = [m for m in e.D.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(drops) == len(leaky) == 2 and all(d.p == 0.3 for d in drops)
    x = torch.rand(4, 3, 16, 16)
    e.D.train()
    assert not torch.equal(e.D(x), e.D(x))  # stochastic while training
    e.D.eval()
    assert torch.equal(e.D(x), e.D(x))
    assert not any(isinstance(m, nn.Dropout) for m in e.G.modules())  # D only
    with pytest.raises(ValueError, match="dropout must be in"):
        dcgan(dropout=1.5)

    e = dcgan(weight_clip=0.01, loss="wasserstein")
    e.train_step(torch.rand(4, 3, 16, 16) * 2 - 1)
    assert max(float(p.detach().abs().max()) for p in e.D.parameters()) <= 0.01 + 1e-7
    assert max(float(p.detach().abs().max()) for p in e.G.parameters()) > 0.01  # G is not clipped

    e = dcgan(spectral_norm=True, norm="none")
    convs = [m for m in e.D.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    w = convs[1].weight.flatten(1)  # the normalised weight: largest singular value 1
    assert abs(float(torch.linalg.matrix_norm(w.detach(), ord=2)) - 1.0) < 0.05
    with pytest.raises(ValueError, match="apply to DCGAN's own discriminator"):
        DCGAN({**TINY, "discriminator": "projected", "dropout": 0.2}, 16, training=False)


# ---- the sweep ----------------------------------------------------------------------------------------------
@pytest.fixture
def pics(tmp_path):
    d = tmp_path / "pics"
    d.mkdir()
    for i in range(8):
        arr = np.full((16, 16, 3), 30 * i, np.uint8)
        arr[4:12, 4:12] = (200, 40 * i % 256, 90)
        Image.fromarray(arr).save(d / f"{i}.png")
    return d


def sweep_file(tmp_path, pics, body="", grid='norm = ["batch", "none"]', epochs=1):
    f = tmp_path / "grid.toml"
    f.write_text(f"""tag = "tiny-ablation"
runs_dir = "{tmp_path / 'runs'}"

[base]
engine = "dcgan"
data = "{pics}"
image_size = 16
batch_size = 4
epochs = {epochs}
g_width = 8
d_width = 8
z_dim = 8
eval_every = 0
grid_n = 4

[grid]
{grid}
{body}""")
    return f


def test_sweep_file_grid_and_runs(tmp_path, pics):
    s = load_sweep(sweep_file(tmp_path, pics, grid='norm = ["batch", "none"]\noptimizer = ["adam", "rmsprop"]'))
    assert s.tag == "tiny-ablation" and len(s.runs) == 4
    assert [r.name for r in s.runs] == ["norm=batch,optimizer=adam", "norm=batch,optimizer=rmsprop",
                                        "norm=none,optimizer=adam", "norm=none,optimizer=rmsprop"]
    assert s.runs[3].varied == {"norm": "none", "optimizer": "rmsprop"} and s.runs[3].settings["image_size"] == 16
    assert len({r.key for r in s.runs}) == 4 and load_sweep(s.path).runs[2].key == s.runs[2].key  # stable keys
    argv = s.runs[3].train_argv(s.tag, "R", s.path)
    assert argv[:2] == ["train", "dcgan"] and ["--image-size", "16"] == argv[argv.index("--image-size"):][:2]
    assert 'norm="none"' in argv and 'optimizer="rmsprop"' in argv and argv[argv.index("--tag") + 1] == "tiny-ablation"
    # explicit runs
    f = sweep_file(tmp_path, pics, grid="", body='[[run]]\nname = "base"\n[[run]]\nname = "fast"\nlr = 0.002\n')
    s = load_sweep(f)
    assert [r.name for r in s.runs] == ["base", "fast"] and s.runs[1].varied == {"lr": 0.002}
    assert s.runs[0].varied == {"lr": None}
    # the shipped example: the plan's six settings
    ex = load_sweep(ROOT / "docs" / "examples" / "plan-ablation.toml")
    assert ex.tag == "plan-ablation" and [r.name for r in ex.runs] == [
        "baseline", "no-batchnorm", "rmsprop", "wasserstein", "dropout", "lr-10x"]
    by = {r.name: r.settings for r in ex.runs}
    assert by["no-batchnorm"]["norm"] == "none" and by["rmsprop"]["optimizer"] == "rmsprop"
    assert by["wasserstein"]["loss"] == "wasserstein" and by["dropout"]["dropout"] > 0
    assert by["lr-10x"]["lr"] == 10 * DCGAN.default_config()["lr"]


def test_sweep_file_errors(tmp_path, pics):
    with pytest.raises(SweepError, match="run 'norm=layer': engine 'dcgan': norm must be one of batch, none"):
        load_sweep(sweep_file(tmp_path, pics, grid='norm = ["batch", "layer"]'))
    with pytest.raises(SweepError, match="run 'base': engine 'dcgan' has no setting 'g_widht'"):
        load_sweep(sweep_file(tmp_path, pics, grid="g_widht = [3]"))
    with pytest.raises(SweepError, match="grid.norm must be a non-empty list"):
        load_sweep(sweep_file(tmp_path, pics, grid='norm = "none"'))
    with pytest.raises(SweepError, match="unknown key"):
        load_sweep(sweep_file(tmp_path, pics, body='[settings]\nx = 1\n'))
    with pytest.raises(SweepError, match="both named 'a'"):
        load_sweep(sweep_file(tmp_path, pics, grid="", body='[[run]]\nname = "a"\n[[run]]\nname = "a"\nlr = 0.1\n'))
    with pytest.raises(SweepError, match="not valid TOML"):
        (tmp_path / "bad.toml").write_text("tag = \n")
        load_sweep(tmp_path / "bad.toml")


def test_sweep_runs_skips_finished_and_resumes_interrupted(tmp_path, pics, capsys):
    f = sweep_file(tmp_path, pics)
    said = []
    out = run_sweep(load_sweep(f), say=said.append)
    runs = sorted((tmp_path / "runs").glob("*-dcgan-*"))
    assert len(runs) == 2 and [o.code for o in out] == [0, 0]
    infos = [read_info(r) for r in runs]
    assert all(i["status"] == "finished" and i["tag"] == "tiny-ablation" for i in infos)
    assert sorted(i["sweep"]["name"] for i in infos) == ["norm=batch", "norm=none"]
    assert {i["config"]["engine"]["norm"] for i in infos} == {"batch", "none"}  # the setting reached the engine
    # again: both finished runs are skipped, nothing new is made
    said.clear()
    out = run_sweep(load_sweep(f), say=said.append)
    assert [o.action for o in out] == ["skip", "skip"] and all(o.code is None for o in out)
    assert sorted((tmp_path / "runs").glob("*-dcgan-*")) == runs and "all done" in said[-1]
    # an interrupted run is resumed, in its own folder
    target = next(r for r, i in zip(runs, infos) if i["sweep"]["name"] == "norm=none")
    info = read_info(target)
    RunWriter(target).write_info({**info, "status": "interrupted"})
    assert [p.action for p in plan(load_sweep(f), tmp_path / "runs")] == ["skip", "resume"]
    out = run_sweep(load_sweep(f), say=said.append)
    assert [(o.action, o.code) for o in out] == [("skip", None), ("resume", 0)]
    assert read_info(target)["status"] == "finished" and sorted((tmp_path / "runs").glob("*-dcgan-*")) == runs
    assert any(e.get("event") == "resumed" for e in read_metrics(target).events)
    # another setting is another run; the CLI's dry run says so and starts nothing
    f2 = sweep_file(tmp_path, pics, epochs=2)
    assert main(["sweep", str(f2), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count("start  ") == 2 and "(dry run)" in text
    assert sorted((tmp_path / "runs").glob("*-dcgan-*")) == runs


def test_studio_groups_a_sweep_into_a_table(tmp_path, pics):
    from studio import data as SD
    from studio import sweeps as SW

    run_sweep(load_sweep(sweep_file(tmp_path, pics)), say=lambda s: None)
    for i, r in enumerate(sorted((tmp_path / "runs").glob("*-dcgan-*"))):
        w = RunWriter(r)  # evaluations as the trainer logs them (FID needs Inception: written here)
        w.log("eval", 1, 2, fid=200.0 - i, kid=0.1, kid_std=0.01, collapse=float(i))
    (tmp_path / "runs" / "other").mkdir()
    runs = SD.load_runs([tmp_path / "runs"])
    assert SW.tags(runs) == ["tiny-ablation"]
    group = SW.group(runs, "tiny-ablation")
    assert [r.label for r in group] == ["norm=batch", "norm=none"]
    t = SW.table(group)
    assert list(t.columns[:3]) == ["run", "norm", "status"]
    assert t["norm"].tolist() == ["batch", "none"] and t["status"].tolist() == ["finished", "finished"]
    assert sorted(t["final FID"].tolist()) == [199.0, 200.0] and t["final KID"].tolist() == [0.1, 0.1]
    assert sorted(t["collapse"].tolist()) == [False, True]


@pytest.mark.slow
def test_sweep_parallel_subprocesses(tmp_path, pics):
    f = sweep_file(tmp_path, pics)
    assert main(["sweep", str(f), "--parallel", "2"]) == 0
    runs = sorted((tmp_path / "runs").glob("*-dcgan-*"))
    assert len(runs) == 2 and all(read_info(r)["status"] == "finished" for r in runs)
    logs = sorted((tmp_path / "runs" / ".sweep-logs" / "tiny-ablation").glob("*.log"))
    assert [p.name for p in logs] == ["norm=batch.log", "norm=none.log"]
    assert "finished:" in logs[0].read_text()


@pytest.mark.slow
def test_studio_page_shows_the_sweep(tmp_path, pics, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    run_sweep(load_sweep(sweep_file(tmp_path, pics)), say=lambda s: None)
    for i, r in enumerate(sorted((tmp_path / "runs").glob("*-dcgan-*"))):
        RunWriter(r).log("eval", 1, 2, fid=150.0 + i, kid=0.2, kid_std=0.01, collapse=0.0)
    monkeypatch.setenv("POKELAB_STUDIO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    monkeypatch.setenv("POKELAB_REVIEW_DB", str(tmp_path / "r.db"))
    at = AppTest.from_file(str(ROOT / "studio" / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.sidebar.radio(key="view").set_value("Sweeps").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="sweep_tag").value == "tiny-ablation"
    table = next(d.value for d in at.dataframe if "final FID" in d.value.columns)
    assert table["run"].tolist() == ["norm=batch", "norm=none"] and table["final FID"].tolist() == [150.0, 151.0]
    charts = [el.proto.id.rsplit("-", 1)[-1] for el in at.get("plotly_chart")]
    assert {"sweep_fid", "sweep_kid", "sweep_loss"} <= set(charts)
