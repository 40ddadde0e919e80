"""Paired translation data (pix2pix): two picture sets matched by id, and a seeded held-out split by id.

A picture's id is its file name without folders and extension, case-insensitive (``sprites/25.png`` and
``art/25.PNG`` are Pokémon 25): the same rule ``engines.metrics.translation.paired_indices`` uses to find
true targets. Pictures without a partner are reported by name, never dropped silently; an id that two
pictures of one set share is an error (which of them would be the pair?); no pairs at all is an error.

The split draws ``round(val_fraction * pairs)`` ids (at least one when the fraction is above 0) with a
generator seeded by ``split_seed``, from the ids in natural order: the same ids and seed give the same
split whatever the file order, and the training seed does not move it (runs with different seeds are
evaluated on the same pictures). The trainer trains only on the training pairs and evaluates on the
held-out ones; run.json and the export record the split (``record()``).
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Sequence

import numpy as np
import torch

from .data.prepare import _printable, natural_key

#: names listed in run.json per kind of unpaired picture (all of them go to log.txt)
RECORD_NAMES = 1000


class PairingError(ValueError):
    """The two sets cannot be paired (no shared ids, ambiguous ids, a bad split)."""


def picture_id(name: str) -> str:
    """'sub/25.PNG' -> '25': the file stem, lower case."""
    return PurePath(str(name).replace("\\", "/")).stem.lower()


def _ids(files: Sequence[str], role: str) -> dict[str, int]:
    where: dict[str, int] = {}
    clashes: dict[str, list[str]] = {}
    for i, f in enumerate(files):
        k = picture_id(f)
        if k in where:
            clashes.setdefault(k, [files[where[k]]]).append(f)
        else:
            where[k] = i
    if clashes:
        shown = "; ".join(f"{k!r}: {', '.join(_printable(n) for n in names)}" for k, names in list(clashes.items())[:5])
        more = f" (and {len(clashes) - 5} more ids)" if len(clashes) > 5 else ""
        raise PairingError(f"the {role} set has pictures that share an id (file name without folder and extension), "
                           f"so they cannot be paired: {shown}{more}; rename or remove one of each")
    return where


def split_ids(ids: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train ids, held-out ids), both in natural order; disjoint, together ``ids``; reproducible by ``seed``."""
    f = float(val_fraction)
    if not 0.0 <= f < 1.0:
        raise PairingError(f"val_fraction must be in [0, 1), not {val_fraction!r}")
    order = sorted(set(ids), key=natural_key)
    n_val = int(round(f * len(order)))
    if f > 0:
        n_val = max(1, n_val)
    if n_val >= len(order):
        raise PairingError(f"val_fraction {f:g} of {len(order)} pair(s) leaves no training pair; lower it")
    rng = np.random.default_rng(int(seed))
    held = set(order[i] for i in rng.permutation(len(order))[:n_val].tolist())
    return [k for k in order if k not in held], [k for k in order if k in held]


