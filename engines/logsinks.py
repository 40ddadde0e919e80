"""Live mirrors of a run's log for outside viewers: TensorBoard event files and Weights & Biases (docs/training.md).

metrics.jsonl and samples/*.png stay the record; a sink only mirrors them, so a sink that fails (a full disk, a
W&B hiccup) is switched off with one warning and training goes on. The trainer opens the sinks on the main rank
only (the only rank with a RunWriter) and hands them each line it appends and each grid it writes;
``pokelab export-tb RUN`` replays a finished (or running) run's files through the same TensorBoard sink.

What goes where (the same live and replayed):
- training lines: every numeric key under its own name (``loss/D``, ``acc/D_real``, ``img_per_s``, ...);
- evaluation lines: every numeric key under ``eval/`` (``eval/fid``, ``eval/kid``, ``eval/ms_ssim/fake``, ...);
- grids: ``samples/epoch_N.png`` as the image ``samples``, ``samples/NAME_epoch_N.png`` as ``samples/NAME``;
- the run's resolved config as text under ``config`` (TensorBoard) or the run config (W&B).
The x-axis is the epoch (the run format's unit; the studio's default), each point stamped with the line's own
wall time. A resume or a NaN rollback goes back to an earlier epoch: TensorBoard purges the events after it
(``purge_step``), W&B cannot delete history and keeps both (its x-axis is the ``epoch`` key, so nothing is
dropped for going backwards).
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image

from .runs.folder import (RunFormatError, counter_value, read_info, read_metrics, read_regular_bytes,
                          regular_file_problem)

#: where the trainer writes TensorBoard event files, inside the run folder
TB_DIR = "tensorboard"
#: grid files of the run format: the fixed-latent grid ``epoch_N.png`` and an engine's extra ``NAME_epoch_N.png``
GRID_RE = re.compile(r"^(?:(?P<name>[A-Za-z0-9_.-]+?)_)?epoch_(?P<epoch>\d+)\.png$")
#: keys of a metrics line that are bookkeeping, not values to plot
NOT_SCALARS = frozenset({"kind", "epoch", "step", "time", "eval_seed", "event", "message"})
#: a grid bigger than this (bytes) is not mirrored (the PNG in samples/ stays the record)
MAX_GRID_BYTES = 64 * 2**20


class SinkUnavailable(ValueError):
    """A logging sink was asked for but its package is not installed (or the setting is malformed)."""


# ---- what a metrics line holds ---------------------------------------------------------------
def scalars(rec: dict[str, Any]) -> dict[str, float]:
    """The plottable values of one metrics line, tagged as the sinks show them (``eval/`` before evaluation
    keys). Text, lists, null (NaN in the run format) and bookkeeping keys are left out; the run format's
    +-1e308 stands for an infinity and is passed on as one."""
    prefix = "eval/" if rec.get("kind") == "eval" else ""
    out: dict[str, float] = {}
    for k, v in rec.items():
        if k in NOT_SCALARS or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        v = float(v)
        if math.isnan(v):
            continue
        if abs(v) >= 1e300:
            v = math.copysign(math.inf, v)
        out[prefix + str(k)] = v
    return out


def grid_tag(name: str) -> tuple[str, int] | None:
    """(tag, epoch) of a grid file name of the run format, None for anything else."""
    m = GRID_RE.match(name)
    if not m:
        return None
    return ("samples" + (f"/{m.group('name')}" if m.group("name") else ""), int(m.group("epoch")))


def grid_files(run_dir: str | os.PathLike, epoch: int | None = None,
               skipped: list[str] | None = None) -> list[tuple[int, str, Path]]:
    """(epoch, tag, path) of the run's grids (of one epoch when given), by epoch then tag. Only regular files
    count: a link, FIFO or folder in their place is left out and named in ``skipped``."""
    d = Path(run_dir) / "samples"
    if d.is_symlink() or not d.is_dir():
        return []
    out = []
    for f in d.iterdir():
        tagged = grid_tag(f.name)
        if tagged is None or (epoch is not None and tagged[1] != epoch):
            continue
        why = regular_file_problem(f)
        if why is not None:
            if skipped is not None:
                skipped.append(f"samples/{why}; not mirrored")
            continue
        out.append((tagged[1], tagged[0], f))
    return sorted(out)


class Grid(NamedTuple):
    png: bytes     # the file's bytes: sinks pass them on as they are (re-encoding a 64-image grid takes ~1 s)
    width: int
    height: int
    channels: int
    path: Path


def read_grid(path: Path) -> Grid:
    """A grid PNG, read without following a link (``read_regular_bytes``) and checked to be a whole PNG (its
    chunks' checksums; the pixels are not decoded)."""
    data = read_regular_bytes(path, MAX_GRID_BYTES)
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise ValueError(f"a {im.format} file, not a PNG")
            channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(im.mode, 3)
            size = im.size
            im.verify()  # a grid cut short (a copy still being made) is not passed on
        return Grid(data, size[0], size[1], channels, Path(path))
    except (OSError, SyntaxError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"not a readable image ({e})") from None


# ---- availability ------------------------------------------------------------------------------
def _require(module: str, package: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise SinkUnavailable(f"{what} needs the {package!r} package, which is not installed: pip install {package}")


def check_available(cfg) -> None:
    """Fail before training starts when a sink is asked for but cannot be had (the trainer calls this first)."""
    if getattr(cfg, "tensorboard", False):
        _require("tensorboard", "tensorboard", "--set tensorboard=true")
    project = getattr(cfg, "wandb_project", None)
    if project is not None:
        if isinstance(project, int) and not isinstance(project, bool):
            project = str(project)  # --set wandb_project=2024 parses as a number
        if not isinstance(project, str) or not project.strip() or len(project) > 128 \
                or any(c in project for c in "/\\#?%:"):
            raise SinkUnavailable(f"wandb_project must be a W&B project name (up to 128 characters, none of "
                                  f"/ \\ # ? % :), got {project!r}")
        _require("wandb", "wandb", "--set wandb_project=NAME")


# ---- sinks -----------------------------------------------------------------------------------
class _TensorBoard:
    name = "TensorBoard"

    def __init__(self, log_dir: Path, first_epoch: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self._cls, self.log_dir = SummaryWriter, Path(log_dir)
        self._open(first_epoch)

    def _open(self, first_epoch: int | None) -> None:
        # purge_step: a new event file that tells readers to drop what an older file holds from that epoch on
        self.w = self._cls(str(self.log_dir), purge_step=first_epoch, flush_secs=30)

    def line(self, rec: dict[str, Any], epoch: int, when: float | None) -> None:
        if rec.get("kind", "train") in ("train", "eval"):
            for tag, v in scalars(rec).items():
                self.w.add_scalar(tag, v, global_step=epoch, walltime=when)

    def image(self, tag: str, grid: Grid, epoch: int, when: float | None) -> None:
        # add_image takes pixels and encodes them again (~1.5 s for a 64-image 128 px grid): the file already is
        # a PNG, its bytes go in as they are
        from tensorboard.compat.proto.summary_pb2 import Summary

        img = Summary.Image(height=grid.height, width=grid.width, colorspace=grid.channels,
                            encoded_image_string=grid.png)
        self.w._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=img)]), epoch, when)

    def text(self, tag: str, text: str) -> None:
        self.w.add_text(tag, text, global_step=0)

    def flush(self) -> None:
        self.w.flush()

    def rewind(self, epoch: int) -> None:
        self.w.close()
        self._open(epoch + 1)

    def close(self, status: str) -> None:
        self.w.close()


