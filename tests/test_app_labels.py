"""The app with a conditional export (cgan): the Generate tab's label picker is shown only for conditional exports,
the chosen labels reach the samples (captions name them), none chosen gives each image its own draw by seed, and an
unknown label is a message naming it and the vocabulary — through the handlers and through gradio_client."""
from __future__ import annotations

import pytest
import torch

from app import gan
from app.exports import ExportCatalog
from app.inputs import AppInputError
from engines.runs.export import save_export
from engines.generate.cgan import CGAN, ConditionalBatchNorm2d
from engines.labels import LabelSpec
from test_app_support import RunningApp, make_export, write_image_folder

SPEC = LabelSpec(("Fire", "Grass", "Poison", "Water"), "types", (("Fire", 3), ("Grass|Poison", 2), ("Water", 3)))


def make_cgan_export(out, data):
    torch.manual_seed(0)
    e = CGAN({"g_width": 8, "z_dim": 8, "labels": SPEC.to_json()}, 32, training=False)
    with torch.no_grad():  # an untrained G ignores its labels (gammas 1, betas 0): give each label its own
        for m in e.G.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.gamma.normal_(1.0, 0.5)
                m.beta.normal_(0.0, 0.5)
        [p for p in e.G.parameters() if p.dim() == 4][-1].mul_(60)
    trained = {"run_id": "test-cgan", "epochs": 3, "steps": 15, "batch_size": 8, "image_size": 32, "device": "cpu",
               "dataset": {"name": data.name, "key": "test", "count": 8, "size": 32, "source": str(data),
                           "background": "white"}}
    return save_export(e, out, trained=trained)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-labels")
    data = write_image_folder(root / "data" / "tinyset", n=8, size=32)
    make_export(root / "ck" / "dc", "dcgan", 32, 8, 0, data)
    make_cgan_export(root / "ck" / "cg", data)
    return root


def test_catalog_and_sampling_with_labels(exports):
    cat = ExportCatalog([exports / "ck"])
    assert cat.entries["cg"].vocabulary == ["Fire", "Grass", "Poison", "Water"] and cat.entries["dc"].vocabulary == []
    eng = cat.engine("cg")
    fire, seeds = gan.generate(eng, 5, 3, labels=["Fire"])
    assert seeds == [5, 6, 7]
    assert torch.equal(fire, gan.generate(eng, 5, 3, labels="Fire")[0])           # reproducible by (seed, label)
    assert not torch.equal(fire, gan.generate(eng, 5, 3, labels=["Water"])[0])    # another label, other images
    assert torch.equal(gan.generate(eng, 5, 1, labels=["Grass", "Poison"])[0],
                       gan.generate(eng, 5, 1, labels=["Grass|Poison"])[0])    # two picks = one dual type
    # none chosen: each image's own draw by its seed, so image i of seed s is the image of seed s + i
    mixed, _ = gan.generate(eng, 5, 3)
    assert torch.equal(mixed[2], gan.generate(eng, 7, 1)[0][0])
    with pytest.raises(AppInputError, match="unknown label 'Ghost'; the vocabulary is: Fire, Grass, Poison, Water"):
        gan.generate(eng, 0, 2, labels=["Ghost"])
    with pytest.raises(AppInputError, match="not conditional: it takes no labels"):
        gan.generate(cat.engine("dc"), 0, 2, labels=["Fire"])
    assert gan.generate(cat.engine("dc"), 0, 2, labels=[])[0].shape[0] == 2


def test_picker_shown_only_for_conditional_exports(exports, tmp_path):
    from app.main import create_app

    app = create_app(["--checkpoints", str(exports / "ck"), "--no-shipped", "--review-db",
                      str(tmp_path / "r.sqlite"), "--sd-model", str(tmp_path / "no-sd")])
    *_, pick = app.on_gen_export_change("cg")
    assert pick["visible"] is True and pick["value"] == []
    assert [c if isinstance(c, str) else c[0] for c in pick["choices"]] == ["Fire", "Grass", "Poison", "Water"]
    *_, pick = app.on_gen_export_change("dc")
    assert pick["visible"] is False and not pick["choices"]
    gallery, _grid, seeds, *_ = app.generate("cg", 3, 2, 0.7, False, ["Water"])
    assert [c for _, c in gallery] == ["seed 3 · Water", "seed 4 · Water"]
    gallery, *_ = app.generate("cg", 3, 2, 0.7, False, [])
    assert all(c.split(" · ")[1] in ("Fire", "Grass|Poison", "Water") for _, c in gallery)  # the training mix
    gallery, *_ = app.generate("dc", 3, 2, 0.7, False)
    assert [c for _, c in gallery] == ["seed 3", "seed 4"]
    app.close()


@pytest.mark.slow
def test_generate_api_takes_labels(exports, tmp_path):
    from gradio_client.exceptions import AppError

    a = RunningApp(["--checkpoints", str(exports / "ck"), "--no-shipped", "--review-db", str(tmp_path / "r.sqlite"),
                    "--sd-model", str(tmp_path / "no-sd")])
    try:
        gallery, *_ = a.client.predict("cg", 1, 2, 0.7, False, ["Fire"], api_name="/generate")
        assert [g["caption"] for g in gallery] == ["seed 1 · Fire", "seed 2 · Fire"]
        gallery, *_ = a.client.predict("dc", 1, 2, 0.7, False, api_name="/generate")  # callers without labels
        assert [g["caption"] for g in gallery] == ["seed 1", "seed 2"]
        with pytest.raises(AppError, match="unknown label 'Ghost'"):
            a.client.predict("cg", 1, 2, 0.7, False, ["Ghost"], api_name="/generate")
    finally:
        a.close()
