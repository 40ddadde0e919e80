"""The `pokelab` command line: sampling, interpolation, GIFs and clear errors with exit codes."""
import pytest
import torch
from PIL import Image

from engines.cli import main
from engines.config import TrainConfig
from engines.trainer import Trainer


@pytest.fixture
def trained_run(tmp_path, tiny_dataset):
    cfg = TrainConfig(image_size=32, batch_size=8, epochs=2, sample_every=1, eval_every=0, grid_n=4,
                      engine={"g_width": 8, "d_width": 8, "z_dim": 16})
    return Trainer("dcgan", tiny_dataset, tmp_path / "runs", cfg, progress=False).fit()


def test_sample_writes_grid_of_requested_size(trained_run, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["sample", str(trained_run / "export"), "--n", "6", "--seed", "3", "--out", str(out)]) == 0
    im = Image.open(out)
    # 6 images -> 3 per row, 2 rows of 32 px with 2 px padding
    assert im.size == (3 * 34 + 2, 2 * 34 + 2)
    # a run folder works too and the same seed gives the same pixels
    out2 = tmp_path / "grid2.png"
    assert main(["sample", str(trained_run), "--n", "6", "--seed", "3", "--out", str(out2)]) == 0
    assert out.read_bytes() == out2.read_bytes()


def test_interpolate_writes_frames(trained_run, tmp_path):
    out = tmp_path / "walk.gif"
    assert main(["interpolate", str(trained_run), "--seeds", "1", "2", "3", "--frames", "5", "--out", str(out)]) == 0
    im = Image.open(out)
    assert im.n_frames == 9 and im.size == (32, 32)  # two legs of 5 sharing the middle frame
    first = torch.tensor(list(im.convert("RGB").getdata()))
    im.seek(8)
    assert not torch.equal(first, torch.tensor(list(im.convert("RGB").getdata())))


def test_gif_timeline(trained_run, tmp_path):
    out = tmp_path / "p.gif"
    assert main(["gif", str(trained_run), "--out", str(out), "--fps", "2"]) == 0
    im = Image.open(out)
    assert im.n_frames == 2 and im.size[1] > im.size[0]  # two grids, a label band under each
    first = im.info["duration"]
    im.seek(1)
    assert first == 500 and im.info["duration"] == 2000  # the last grid is held 1.5 s longer


def test_clear_errors(tmp_path, capsys, tiny_dataset):
    assert main(["train", "nosuchgan", "--data", str(tmp_path)]) == 2
    assert "unknown engine 'nosuchgan'" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["sample", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "not a pokelab export" in capsys.readouterr().err
    assert main(["gif", str(tmp_path)]) == 2
    assert main(["train", "dcgan", "--set", "g_widht=3", "--data", str(tmp_path)]) == 2
    assert "no setting 'g_widht'" in capsys.readouterr().err
    assert main(["sample", str(tmp_path), "--n", "0"]) == 2


def test_train_on_empty_folder_fails_clearly(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["train", "dcgan", "--data", str(tmp_path / "empty"), "--runs", str(tmp_path / "runs")])
    assert code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_every_subcommand_prints_its_help():
    # a stray '%' in a help string breaks `--help` only when it is asked for (argparse formats lazily)
    import pytest as _pytest

    from engines.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert len(subs.choices) >= 5
    for name, sub in subs.choices.items():
        text = sub.format_help()
        assert name in text or "usage" in text
    with _pytest.raises(SystemExit) as e:
        parser.parse_args(["eval", "--help"])
    assert e.value.code == 0