class _WandB:
    name = "Weights & Biases"

    def __init__(self, project: str, run_dir: Path, info: dict[str, Any]):
        import wandb

        self.wandb = wandb
        run_id = str(info.get("run_id") or run_dir.name)
        # the run id as W&B's id: a resumed training continues the same W&B run (resume="allow")
        wid = re.sub(r"[^A-Za-z0-9_-]", "-", run_id)[:64]
        config = dict(info.get("config") or {})
        config["engine_config"] = config.pop("engine", None)  # "engine" is the engine's name here
        self.run = wandb.init(project=project, name=run_id, id=wid, resume="allow", dir=str(run_dir),
                              config={"engine": info.get("engine"), **config}, job_type="train")
        # the epoch is the x-axis of everything: going back to an earlier epoch (resume, rollback) is then
        # accepted, where W&B's own step would have to grow and would drop the replayed lines
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")

    def line(self, rec: dict[str, Any], epoch: int, when: float | None) -> None:
        if rec.get("kind", "train") in ("train", "eval"):
            self.run.log({**scalars(rec), "epoch": epoch})

    def image(self, tag: str, grid: Grid, epoch: int, when: float | None) -> None:
        # from the file: W&B copies the PNG into its media folder (no decode, no re-encode)
        self.run.log({tag: self.wandb.Image(str(grid.path), caption=f"epoch {epoch}"), "epoch": epoch})

    def text(self, tag: str, text: str) -> None:
        pass  # the config went to wandb.init

    def flush(self) -> None:
        pass

    def rewind(self, epoch: int) -> None:
        pass  # W&B keeps history; the x-axis (epoch) shows the replay

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status in ("finished", "interrupted") else 1)


