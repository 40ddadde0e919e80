"""Per-label metrics of conditional runs (engines/metrics/per_label.py): per-label KID / intra-FID and the
label-consistency check on constructed features (labels matching: small KID and consistency 1; swapped: large and
0), the labels of the evaluation's samples replayed exactly, the trainer's evaluation lines and `pokelab eval` with
the Inception network replaced by a fixed projection, and the studio's per-label section."""
import json
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engines.base import Engine
from engines.cli import main
from engines.config import TrainConfig
from engines.data.prepare import load_dataset
from engines.labels import ConditionalEngine, LabelSpec, load_labels
from engines.metrics import evaluate as ev
from engines.metrics import fid as fm
from engines.metrics.per_label import (PerLabelOptions, conditional_sample_fn, eval_labels, evaluate_conditional,
                                       label_consistency, per_label_scores, per_label_text, split_result)
from engines.runs.folder import read_metrics
from engines.trainer import Trainer

SPEC = LabelSpec(("A", "B", "C"), "label", (("A", 40), ("B", 40), ("C", 40)))


def clusters(per_label=40, dim=32, seed=0, spread=0.3):
    """Features of three well-separated clusters (one per label) and their one-hot labels."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, dim) * 4.0
    feats = np.concatenate([centres[k] + spread * rng.standard_normal((per_label, dim)) for k in range(3)])
    labels = np.repeat(np.eye(3), per_label, axis=0)
    return feats, labels


# ---- the figures on constructed features ------------------------------------------------------------------------
def test_per_label_kid_is_small_for_matching_labels_and_large_for_swapped_ones():
    real, real_y = clusters(seed=0)
    fake, fake_y = clusters(per_label=30, seed=1)
    opts = PerLabelOptions(min_kid=10, min_fid=25, kid_subsets=20)
    good = per_label_scores(fake, fake_y, real, real_y, SPEC.vocabulary, options=opts)
    swapped = per_label_scores(fake, np.roll(fake_y, 1, axis=1), real, real_y, SPEC.vocabulary, options=opts)
    for name in SPEC.vocabulary:
        assert good[f"kid/label/{name}"] < 0.1 * swapped[f"kid/label/{name}"], name
        assert abs(good[f"kid/label/{name}"]) < 0.05 and swapped[f"kid/label/{name}"] > 0.5
        assert good[f"fid/label/{name}"] < 0.1 * swapped[f"fid/label/{name}"]
        assert good[f"eval_n/label/{name}"] == 30
    assert good["kid/label_mean"] == pytest.approx(np.mean([good[f"kid/label/{n}"] for n in "ABC"]))
    assert good["label_consistency"] == 1.0 and swapped["label_consistency"] == 0.0
    assert good["label_consistency/real"] == 1.0  # leave-one-out: the real images sit by their own centroids


def test_labels_below_the_thresholds_get_counts_only():
    real, real_y = clusters(seed=0)
    fake, fake_y = clusters(per_label=30, seed=1)
    keep = np.r_[0:30, 30:35, 60:90]  # only 5 samples asked for B
    res = per_label_scores(fake[keep], fake_y[keep], real, real_y, SPEC.vocabulary,
                           options=PerLabelOptions(min_kid=10, min_fid=100, kid_subsets=10))
    assert "kid/label/A" in res and "kid/label/B" not in res and res["eval_n/label/B"] == 5
    assert not any(k.startswith("fid/label") for k in res)  # fewer than 100 of each: no intra-FID
    main, rows = split_result({**res, "fid": 1.0})
    assert main.keys() >= {"fid", "label_consistency", "kid/label_mean"} and set(rows) == {"A", "B", "C"}
    text = per_label_text(res)
    assert "B" in text and text.count("-") >= 2


def test_label_consistency_with_multi_label_samples_and_lone_images():
    real, real_y = clusters(per_label=10, seed=0)
    # asked for A|B but drawn at B's centroid: consistent; asked for C, drawn at A: not
    fake = np.stack([real[10:20].mean(0), real[:10].mean(0)])
    fake_y = np.array([[1, 1, 0], [0, 0, 1]], dtype=float)
    res = label_consistency(fake, fake_y, real, real_y)
    assert res["label_consistency"] == 0.5
    # a label with one real image has no centroid without it: that image is left out of the real rate
    lone = np.concatenate([real, real[:1] + 40])
    lone_y = np.concatenate([np.c_[real_y, np.zeros(30)], [[0, 0, 0, 1]]])
    assert label_consistency(fake[:1], np.c_[fake_y[:1], [0]], lone, lone_y)["label_consistency/real"] == 1.0
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        label_consistency(fake, fake_y[:, :2], real, real_y)


# ---- the evaluation's labels ----------------------------------------------------------------------------------
PALETTE = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])


class Painter(ConditionalEngine, Engine):
    """A conditional 'generator' that paints each image the (mean) colour of its labels, shaded by z."""
    name = "painter"

    @classmethod
    def default_config(cls):
        return {"z_dim": 4, "labels": None, "swap": False}

    def __init__(self, config=None, image_size=8, *, training=False):
        super().__init__(config, image_size, training=training)
        self.init_labels()
        self.seen = []

    def generate(self, z, labels):
        self.seen.append(labels.clone())
        y = labels.roll(1, 1) if self.config["swap"] else labels
        colour = (y / y.sum(1, keepdim=True)) @ PALETTE
        img = colour[:, :, None, None] * 0.8 + 0.1 * z[:, :3, None, None]
        return img.expand(-1, -1, self.image_size, self.image_size).clamp(-1, 1)


def painted_real(n_per_label=20):
    """A labelled real set (what engines.labels.attach_labels makes): each image the colour of its label."""
    g = torch.Generator().manual_seed(0)
    y = torch.eye(3).repeat_interleave(n_per_label, 0)
    img = (y @ PALETTE)[:, :, None, None] * 0.8 + 0.1 * torch.randn(len(y), 3, 1, 1, generator=g)
    images = ((img.expand(-1, -1, 8, 8).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return types.SimpleNamespace(images=images, labels=y, label_spec=SPEC, key="painted", name="painted")


@pytest.fixture
def fake_inception(monkeypatch, tmp_path):
    """The Inception network replaced by a fixed random projection of the pixels (quick, deterministic)."""
    proj = torch.from_numpy(np.random.default_rng(0).standard_normal((3 * 8 * 8, 64))).float() / 8

    def net(x):
        x = torch.nn.functional.interpolate(x.float(), size=(8, 8), mode="area") if x.shape[-1] != 8 else x.float()
        return (x.reshape(len(x), -1) / 255) @ proj

    monkeypatch.setenv("POKELAB_CACHE", str(tmp_path / "cache"))
    fm.clear_memory_cache()
    monkeypatch.setattr(ev, "features_of_batch", lambda x, dev: net(x))
    monkeypatch.setattr(fm, "inception_features", lambda imgs, **k: net(imgs).numpy())
    yield net
    fm.clear_memory_cache()


def test_eval_labels_replay_the_samples_labels():
    e = Painter({"labels": SPEC.to_json()})
    fn = conditional_sample_fn(e)
    for b, k in enumerate((7, 7, 3)):
        fn(k, ev._batch_seed(5, b))
    assert torch.equal(torch.cat(e.seen), eval_labels(SPEC, 17, 7, 5))
    # the explicit draw is the one sample() makes without labels: the images (and FID/KID) do not change
    assert torch.equal(fn(6, 11), e.sample(n=6, seed=11))


def test_evaluate_conditional_adds_the_per_label_figures(fake_inception):
    real = painted_real()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fm.SmallSampleWarning)
        good = evaluate_conditional(Painter({"labels": SPEC.to_json()}), real, n=90, metrics="fid,kid", batch_size=16,
                                    kid_subset_size=20, per_label=PerLabelOptions(min_kid=10, min_fid=20))
        bad = evaluate_conditional(Painter({"labels": SPEC.to_json(), "swap": True}), real, n=90, metrics="fid,kid",
                                   batch_size=16, kid_subset_size=20, per_label=PerLabelOptions(min_kid=10, min_fid=20))
    assert {"fid", "kid", "label_consistency", "label_consistency/real", "kid/label/A", "fid/label/A",
            "eval_n/label/A"} <= set(good)
    assert sum(good[f"eval_n/label/{n}"] for n in "ABC") == 90
    assert good["label_consistency"] == 1.0 and bad["label_consistency"] == 0.0
    for n in "ABC":
        assert good[f"kid/label/{n}"] < 0.2 * bad[f"kid/label/{n}"]
    # an engine with its own sampling (stackgan's captions) keeps the plain evaluation unless it opts in
    class OwnSampler(Painter):
        def sample(self, *a, **k):
            return super().sample(*a, **k)

    own = evaluate_conditional(OwnSampler({"labels": SPEC.to_json()}), real, n=20, metrics="kid", batch_size=10,
                               kid_subset_size=10)
    assert "kid" in own and not any("label" in k for k in own)
    OwnSampler.per_label_metrics = True
    assert "label_consistency" in evaluate_conditional(OwnSampler({"labels": SPEC.to_json()}), real, n=20,
                                                       metrics="kid", batch_size=10, kid_subset_size=10)
    # no labels on the real set: the plain evaluation
    plain = evaluate_conditional(Painter({"labels": SPEC.to_json()}), real.images, n=20, metrics="kid", batch_size=10,
                                 kid_subset_size=10)
    assert "kid" in plain and not any("label" in k for k in plain)


# ---- the trainer and `pokelab eval` ---------------------------------------------------------------------------
@pytest.fixture
def labelled_set(tmp_path):
    d = tmp_path / "pics"
    d.mkdir()
    rows = ["id,types"]
    rgb = {"Fire": (230, 40, 30), "Water": (30, 60, 230), "Grass": (40, 200, 60)}
    names = list(rgb)
    for i in range(1, 31):
        t = names[i % 3]
        Image.fromarray(np.full((16, 16, 3), rgb[t], np.uint8)).save(d / f"{i}.png")
        rows.append(f"{i},{t}")
    (tmp_path / "species.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(d, size=16, cache_dir=tmp_path / "cache", progress=False)
    return load_labels(ds, tmp_path / "species.csv", "types")


def test_trainer_and_eval_log_per_label_metrics(tmp_path, labelled_set, fake_inception, monkeypatch, capsys):
    import engines.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "probe_eval_seconds", lambda *a, **k: 0.01)
    cfg = TrainConfig(image_size=16, batch_size=10, epochs=1, sample_every=0, eval_every=1, eval_n=60,
                      eval_metrics="fid,kid", grid_n=4, engine={"z_dim": 16, "w_dim": 16, "mapping_layers": 2,
                                                               "channel_base": 128, "channel_max": 16})
    run = Trainer("stylegan2_ada", labelled_set, tmp_path / "runs", cfg, progress=False).fit()
    (line,) = [r for r in read_metrics(run).eval]
    assert {"kid", "label_consistency", "label_consistency/real", "kid/label/Fire", "kid/label/Water",
            "kid/label/Grass", "eval_n/label/Fire"} <= set(line)
    assert sum(line[f"eval_n/label/{n}"] for n in ("Fire", "Grass", "Water")) == 60
    assert line["label_consistency/real"] == 1.0  # each colour sits at its own centroid

    # pokelab eval measures what the trainer measured, per label too; --log appends it
    assert main(["eval", str(run), "--n", "60", "--metrics", "fid,kid", "--log"]) == 0
    out = capsys.readouterr().out
    assert "per label" in out and "Fire" in out and "label_consistency" in out
    again = read_metrics(run).eval[-1]
    assert again["eval_by"] == "pokelab eval"
    for k in ("kid/label/Fire", "label_consistency", "eval_n/label/Water"):
        assert again[k] == pytest.approx(line[k]), k
    # the labels file gone: the evaluation still runs, with a warning and without the per-label part
    (tmp_path / "species.csv").unlink()
    assert main(["eval", str(run), "--n", "20", "--metrics", "kid", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "kid" in res["metrics"] and not any("label" in k for k in res["metrics"])
    assert any("per-label metrics left out" in w for w in res["warnings"])


# ---- the studio ---------------------------------------------------------------------------------------------
def write_run(root: Path, run_id: str, evals: list[dict]) -> Path:
    d = root / run_id
    (d / "samples").mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"run_id": run_id, "engine": run_id.split("-")[2], "status": "finished",
                                            "config": {"epochs": 20, "image_size": 32, "batch_size": 8},
                                            "dataset": {"name": "pokemon", "count": 40}, "device": "cpu",
                                            "epoch": 20}))
    lines = [{"kind": "train", "epoch": e, "step": e, "time": 0, "loss/D": 1.0, "loss/G": 2.0} for e in range(1, 21)]
    lines += [{"kind": "eval", "step": 0, "time": 0, **e} for e in evals]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


PER_LABEL_EVALS = [
    {"epoch": 10, "fid": 120.0, "kid": 0.12, "kid/label/Fire": 0.20, "kid/label/Water": 0.15, "eval_n/label/Fire": 40,
     "eval_n/label/Water": 60, "eval_n/label/Ice": 4, "label_consistency": 0.4, "label_consistency/real": 0.7},
    {"epoch": 20, "fid": 90.0, "kid": 0.09, "kid/label/Fire": 0.10, "kid/label/Water": 0.08, "kid/label/Ice": 0.3,
     "fid/label/Water": 150.0, "eval_n/label/Fire": 45, "eval_n/label/Water": 55, "eval_n/label/Ice": 12,
     "label_consistency": 0.55, "label_consistency/real": 0.7},
]


def test_per_label_table_and_series(tmp_path):
    from studio import per_label as PL
    from studio.data import load_run

    run = load_run(write_run(tmp_path, "20250101-000000-stylegan2_ada-pokemon", PER_LABEL_EVALS))
    assert PL.has_per_label(run) and PL.labels_of(run, "kid") == ["Fire", "Water", "Ice"]
    table = PL.per_label_table(run, "kid")
    assert list(table.columns) == [10.0, 20.0] and list(table.index) == ["Fire", "Water", "Ice"]
    assert table.loc["Fire", 10.0] == 0.20 and table.loc["Water", 20.0] == 0.08
    assert np.isnan(table.loc["Ice", 10.0]) and table.loc["Ice", 20.0] == 0.3   # too few samples at epoch 10
    assert list(PL.per_label_table(run, "fid").index) == ["Water"]
    shown = PL.table_for_display(table, run)
    assert list(shown.columns) == ["samples (latest)", "epoch 10", "epoch 20"]
    assert shown.loc["Ice", "samples (latest)"] == 12
    cons = PL.consistency(run)
    assert list(cons["label_consistency"]) == [0.4, 0.55] and list(cons["x"]) == [10.0, 20.0]
    fig = PL.heatmap(table, run)
    assert fig.data[0].z.shape == (3, 2) and list(fig.data[0].y) == ["Fire", "Water", "Ice"]
    plain = load_run(write_run(tmp_path, "20250102-000000-dcgan-pokemon", [{"epoch": 10, "fid": 100.0}]))
    assert not PL.has_per_label(plain) and PL.per_label_table(plain).empty and PL.consistency(plain).empty


def test_studio_run_page_shows_the_per_label_section(tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    cond = write_run(tmp_path, "20250101-000000-stylegan2_ada-pokemon", PER_LABEL_EVALS)
    plain = write_run(tmp_path, "20250102-000000-dcgan-pokemon", [{"epoch": 10, "fid": 100.0}])
    monkeypatch.setenv("POKELAB_STUDIO_RUNS", str(tmp_path))
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    monkeypatch.setenv("POKELAB_REVIEW_DB", str(tmp_path / "r.db"))
    app = str(Path(__file__).resolve().parents[1] / "studio" / "streamlit_app.py")
    at = AppTest.from_file(app, default_timeout=60).run()
    at.selectbox(key="detail_run").set_value(str(cond)).run()
    assert not at.exception, [e.value for e in at.exception]
    charts = {el.proto.id.rsplit("-", 1)[-1]: json.loads(el.proto.spec) for el in at.get("plotly_chart")}
    assert "fig_per_label" in charts
    assert any("epoch 20" in d.value.columns and "Ice" in d.value.index for d in at.dataframe)
    assert any("Label consistency at epoch 20: 55%" in c.value and "70%" in c.value for c in at.caption)
    at.radio(key="per_label_metric").set_value("fid").run()  # intra-FID where it was measured
    assert any("epoch 20" in d.value.columns and list(d.value.index) == ["Water"] for d in at.dataframe)
    at.selectbox(key="detail_run").set_value(str(plain)).run()
    assert "fig_per_label" not in {el.proto.id.rsplit("-", 1)[-1] for el in at.get("plotly_chart")}
