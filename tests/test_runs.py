import json
import os

import pytest

from engines.runs.folder import (RunFormatError, RunWriter, atomic_write_json, find_runs, list_samples, make_run_id,
                                 read_info, read_metrics)


def test_writer_and_tolerant_reader(tmp_path):
    w = RunWriter(tmp_path / "r")
    w.write_info({"run_id": "r", "engine": "dcgan", "status": "running"})
    w.log("train", 1, 10, **{"loss/D": 1.5, "new_key": [1, 2]})
    w.log("eval", 1, 10, fid=99.5, nan_value=float("nan"))
    w.log("event", 1, 10, event="resumed", message="x")
    with open(w.metrics_path, "a") as f:
        f.write("not json\n")
        f.write('{"kind": "train", "epoch": 2, "ste')  # partial last line
    m = read_metrics(w.dir)
    assert [r["epoch"] for r in m.train] == [1] and m.train[0]["new_key"] == [1, 2]
    assert m.eval[0]["fid"] == 99.5 and m.eval[0]["nan_value"] is None
    assert m.events[0]["event"] == "resumed"
    assert any("malformed" in x for x in m.warnings) and any("partial last line" in x for x in m.warnings)
    assert read_info(w.dir)["status"] == "running" and "updated" in read_info(w.dir)


def test_truncate_after_drops_later_epochs_and_torn_lines(tmp_path):
    w = RunWriter(tmp_path)
    for e in (1, 2, 3):
        w.log("train", e, e * 5, x=e)
    with open(w.metrics_path, "a") as f:
        f.write('{"kind": "tr')
    assert w.truncate_after(2) == 2
    assert [r["epoch"] for r in read_metrics(tmp_path).train] == [1, 2]
    assert w.metrics_path.read_text().endswith("\n")


def test_read_info_errors(tmp_path):
    with pytest.raises(RunFormatError, match="not a run directory"):
        read_info(tmp_path)
    (tmp_path / "run.json").write_text("{broken")
    with pytest.raises(RunFormatError, match="malformed JSON"):
        read_info(tmp_path)


def test_atomic_write_leaves_no_temp_files_and_keeps_old_on_failure(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": object()})
    assert json.loads(p.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["a.json"]


def test_find_runs_and_samples(tmp_path):
    for name in ("x/r1", "x/deeper/r2"):
        RunWriter(tmp_path / name).write_info({"run_id": name})
    (tmp_path / "x/r1/samples/epoch_000010.png").write_bytes(b"")
    (tmp_path / "x/r1/samples/epoch_000002.png").write_bytes(b"")
    (tmp_path / "x/r1/samples/recon_epoch_000002.png").write_bytes(b"")
    runs = find_runs([tmp_path, tmp_path / "missing"])
    assert [r.name for r in runs] == ["r2", "r1"] or sorted(r.name for r in runs) == ["r1", "r2"]
    assert [e for e, _ in list_samples(tmp_path / "x/r1")] == [2, 10]


def test_run_id_is_safe():
    import datetime as dt

    rid = make_run_id("dcgan", "my data/../x", dt.datetime(2026, 1, 2, 3, 4, 5))
    assert rid == "20260102-030405-dcgan-my-data-..-x" or "/" not in rid
    assert "/" not in rid and rid.startswith("20260102-030405-dcgan-")
