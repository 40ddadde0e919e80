"""Labels as data (engines.labels): CSV by id or file, stylegan2-ada's dataset.json, multi-label rows, every image
or row left out named in the report, clear errors, and a content key that covers the labels."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from engines.cli import main
from engines.data.prepare import load_dataset
from engines.labels import (LabelError, LabelSpec, UnknownLabelError, load_labels, read_labels,
                            reattach, split_values)


def write_images(folder, names, size=8):
    for i, name in enumerate(names):
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        arr = np.full((size, size, 3), (i * 37) % 256, np.uint8)
        arr[0, 0] = (i, 255 - i, 7)  # distinct bytes per picture
        Image.fromarray(arr).save(p)
    return folder


@pytest.fixture
def pics(tmp_path):
    """Images 1..6 as <id>.png, prepared at 8 px."""
    d = write_images(tmp_path / "pics", [f"{i}.png" for i in range(1, 7)])
    return load_dataset(d, size=8, cache_dir=tmp_path / "cache", progress=False)


def csv_file(tmp_path, text, name="species.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


SPECIES = """id,name,types,generation
1,Bulbasaur,Grass|Poison,1
2,Ivysaur,Grass|Poison,1
3,Charmander,Fire,1
4,Squirtle,Water,1
5,Pikachu,Electric,1
6,Vulpix,Fire,1
"""


def test_csv_by_id_is_multi_hot_in_image_order(tmp_path, pics):
    ds = load_labels(pics, csv_file(tmp_path, SPECIES), "types")
    spec = ds.label_spec
    assert spec.vocabulary == ("Electric", "Fire", "Grass", "Poison", "Water")  # sorted, from the data
    assert spec.column == "types" and spec.multi_label
    assert ds.files == pics.files and len(ds) == 6 and torch.equal(ds.images, pics.images)
    by_file = dict(zip(ds.files, spec.decode(ds.labels)))
    assert by_file == {"1.png": "Grass|Poison", "2.png": "Grass|Poison", "3.png": "Fire", "4.png": "Water",
                       "5.png": "Electric", "6.png": "Fire"}
    row = ds.labels[ds.files.index("1.png")]
    assert row.dtype == torch.float32 and row.tolist() == [0, 0, 1, 1, 0]
    assert dict(spec.counts) == {"Electric": 1, "Fire": 2, "Grass|Poison": 2, "Water": 1}
    assert ds.label_report.lines() == [f"labels: 6 image(s) labelled from {tmp_path / 'species.csv'}"]
    # the rest of the set is the image set's
    assert ds.name == pics.name and ds.size == 8 and ds.image_key == pics.key


def test_csv_by_file_with_subfolders_and_zero_padded_ids(tmp_path):
    d = write_images(tmp_path / "pics", ["fire/001.png", "water/002.png", "water/010.png"])
    ds0 = load_dataset(d, size=8, cache_dir=tmp_path / "cache", progress=False)
    by_file = csv_file(tmp_path, "file,label\nfire/001.png,Fire\nwater/002.png,Water\nwater/010,Water\n", "f.csv")
    ds = load_labels(ds0, by_file)  # 'label' is taken without --label-column
    assert dict(zip(ds.files, ds.label_spec.decode(ds.labels))) == {
        "fire/001.png": "Fire", "water/002.png": "Water", "water/010.png": "Water"}
    by_id = csv_file(tmp_path, "id,label\n1,Fire\n2,Water\n10,Water\n", "i.csv")  # '001' is id 1
    assert load_labels(ds0, by_id).key == ds.key  # same labels on the same images: the same content key


def test_stylegan2_ada_dataset_json(tmp_path, pics):
    meta = {"labels": [[f"{i}.png", i % 3] for i in range(1, 6)] + [["6.png", 5]]}
    p = tmp_path / "dataset.json"
    p.write_text(json.dumps(meta))
    ds = load_labels(pics, p)
    assert ds.label_spec.vocabulary == ("0", "1", "2", "3", "4", "5")  # class indices keep their numbers
    assert not ds.label_spec.multi_label
    assert dict(zip(ds.files, ds.label_spec.decode(ds.labels)))["6.png"] == "5"
    assert ds.labels.argmax(1).tolist() == [int(t) for t in ds.label_spec.decode(ds.labels)]
    with pytest.raises(LabelError, match="--label-column does not apply"):
        read_labels(p, "types")
    p.write_text(json.dumps({"labels": [["1.png", [0.5, 0.5]]]}))
    with pytest.raises(LabelError, match="vector labels are not supported"):
        read_labels(p)
    p.write_text(json.dumps({"labels": None}))
    with pytest.raises(LabelError, match="at least one entry"):
        read_labels(p)


def test_missing_unmatched_and_unknown_are_reported_by_name(tmp_path, pics):
    text = "id,types\n1,Grass|Poison\n2,\n3,Fire\n4,Water\n6,Fire\n151,Psychic\n999,Ghost\n"  # 5: no row; 2: empty
    ds = load_labels(pics, csv_file(tmp_path, text))
    rep = ds.label_report
    assert rep.unlabelled == ["2.png", "5.png"] and rep.unmatched == ["151", "999"] and rep.labelled == 4
    assert ds.files == ["1.png", "3.png", "4.png", "6.png"] and len(ds.images) == 4 == len(ds.labels)
    assert torch.equal(ds.images[1], pics.images[pics.files.index("3.png")])
    text_out = rep.format()
    assert "left out 2 image(s) without a label: 2.png, 5.png" in text_out
    assert "2 label row(s) match no image: 151, 999" in text_out
    assert "Psychic" not in ds.label_spec.vocabulary  # only labels of images that are there
    assert ds.label_record["unlabelled"] == 2 and ds.label_record["unmatched_names"] == ["151", "999"]
    # a fixed vocabulary (a resumed run's): other values are unknown, reported with their image
    fixed = load_labels(pics, csv_file(tmp_path, SPECIES, "s.csv"), "types",
                        vocabulary=["Fire", "Grass", "Poison", "Water"])
    assert fixed.label_report.unknown == [("5.png", "Electric")]
    assert "5.png (Electric)" in fixed.label_report.format() and "5.png" not in fixed.files


def test_clear_errors(tmp_path, pics):
    with pytest.raises(LabelError, match="none of its 2 row"):  # matches no image at all
        load_labels(pics, csv_file(tmp_path, "id,types\n700,Fire\n701,Water\n", "none.csv"))
    with pytest.raises(LabelError, match=r"choose one with --label-column \(name, types, generation\)"):
        read_labels(csv_file(tmp_path, SPECIES))
    with pytest.raises(LabelError, match="no column 'colour'"):
        read_labels(csv_file(tmp_path, SPECIES), "colour")
    with pytest.raises(LabelError, match="no 'file' or 'id' column"):
        read_labels(csv_file(tmp_path, "name,types\nBulbasaur,Grass\n", "nokey.csv"))
    with pytest.raises(LabelError, match=r"id '3' appears twice \(line 2 and line 3\)"):
        read_labels(csv_file(tmp_path, "id,types\n3,Fire\n3,Water\n", "dup.csv"))
    with pytest.raises(LabelError, match="line 2: label 'Grass\\|' has an empty part"):
        read_labels(csv_file(tmp_path, "id,types\n1,Grass|\n", "empty.csv"))
    with pytest.raises(LabelError, match="no such labels file"):
        read_labels(tmp_path / "missing.csv")
    d = write_images(tmp_path / "two", ["a/1.png", "b/1.png"])
    two = load_dataset(d, size=8, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(LabelError, match="matches 2 images"):
        load_labels(two, csv_file(tmp_path, "id,types\n1,Fire\n", "amb.csv"))
    with pytest.raises(LabelError, match="labelled twice"):
        load_labels(pics, csv_file(tmp_path, "file,types\n1.png,Fire\n1,Water\n", "twice.csv"))


def test_content_key_covers_the_labels(tmp_path, pics):
    base = load_labels(pics, csv_file(tmp_path, SPECIES), "types")
    assert base.key != pics.key and len(base.key) == 16
    # reordered rows and another column do not change it
    lines = SPECIES.strip().splitlines()
    shuffled = "\n".join([lines[0] + ",extra"] + [ln + ",x" for ln in reversed(lines[1:])]) + "\n"
    assert load_labels(pics, csv_file(tmp_path, shuffled, "b.csv"), "types").key == base.key
    # one changed label does, and so does another column of the same file
    changed = SPECIES.replace("6,Vulpix,Fire", "6,Vulpix,Fire|Ghost")
    assert load_labels(pics, csv_file(tmp_path, changed, "c.csv"), "types").key != base.key
    assert load_labels(pics, csv_file(tmp_path, SPECIES), "generation").key != base.key


def test_spec_json_round_trip_encode_and_draw():
    spec = LabelSpec(("Fire", "Grass", "Poison"), "types", (("Fire", 3), ("Grass|Poison", 1)))
    again = LabelSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec
    assert spec.encode(["Poison|Grass", ["Fire"]]).tolist() == [[0, 1, 1], [1, 0, 0]]
    with pytest.raises(UnknownLabelError, match="unknown label 'Water'; the vocabulary is: Fire, Grass, Poison"):
        spec.indices("Grass|Water")
    a, b = spec.draw(200, seed=3), spec.draw(200, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, spec.draw(200, seed=4))
    combos = set(spec.decode(a))
    assert combos == {"Fire", "Grass|Poison"}  # only combinations the training set had
    assert 0.6 < spec.decode(a).count("Fire") / 200 < 0.9  # about 3:1
    for bad, msg in (({"vocabulary": "Fire"}, "list of label texts"), ({"vocabulary": ["A|B"]}, "without"),
                     ({"vocabulary": ["A"], "counts": {"B": 2}}, "unknown label 'B'"),
                     ({"vocabulary": ["A"], "counts": {"A": -1}}, "counts")):
        with pytest.raises(LabelError, match=msg):
            LabelSpec.from_json(bad)
    assert split_values(" Fire | Fire ") == ("Fire",) and split_values("") == ()


def test_reattach_uses_the_recorded_file_column_and_vocabulary(tmp_path, pics):
    ds = load_labels(pics, csv_file(tmp_path, SPECIES), "types")
    again = reattach(pics, json.loads(json.dumps(ds.label_record)))
    assert again.key == ds.key and torch.equal(again.labels, ds.labels)
    assert reattach(pics, None) is pics


EGGS = """id,types,egg_groups
1,Grass|Poison,Monster|Grass
2,Grass|Poison,Monster|Grass
3,Fire,Monster|Dragon
4,Water,Monster|Water 1
5,Electric,Field|Fairy
6,Fire,Field
"""


def test_several_columns_pool_their_labels_each_later_one_named(tmp_path, pics):
    path = csv_file(tmp_path, EGGS)
    ds = load_labels(pics, path, "types, egg_groups")
    spec = ds.label_spec
    # an egg group "Grass" is not the type "Grass"
    assert spec.vocabulary == ("egg_groups:Dragon", "egg_groups:Fairy", "egg_groups:Field", "egg_groups:Grass",
                               "egg_groups:Monster", "egg_groups:Water 1", "Electric", "Fire", "Grass",
                               "Poison", "Water")
    by_file = dict(zip(ds.files, spec.decode(ds.labels)))
    assert by_file["1.png"] == "egg_groups:Grass|egg_groups:Monster|Grass|Poison"
    assert by_file["6.png"] == "egg_groups:Field|Fire"
    assert ds.label_record["column"] == "types, egg_groups"
    # a resumed run reads the same columns again
    again = reattach(pics, json.loads(json.dumps(ds.label_record)))
    assert torch.equal(again.labels, ds.labels) and again.label_spec.vocabulary == spec.vocabulary
    # a header that has a column of that very name keeps it as one column
    odd = csv_file(tmp_path, 'id,"types,egg_groups"\n' + "".join(f"{i},T{i % 2}\n" for i in range(1, 7)), "odd.csv")
    assert load_labels(pics, odd, "types,egg_groups").label_spec.vocabulary == ("T0", "T1")
    for column, message in (("types,", "empty column name"), ("types,types", "names a column twice"),
                            ("types,weight", "no column 'weight'"), ("types,id", "names the images")):
        with pytest.raises(LabelError, match=message):
            read_labels(path, column)


def test_cli_refuses_labels_for_unconditional_engines_and_cgan_without(tmp_path, pics, capsys):
    src = pics.source
    labels = csv_file(tmp_path, SPECIES)
    assert main(["train", "dcgan", "--data", src, "--labels", str(labels), "--runs", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "engine 'dcgan' is not conditional and cannot use --labels" in err and "cgan" in err
    assert main(["train", "cgan", "--data", src, "--image-size", "8", "--runs", str(tmp_path / "r")]) == 2
    assert "is conditional: give the labels with --labels FILE" in capsys.readouterr().err
    assert main(["train", "cgan", "--data", src, "--labels", str(tmp_path / "none.csv"),
                 "--runs", str(tmp_path / "r")]) == 2
    assert "no such labels file" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing was created