class LogSinks:
    """The sinks of one run. Every call is safe: a sink that raises is closed, named once in a warning (and in
    ``problems``) and not called again, so a viewer can never stop a training."""

    def __init__(self, sinks: list[Any], report=None):
        self.sinks = sinks
        self.problems: list[str] = []
        self.report = report  # e.g. the run's log.txt appender: where a problem is written besides the warning

    def _problem(self, msg: str) -> None:
        self.problems.append(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        if self.report is not None:
            try:
                self.report(f"warning: {msg}")
            except Exception:  # noqa: BLE001
                pass

    @classmethod
    def open(cls, run_dir: str | os.PathLike, cfg, info: dict[str, Any] | None = None,
             first_epoch: int | None = None, report=None) -> "LogSinks | None":
        """The sinks ``cfg`` asks for (None when none). ``first_epoch``: where a resumed run goes on from (its
        events after the checkpoint's epoch are purged from TensorBoard)."""
        check_available(cfg)
        run_dir = Path(run_dir)
        info = info or {}
        out = cls([], report)
        wanted = []
        if getattr(cfg, "tensorboard", False):
            wanted.append(lambda: _TensorBoard(run_dir / TB_DIR, first_epoch))
        if getattr(cfg, "wandb_project", None):
            wanted.append(lambda: _WandB(str(cfg.wandb_project), run_dir, info))
        for make in wanted:
            try:
                s = make()
            except Exception as e:  # noqa: BLE001 — e.g. W&B online without a login: train on, say so
                out._problem(f"logging sink not started: {type(e).__name__}: {e} (training goes on without it)")
                continue
            out.sinks.append(s)
        out._each("text", "config", "```\n" + json.dumps(info.get("config") or {}, indent=1, default=str) + "\n```")
        return out if out.sinks or out.problems else None

    def _each(self, fn: str, *args) -> None:
        for s in list(self.sinks):
            try:
                getattr(s, fn)(*args)
            except Exception as e:  # noqa: BLE001 — a mirror must never stop training
                self.sinks.remove(s)
                self._problem(f"{s.name} logging stopped: {type(e).__name__}: {e} "
                              "(metrics.jsonl and samples/ are complete)")
                try:
                    s.close("failed")
                except Exception:  # noqa: BLE001
                    pass

    def line(self, rec: dict[str, Any]) -> None:
        """One metrics.jsonl record as the RunWriter wrote it."""
        epoch = counter_value(rec.get("epoch", 0))
        if epoch is None:
            return
        when = rec.get("time") if isinstance(rec.get("time"), (int, float)) else None
        self._each("line", rec, epoch, when)
        self._each("flush")  # viewers see each epoch as it ends (one small write per epoch)

    def grids(self, run_dir: str | os.PathLike, epoch: int, when: float | None = None) -> None:
        """The grids the trainer just wrote for ``epoch`` (all of samples/*epoch_N.png)."""
        for ep, tag, path in grid_files(run_dir, epoch):
            try:
                img = read_grid(path)
            except (OSError, RunFormatError, ValueError) as e:
                self._problem(f"samples/{path.name}: {e}; not mirrored")
                continue
            self._each("image", tag, img, ep, when)
        self._each("flush")

    def rewind(self, epoch: int) -> None:
        """The run went back to ``epoch`` (NaN rollback): what was logged after it will be logged again."""
        self._each("rewind", epoch)

    def close(self, status: str = "finished") -> None:
        self._each("close", status)
        self.sinks = []


# ---- export-tb -------------------------------------------------------------------------------
def export_tensorboard(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write a run's metrics.jsonl and grids as TensorBoard event files into ``out`` (default RUN/tensorboard).
    Tolerant like every reader of the run format: a partial last line, malformed lines and unknown keys are
    skipped or ignored (``warnings`` says which). Refuses an ``out`` that already holds event files (a live
    training's, or an earlier export): the two would show every point twice."""
    run_dir = Path(run_dir)
    info = read_info(run_dir)  # a run folder at all (clear error otherwise)
    out = Path(out) if out is not None else run_dir / TB_DIR
    if out.is_symlink():
        raise RunFormatError(f"{out} is a symbolic link; give a real folder with --out")
    if out.is_dir() and any(p.name.startswith("events.out.tfevents.") for p in out.iterdir()):
        raise RunFormatError(f"{out} already holds TensorBoard event files (written during training, or an earlier "
                             "export); give another folder with --out, or remove those files first")
    _require("tensorboard", "tensorboard", "pokelab export-tb")
    m = read_metrics(run_dir)
    notes = list(m.warnings)
    # by epoch, training before evaluation (the order the trainer logs them); event lines are not mirrored
    lines = sorted(m.train + m.eval, key=lambda r: (counter_value(r.get("epoch", 0)) or 0, r.get("kind") == "eval"))
    times = {counter_value(r.get("epoch")): r.get("time") for r in m.train}
    tb = _TensorBoard(out)
    counts = {"scalars": 0, "images": 0, "lines": 0}
    try:
        tb.text("config", "```\n" + json.dumps(info.get("config") or {}, indent=1, default=str) + "\n```")
        for rec in lines:
            epoch = counter_value(rec.get("epoch", 0))
            if epoch is None:
                notes.append(f"a {rec.get('kind', 'train')} line with epoch {rec.get('epoch')!r} skipped")
                continue
            when = rec.get("time") if isinstance(rec.get("time"), (int, float)) else None
            tb.line(rec, epoch, when)
            counts["lines"] += 1
            counts["scalars"] += len(scalars(rec))
        for epoch, tag, path in grid_files(run_dir, skipped=notes):
            try:
                img = read_grid(path)
            except (OSError, RunFormatError, ValueError) as e:
                notes.append(f"samples/{path.name}: {e}; skipped")
                continue
            when = times.get(epoch)
            tb.image(tag, img, epoch, when if isinstance(when, (int, float)) else path.stat().st_mtime)
            counts["images"] += 1
    finally:
        tb.close("finished")
    return {"out": out, "warnings": notes, **counts}


def _export_tb_command(args) -> int:
    res = export_tensorboard(args.run, args.out)
    for w in res["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {res['scalars']} scalar(s) from {res['lines']} line(s) and {res['images']} grid(s) to {res['out']}"
          f"\nview with: tensorboard --logdir {res['out']}")
    return 0


def add_export_tb_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-tb", help="a run's metrics and sample grids as TensorBoard event files")
    p.add_argument("run", help="run folder")
    p.add_argument("--out", help="folder for the event files (default: RUN/tensorboard)")
    p.set_defaults(func=_export_tb_command)
