"""``pokelab sweep GRID.toml``: a grid of training runs under one tag (docs/sweeps.md).

The file names a ``tag``, the settings every run shares (``[base]``) and what varies: a ``[grid]`` of lists (their
cartesian product) and/or a list of ``[[run]]`` tables (each an explicit run, with an optional ``name``). Settings
are flat: the ``pokelab train`` options by name (engine, data, labels, label_column, epochs, batch_size,
image_size, seed, max_hours, source, target) and anything else is a ``--set key=value`` (trainer or engine
setting). Each run is ``pokelab train`` with ``--tag TAG``; run.json records the tag and the run's place in the
grid (``sweep``: name, settings, what varied, key). Running the sweep again skips finished runs with the same
tag and settings, resumes interrupted ones and starts the rest, one after another or ``--parallel N`` at a time
(subprocesses, each with 1/N of the CPU threads).
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

#: settings that are ``pokelab train`` options (value: the flag); every other key is passed as --set
TRAIN_FLAGS = {"data": "--data", "labels": "--labels", "label_column": "--label-column", "epochs": "--epochs",
               "batch_size": "--batch-size", "image_size": "--image-size", "seed": "--seed",
               "max_hours": "--max-hours", "source": "--source", "target": "--target"}
TOP_KEYS = {"tag", "runs_dir", "base", "grid", "run"}
MAX_RUNS = 1000
#: run statuses that count as done (not started again); "failed" too unless --retry-failed
DONE = ("finished",)


class SweepError(ValueError):
    """The sweep file cannot be used (unreadable, unknown keys, a setting the engine refuses, ...)."""


@dataclass
class SweepRun:
    name: str
    settings: dict[str, Any]   # everything: base + grid point + run table (no name)
    varied: dict[str, Any]     # what is not the same in every run of the sweep
    key: str                   # hash of the settings: with the tag, what identifies the run on disk

    def info(self, tag: str, path: str) -> dict[str, Any]:
        return {"tag": tag, "name": self.name, "key": self.key, "settings": self.settings, "varied": self.varied,
                "file": path}

    def train_argv(self, tag: str, runs_dir: str, path: str, progress: bool | None = None) -> list[str]:
        s = dict(self.settings)
        argv = ["train", str(s.pop("engine")), "--runs", runs_dir, "--tag", tag,
                "--sweep-info", json.dumps(self.info(tag, path), sort_keys=True)]
        for k in sorted(s):
            v = s[k]
            if k in TRAIN_FLAGS:
                argv += [TRAIN_FLAGS[k], str(v)]
            else:
                argv += ["--set", f"{k}={json.dumps(v)}"]  # JSON: the text 'none' stays text, not null
        return argv + _progress_flag(progress)


def _progress_flag(progress: bool | None) -> list[str]:
    return [] if progress is None else ["--progress" if progress else "--no-progress"]


@dataclass
class Sweep:
    tag: str
    runs: list[SweepRun]
    path: str
    runs_dir: str = "runs"


def _plain(v: Any, where: str) -> Any:
    """Setting values are what --set can carry: text, numbers, true/false, lists of those."""
    if isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, list) and all(isinstance(x, (str, bool, int, float)) for x in v):
        return v
    raise SweepError(f"{where}: {v!r} is not a plain value (text, number, true/false or a list of those)")


def _settings(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SweepError(f"{where} must be a table of settings")
    out = {}
    for k, v in table.items():
        if not isinstance(k, str) or not k or "=" in k:
            raise SweepError(f"{where}: {k!r} is not a setting name")
        out[k] = _plain(v, f"{where}.{k}")
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SweepError(f"{path}: cannot read the sweep file ({e.strerror or e})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SweepError(f"{path}: YAML sweep files need pyyaml (pip install pyyaml); or write it as TOML") from None
        try:
            doc = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise SweepError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    else:
        import tomllib

        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SweepError(f"{path}: not valid TOML ({e})") from None
    if not isinstance(doc, dict):
        raise SweepError(f"{path}: expected a table with tag, base, grid and/or run")
    return doc


def _auto_name(varied: dict[str, Any]) -> str:
    return ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in varied.items()
                    if v is not None) or "base"


def load_sweep(path: str | os.PathLike) -> Sweep:
    """The sweep file as a list of runs, each checked against its engine's settings (a typo fails here, before
    hours of training, naming the run)."""
    p = Path(path)
    doc = _read(p)
    unknown = set(doc) - TOP_KEYS
    if unknown:
        raise SweepError(f"{p}: unknown key(s) {', '.join(sorted(unknown))}; a sweep file has "
                         f"{', '.join(sorted(TOP_KEYS))} (settings go in [base], [grid] or [[run]])")
    tag = doc.get("tag")
    if not isinstance(tag, str) or not tag.strip() or len(tag) > 100 or not tag.isprintable():
        raise SweepError(f"{p}: 'tag' must be a short line of text naming the sweep (runs are grouped by it)")
    base = _settings(doc.get("base", {}), "base")
    grid = _settings(doc.get("grid", {}), "grid")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise SweepError(f"{p}: grid.{k} must be a non-empty list of values (the grid takes every one)")
    tables = doc.get("run", [{}])
    if not isinstance(tables, list) or not tables:
        raise SweepError(f"{p}: 'run' must be a list of tables ([[run]] in TOML)")
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
    if len(points) * len(tables) > MAX_RUNS:
        raise SweepError(f"{p}: {len(points) * len(tables)} runs; a sweep may have at most {MAX_RUNS}")
    drafts = []
    for i, table in enumerate(tables):
        table = dict(_settings(table, f"run[{i}]"))
        name = table.pop("name", None)
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise SweepError(f"{p}: run[{i}].name must be text")
        for point in points:
            both = set(point) & set(table)
            if both:
                raise SweepError(f"{p}: run[{i}] and the grid both set {', '.join(sorted(both))}")
            settings = {**base, **point, **table}
            run_name = name if name and not point else f"{name}/{_auto_name(point)}" if name else None
            drafts.append((run_name, settings))
    keys = sorted({k for _, s in drafts for k in s})
    same = {k for k in keys if all(k in s for _, s in drafts) and len({json.dumps(s[k]) for _, s in drafts}) == 1}
    runs: list[SweepRun] = []
    seen: dict[str, int] = {}
    for run_name, settings in drafts:
        varied = {k: settings.get(k) for k in keys if k not in same}
        name = run_name or _auto_name(varied)
        if name in seen:
            raise SweepError(f"{p}: two runs are both named {name!r}; give each [[run]] its own name")
        seen[name] = len(runs)
        canon = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        runs.append(SweepRun(name, settings, varied, hashlib.sha256(canon.encode()).hexdigest()[:16]))
    for r in runs:
        _check_run(r, p)
    runs_dir = doc.get("runs_dir", "runs")
    if not isinstance(runs_dir, str) or not runs_dir:
        raise SweepError(f"{p}: runs_dir must be a folder name")
    return Sweep(tag.strip(), runs, str(p), runs_dir)


def _check_run(r: SweepRun, p: Path) -> None:
    """The run's settings as ``pokelab train`` would take them: engine known, trainer fields valid, engine keys
    known (the engine checks its values when the run starts)."""
    from .config import TrainConfig, apply_overrides
    from .runs.export import ExportError
    from .registry import get_engine

    s = r.settings
    if not isinstance(s.get("engine"), str):
        raise SweepError(f"{p}: run {r.name!r} names no engine (set engine = \"dcgan\" in [base])")
    try:
        cls = get_engine(s["engine"])
        cfg = TrainConfig.for_engine(cls)
        for k in ("epochs", "batch_size", "image_size", "seed", "max_hours"):
            if k in s:
                setattr(cfg, k, s[k])
        apply_overrides(cfg, [f"{k}={json.dumps(v)}" for k, v in s.items() if k not in TRAIN_FLAGS and k != "engine"])
        cfg.validate()
        ecfg = cls.resolve_config(cfg.engine)
        if cls.conditional and ecfg.get("labels") is None:  # the vocabulary comes from the data: a stand-in
            ecfg["labels"] = {"vocabulary": ["_"]}
        if hasattr(cls, "stand_in_config"):  # more that the data decides (stackgan: its word vocabulary)
            ecfg = cls.stand_in_config(ecfg)
        from .runs.export import check_engine_size

        check_engine_size(cls, ecfg, int(cfg.image_size), training=True)  # values, on 'meta': no memory
    except ExportError as e:
        raise SweepError(f"{p}: run {r.name!r}: {str(e).replace(' refuses this config:', ':')}") from None
    except (ValueError, TypeError, KeyError) as e:
        raise SweepError(f"{p}: run {r.name!r}: {e}") from None
    if cls.domains == 2 and not (s.get("source") and s.get("target")):
        raise SweepError(f"{p}: run {r.name!r}: engine {s['engine']!r} needs source and target")
    if cls.domains == 1 and not s.get("data"):
        raise SweepError(f"{p}: run {r.name!r}: no data (set data = \"FOLDER\" in [base])")


# ---- what is on disk ----------------------------------------------------------------------------------
@dataclass
class Planned:
    run: SweepRun
    action: str                 # "skip" | "resume" | "start" | "busy"
    run_dir: Path | None = None
    status: str | None = None   # the existing run's status
    note: str = ""


def existing_runs(runs_dir: str | os.PathLike, tag: str) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """Runs in ``runs_dir`` with this tag, by sweep key (unreadable run.json files are passed over)."""
    from .runs.folder import RunFormatError, find_runs, read_info

    out: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for d in find_runs([runs_dir], max_depth=1):
        try:
            info = read_info(d)
        except (RunFormatError, OSError):
            continue
        sw = info.get("sweep")
        if info.get("tag") == tag and isinstance(sw, dict) and isinstance(sw.get("key"), str):
            out.setdefault(sw["key"], []).append((d, info))
    return out


def _locked(run_dir: Path) -> bool:
    from .runs.folder import RunLock, RunLockedError

    try:
        RunLock(run_dir).acquire().release()
    except RunLockedError:
        return True
    except OSError:
        return False
    return False


def plan(sweep: Sweep, runs_dir: str | os.PathLike, retry_failed: bool = False) -> list[Planned]:
    """What running the sweep would do with each run: skip it (finished; failed unless ``retry_failed``), resume
    it (interrupted, or stopped without a word), leave it (another trainer holds it) or start it."""
    have = existing_runs(runs_dir, sweep.tag)
    out = []
    for r in sweep.runs:
        found = have.get(r.key, [])
        if not found:
            out.append(Planned(r, "start"))
            continue
        # the most advanced of them (two copies happen when two sweeps started the same run at once)
        order = {"finished": 3, "failed": 2}
        d, info = max(found, key=lambda f: (order.get(f[1].get("status"), 1), f[1].get("epoch") or 0, f[0].name))
        status = str(info.get("status"))
        if status in DONE or (status == "failed" and not retry_failed):
            out.append(Planned(r, "skip", d, status, "" if status in DONE else "failed; --retry-failed starts it anew"))
        elif status == "failed":
            out.append(Planned(r, "start", d, status, "failed before; a new run"))
        elif _locked(d):
            out.append(Planned(r, "busy", d, status, "another trainer holds it"))
        else:
            out.append(Planned(r, "resume", d, status))
    return out


# ---- running it --------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    name: str
    action: str
    code: int | None = None
    run_dir: str | None = None
    log: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _argv(p: Planned, sweep: Sweep, runs_dir: str, progress: bool | None) -> list[str]:
    if p.action == "resume":
        return ["train", "--resume", str(p.run_dir)] + _progress_flag(progress)
    return p.run.train_argv(sweep.tag, runs_dir, sweep.path, progress)


def run_sweep(sweep: Sweep, runs_dir: str | os.PathLike | None = None, parallel: int = 1, retry_failed: bool = False,
              dry_run: bool = False, say: Callable[[str], None] = print,
              runner: Callable[[list[str]], int] | None = None) -> list[Outcome]:
    """Run what ``plan`` says, one after another in this process (``runner``: engines.cli.main by default) or
    ``parallel`` at a time as ``python -m engines`` subprocesses (output in RUNS/.sweep-logs/TAG/NAME.log).
    Stops starting new runs after one is interrupted (Ctrl-C); a failed run does not stop the others."""
    runs_dir = str(runs_dir or sweep.runs_dir)
    todo = plan(sweep, runs_dir, retry_failed)
    for p in todo:
        where = f" ({p.run_dir.name}, {p.status})" if p.run_dir else ""
        say(f"{p.action:6s} {p.run.name}{where}{': ' + p.note if p.note else ''}")
    work = [p for p in todo if p.action in ("start", "resume")]
    outcomes = [Outcome(p.run.name, p.action, run_dir=str(p.run_dir) if p.run_dir else None)
                for p in todo if p not in work]
    if dry_run or not work:
        say(f"sweep {sweep.tag!r}: {len(work)} run(s) to {'start or resume' if work else 'run: all done'}"
            + (" (dry run)" if dry_run and work else ""))
        return outcomes
    if parallel <= 1:
        outcomes += _sequential(work, sweep, runs_dir, say, runner)
    else:
        outcomes += _parallel(work, sweep, runs_dir, parallel, say)
    done = sum(o.code == 0 for o in outcomes if o.code is not None)
    say(f"sweep {sweep.tag!r}: {done} of {len(work)} run(s) finished now; "
        f"{sum(o.action == 'skip' for o in outcomes)} already done")
    return outcomes


def _sequential(work: list[Planned], sweep: Sweep, runs_dir: str, say, runner) -> list[Outcome]:
    if runner is None:
        from .cli import main as runner
    out = []
    for i, p in enumerate(work, 1):
        say(f"[{i}/{len(work)}] {p.action} {p.run.name}")
        t0 = time.perf_counter()
        code = int(runner(_argv(p, sweep, runs_dir, None)))
        out.append(Outcome(p.run.name, p.action, code, seconds=time.perf_counter() - t0))
        if code == 130:
            say("interrupted: run the sweep again to resume it")
            break
    return out


def _parallel(work: list[Planned], sweep: Sweep, runs_dir: str, n: int, say) -> list[Outcome]:
    logs = Path(runs_dir) / ".sweep-logs" / _safe(sweep.tag)
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    queue, active, out = list(work), [], []
    stop = False
    try:
        while queue or active:
            while queue and len(active) < n and not stop:
                p = queue.pop(0)
                log = logs / f"{_safe(p.run.name)}.log"
                f = open(log, "ab")
                cmd = [sys.executable, "-m", "engines", *_argv(p, sweep, runs_dir, False)]
                proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
                active.append((p, proc, f, time.perf_counter(), log))
                say(f"started {p.run.name} (PID {proc.pid}; log {log})")
            if stop and not active:
                break
            time.sleep(0.2)
            for item in list(active):
                p, proc, f, t0, log = item
                code = proc.poll()
                if code is None:
                    continue
                f.close()
                active.remove(item)
                out.append(Outcome(p.run.name, p.action, code, log=str(log), seconds=time.perf_counter() - t0))
                say(f"{'finished' if code == 0 else f'exit {code}'}: {p.run.name} ({time.perf_counter() - t0:.0f} s)")
                stop = stop or code == 130
    except KeyboardInterrupt:
        # Ctrl-C reached the children too (one process group): each checkpoints and stops; wait for them
        say("interrupted: waiting for the running trainers to checkpoint")
        for p, proc, f, t0, log in active:
            code = proc.wait()
            f.close()
            out.append(Outcome(p.run.name, p.action, code, log=str(log), seconds=time.perf_counter() - t0))
        say("run the sweep again to resume it")
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in name)[:120] or "run"


def _cmd_sweep(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.file)
    if args.parallel < 1:
        raise SweepError("--parallel must be at least 1")
    outcomes = run_sweep(sweep, args.runs, parallel=args.parallel, retry_failed=args.retry_failed,
                         dry_run=args.dry_run)
    codes = [o.code for o in outcomes if o.code is not None]
    return 130 if 130 in codes else 1 if any(codes) else 0


def add_sweep_command(subparsers) -> None:
    s = subparsers.add_parser("sweep", help="train a grid of runs under one tag (resumable)",
                              description="Run every setting of GRID.toml (or .yaml) as its own training run with a "
                                          "shared tag; finished runs are skipped and interrupted ones resumed when "
                                          "it is run again (docs/sweeps.md).")
    s.add_argument("file", help="the sweep file: tag, [base], [grid] and/or [[run]]")
    s.add_argument("--runs", help="where the runs go (default: the file's runs_dir, else ./runs)")
    s.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="run N at a time as subprocesses of `pokelab train` (default 1: one after another)")
    s.add_argument("--retry-failed", action="store_true", help="start failed runs again (default: keep them)")
    s.add_argument("--dry-run", action="store_true", help="only say what would be skipped, resumed or started")
    s.set_defaults(func=_cmd_sweep)