@dataclass
class PairedSplit:
    """Where each pair sits in the two datasets, split into training and held-out pairs."""
    source: Any                       # the source dataset (engines.data.prepare.PreparedDataset or alike)
    target: Any
    val_fraction: float
    split_seed: int
    train_ids: list[str]
    val_ids: list[str]
    train_src: torch.Tensor           # indices into source.images / target.images, aligned pair by pair
    train_tgt: torch.Tensor
    val_src: torch.Tensor
    val_tgt: torch.Tensor
    unpaired_source: list[str] = field(default_factory=list)
    unpaired_target: list[str] = field(default_factory=list)

    @classmethod
    def from_datasets(cls, source, target, val_fraction: float = 0.1, split_seed: int = 0) -> "PairedSplit":
        for role, ds in (("source", source), ("target", target)):
            if not list(getattr(ds, "files", None) or []):
                raise PairingError(f"the {role} set {getattr(ds, 'name', '?')!r} has no file names to pair by; "
                                   "paired training needs picture files named by id on both sides")
        src_files, tgt_files = list(source.files), list(target.files)
        if len(src_files) != len(source.images) or len(tgt_files) != len(target.images):
            raise PairingError("a dataset's file names do not match its pictures (one name per picture)")
        src, tgt = _ids(src_files, "source"), _ids(tgt_files, "target")
        shared = [k for k in src if k in tgt]
        unpaired_s = [src_files[i] for k, i in src.items() if k not in tgt]
        unpaired_t = [tgt_files[j] for k, j in tgt.items() if k not in src]
        if not shared:
            raise PairingError(
                f"no pairs: none of the {len(src_files)} source picture(s) ({getattr(source, 'name', '?')}) shares "
                f"an id with the {len(tgt_files)} target picture(s) ({getattr(target, 'name', '?')}); pairs are "
                f"matched by file name without extension (e.g. {_printable(src_files[0])} <-> "
                f"{_printable(PurePath(src_files[0]).stem)}.png)")
        train, val = split_ids(shared, val_fraction, split_seed)

        def idx(keys, where):
            return torch.as_tensor([where[k] for k in keys], dtype=torch.long)

        return cls(source, target, float(val_fraction), int(split_seed), train, val,
                   idx(train, src), idx(train, tgt), idx(val, src), idx(val, tgt), unpaired_s, unpaired_t)

    # ---- what the trainer uses ------------------------------------------------------------
    def train_images(self, source_images: torch.Tensor, target_images: torch.Tensor) -> list[torch.Tensor]:
        """The training pairs as two aligned uint8 tensors (row i of each is pair i), on their device."""
        return [source_images.index_select(0, self.train_src.to(source_images.device)),
                target_images.index_select(0, self.train_tgt.to(target_images.device))]

    def eval_source(self):
        """The held-out source pictures (with their file names, so the metrics find their true targets). With
        no held-out pairs (``val_fraction`` 0) the training pairs, with a warning: those numbers flatter."""
        if len(self.val_ids):
            return subset(self.source, self.val_src, "val")
        warnings.warn("no held-out pairs (val_fraction = 0): the evaluation measures the training pairs",
                      RuntimeWarning, stacklevel=2)
        return subset(self.source, self.train_src, "train")

    def grid_pairs(self, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``n`` (input, true target) pictures for the run's sample grid: held-out pairs first."""
        s, t = (self.val_src, self.val_tgt) if len(self.val_ids) else (self.train_src, self.train_tgt)
        src, tgt = self.source.images, self.target.images
        return src.index_select(0, s[:n].to(src.device)), tgt.index_select(0, t[:n].to(tgt.device))

    def record(self) -> dict[str, Any]:
        """The split for run.json and the export (ids, counts, the unpaired files by name)."""
        return {"by": "file name without extension", "val_fraction": self.val_fraction,
                "split_seed": self.split_seed, "pairs": len(self.train_ids) + len(self.val_ids),
                "train": len(self.train_ids), "val": len(self.val_ids), "val_ids": list(self.val_ids),
                "unpaired_source": len(self.unpaired_source), "unpaired_target": len(self.unpaired_target),
                "unpaired_source_files": self.unpaired_source[:RECORD_NAMES],
                "unpaired_target_files": self.unpaired_target[:RECORD_NAMES]}

    def report(self) -> str:
        """Like ``pokelab data prepare``'s report: counts, then every unpaired picture by name."""
        lines = [f"paired {len(self.train_ids) + len(self.val_ids)} picture(s) by id "
                 f"({getattr(self.source, 'name', 'source')} -> {getattr(self.target, 'name', 'target')}): "
                 f"{len(self.train_ids)} for training, {len(self.val_ids)} held out "
                 f"(val_fraction {self.val_fraction:g}, split_seed {self.split_seed})"]
        for role, names in (("source", self.unpaired_source), ("target", self.unpaired_target)):
            if names:
                other = "target" if role == "source" else "source"
                lines.append(f"  left out {len(names)} {role} picture(s) with no {other} of the same id:")
                lines += [f"    {n}" for n in names]
            else:
                lines.append(f"  every {role} picture has a partner")
        return "\n".join(_printable(line) for line in lines)


def held_out_subset(ds, record: dict[str, Any]):
    """The pictures of ``ds`` whose ids are a run's recorded held-out ids (``PairedSplit.record()``), for
    evaluating a paired run again; an id that is missing from ``ds`` is an error naming it."""
    raw = record.get("val_ids") if isinstance(record, dict) else None
    if raw is not None and (not isinstance(raw, list) or not all(isinstance(k, str) for k in raw)):
        raise PairingError("the run's recorded held-out ids ('pairing.val_ids') are not a list of ids")
    ids = list(raw or [])
    if not ids:
        raise PairingError("the run records no held-out ids (trained with val_fraction 0?): give the pictures "
                           "to evaluate with --source")
    where = _ids(list(ds.files), "source")
    missing = [k for k in ids if k not in where]
    if missing:
        raise PairingError(f"{len(missing)} held-out id(s) of the run are not in {getattr(ds, 'name', 'the set')}: "
                           + ", ".join(_printable(k) for k in missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return subset(ds, torch.as_tensor([where[k] for k in ids], dtype=torch.long), "val")


def subset(ds, idx: torch.Tensor, part: str):
    """Some pictures of ``ds`` as an image set the metrics take, with their file names and a key of their own
    (derived from the set's key and the names, so cached statistics of the subset are its own)."""
    from .metrics.sources import ImageSet

    files = [ds.files[i] for i in idx.tolist()]
    digest = hashlib.sha256("\n".join(files).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return ImageSet(ds.images.index_select(0, idx.to(ds.images.device)), f"{ds.key}-{part}-{digest}",
                    f"{ds.name}-{part}", files)
