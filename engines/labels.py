"""Labels as data: per-image class labels for conditional engines (docs/cgan.md, "Labels").

Three steps, each usable alone (conditional StyleGAN2, StackGAN and per-label metrics plug in here):

1. ``read_labels(path, column)`` -> ``LabelTable``: a CSV with an ``id`` or ``file`` column (matched to image
   file stems), or stylegan2-ada's ``dataset.json`` (``{"labels": [[fname, int], ...]}``). ``A|B`` values are
   multi-label.
2. ``LabelSpec``: the vocabulary (+ how often each label combination occurs in training), JSON-able; it is stored
   in the engine config, so run.json and every export carry it. ``spec.encode("Grass|Poison")`` -> multi-hot,
   ``spec.draw(n, seed)`` -> combinations drawn from the training distribution (what FID samples use).
3. ``attach_labels(dataset, table)`` -> ``LabeledDataset``: the image set with a float multi-hot tensor
   ``labels`` [N, K] in image order, a report (images without a label, labels without an image, unknown values:
   all by name, none dropped silently) and a content key that covers the labels.

``ConditionalEngine`` is the engine side: label arguments to ``sample``/``interpolate``, the per-label grid.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Iterable, Sequence

import torch

from .data.prepare import (DEFAULT_MAX_FILE_BYTES, IMAGE_EXTENSIONS, DataError, _NotRegular, _open_regular, _printable,
                           _read_at_most, natural_key)

LABELS_VERSION = "pokelab-labels/1"
SEPARATOR = "|"
#: between the columns of one --label-column ('types,egg_groups'), and between a later column's name and its
#: values in the vocabulary ('egg_groups:Monster')
COLUMN_SEPARATOR, COLUMN_MARK = ",", ":"
#: the most distinct labels a vocabulary may hold (stylegan2-ada's ImageNet has 1000)
MAX_VOCABULARY = 4096
MAX_LABEL_CHARS = 200
#: names listed in a report before "... and N more"
REPORT_NAMES = 20
#: CSV columns that name the image a row belongs to, in the order they are looked for
KEY_COLUMNS = ("file", "id")
#: CSV columns taken as the label when --label-column is not given
DEFAULT_COLUMNS = ("label", "labels")


class LabelError(DataError):
    """The labels cannot be used (unreadable file, no key column, a row matching two images, ...)."""


class UnknownLabelError(LabelError):
    """A label value outside the vocabulary; the message names it and lists the vocabulary."""

    def __init__(self, value: str, vocabulary: Sequence[str], where: str = ""):
        self.value, self.vocabulary = value, tuple(vocabulary)
        shown = ", ".join(vocabulary[:60]) + (f", ... ({len(vocabulary)} in all)" if len(vocabulary) > 60 else "")
        super().__init__(f"{where}unknown label {value!r}; the vocabulary is: {shown}")


def split_values(text: str, where: str = "") -> tuple[str, ...]:
    """'Grass|Poison' -> ('Grass', 'Poison'); '' -> () (no label). An empty part ('Grass|') is an error:
    a typo must not turn into a different label set."""
    text = str(text).strip()
    if not text:
        return ()
    parts = tuple(p.strip() for p in text.split(SEPARATOR))
    if any(not p for p in parts):
        raise LabelError(f"{where}label {text!r} has an empty part (values are separated by '{SEPARATOR}')")
    too_long = [p for p in parts if len(p) > MAX_LABEL_CHARS]
    if too_long:
        raise LabelError(f"{where}label {too_long[0][:40]!r}... is longer than {MAX_LABEL_CHARS} characters")
    return tuple(dict.fromkeys(parts))  # 'Fire|Fire' is Fire


def join_values(values: Iterable[str]) -> str:
    return SEPARATOR.join(values)


# ---- 1. reading a labels file ------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelTable:
    """A labels file as read: ``rows`` maps each row's key (an id, a file name) to its values."""
    path: str
    column: str                         # the label column ("label" for dataset.json)
    format: str                         # "csv" | "dataset.json"
    key_column: str                     # "id" | "file" | "fname"
    rows: dict[str, tuple[str, ...]]    # key -> values; () for a row whose label cell is empty
    where: dict[str, str]               # key -> "line 12" (for messages)
    sha256: str
    integer_classes: int = 0            # dataset.json: 1 + the largest class index (the vocabulary is 0..n-1)


def read_side_file(path: Path, what: str = "labels file", error: type[LabelError] = LabelError) -> bytes:
    """The bytes of a small side file (labels, captions): a regular file (FIFOs and devices refused) of at most
    the data layer's file size limit; errors name ``what`` and are raised as ``error``."""
    try:
        with _open_regular(path) as f:
            raw = _read_at_most(f, DEFAULT_MAX_FILE_BYTES)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except _NotRegular as e:
        raise error(f"{path}: is {e}; a {what} must be a regular file") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if len(raw) > DEFAULT_MAX_FILE_BYTES:
        raise error(f"{path}: over {DEFAULT_MAX_FILE_BYTES // 2**20} MiB; not a {what}")
    return raw


def read_labels(path: str | os.PathLike, column: str | None = None) -> LabelTable:
    """A CSV (``id`` or ``file`` column + the label ``column``) or stylegan2-ada's ``dataset.json``."""
    p = Path(path).expanduser()
    raw = read_side_file(p)
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LabelError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if p.suffix.lower() == ".json":
        return _read_dataset_json(p, text, digest, column)
    return _read_csv(p, text, digest, column)


def csv_header(p: Path, text: str, example: str, error: type[LabelError] = LabelError):
    """(reader over the rows after the header, stripped header, its key column) of a side CSV keyed by image:
    an empty file or one without a ``file``/``id`` column is ``error`` naming ``p``."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = next(reader, None)
    if not header:
        raise error(f"{p}: empty; expected a header line such as '{example}'")
    header = [h.strip() for h in header]
    key_col = next((k for k in KEY_COLUMNS if k in header), None)
    if key_col is None:
        raise error(f"{p}: no 'file' or 'id' column to match rows to images (columns: {', '.join(header)})")
    return reader, header, key_col


def label_columns(column: str, header: Sequence[str]) -> list[str]:
    """``--label-column`` as a list of columns: 'types,egg_groups' is two (unless the header has a column of
    that very name); a repeated or empty name is an error."""
    if column in header or COLUMN_SEPARATOR not in column:
        return [column]
    columns = [c.strip() for c in column.split(COLUMN_SEPARATOR)]
    if any(not c for c in columns):
        raise LabelError(f"--label-column {column!r} has an empty column name (columns are separated by "
                         f"'{COLUMN_SEPARATOR}')")
    if len(set(columns)) != len(columns):
        raise LabelError(f"--label-column {column!r} names a column twice")
    return columns


def _read_csv(p: Path, text: str, digest: str, column: str | None) -> LabelTable:
    try:
        reader, header, key_col = csv_header(p, text, "id,label")
        others = [h for h in header if h not in KEY_COLUMNS and h]
        if column is None:
            column = next((c for c in DEFAULT_COLUMNS if c in header), None)
            if column is None and len(others) == 1:
                column = others[0]
            if column is None:
                raise LabelError(f"{p}: which column holds the labels? choose one with --label-column "
                                 f"({', '.join(others) or 'no other columns'})")
        columns = label_columns(column, header)
        for c in columns:
            if c not in header:
                raise LabelError(f"{p}: no column {c!r} (columns: {', '.join(header)})")
            if c in KEY_COLUMNS:
                raise LabelError(f"{p}: {c!r} names the images; choose a label column ({', '.join(others)})")
        ki = header.index(key_col)
        # values of every column after the first carry their column's name: a type "Grass" and an egg group
        # "Grass" stay two labels
        cis = [(header.index(c), "" if i == 0 else f"{c}{COLUMN_MARK}") for i, c in enumerate(columns)]
        rows: dict[str, tuple[str, ...]] = {}
        where: dict[str, str] = {}
        for row in reader:
            line = f"line {reader.line_num}"
            if not any(c.strip() for c in row):
                continue  # blank line
            if len(row) != len(header):
                raise LabelError(f"{p}: {line} has {len(row)} fields, the header {len(header)}")
            key = row[ki].strip()
            if not key:
                raise LabelError(f"{p}: {line} has an empty {key_col!r}")
            if key in rows:
                raise LabelError(f"{p}: {key_col} {key!r} appears twice ({where[key]} and {line})")
            # split_values drops repeats within a column; the prefixes keep the columns apart
            values = tuple(prefix + v for ci, prefix in cis for v in split_values(row[ci], f"{p}: {line}: "))
            if any(len(v) > MAX_LABEL_CHARS for v in values):
                raise LabelError(f"{p}: {line}: a label with its column's name is longer than {MAX_LABEL_CHARS} "
                                 "characters")
            rows[key] = values
            where[key] = line
    except csv.Error as e:
        raise LabelError(f"{p}: not a readable CSV ({e})") from None
    if not rows:
        raise LabelError(f"{p}: holds a header but no rows")
    return LabelTable(str(p.resolve()), column, "csv", key_col, rows, where, digest)


def _read_dataset_json(p: Path, text: str, digest: str, column: str | None) -> LabelTable:
    """stylegan2-ada's dataset.json: ``{"labels": [[fname, class index], ...]}`` (null: an unlabelled set)."""
    if column not in (None, "label"):
        raise LabelError(f"{p}: a dataset.json holds one label per image; --label-column does not apply")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise LabelError(f"{p}: malformed JSON ({str(e)[:80]})") from None
    if isinstance(meta, dict) and meta.get("format") == "pokelab-prepared-dataset":
        raise LabelError(f"{p}: this is a pokelab prepared dataset's dataset.json, not a labels file")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, list) or not labels:
        raise LabelError(f"{p}: expected {{\"labels\": [[file name, class index], ...]}} (stylegan2-ada's "
                         "dataset.json) with at least one entry")
    rows: dict[str, tuple[str, ...]] = {}
    where: dict[str, str] = {}
    top = -1
    for i, item in enumerate(labels):
        at = f"labels[{i}]"
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise LabelError(f"{p}: {at} must be [file name, class index]")
        name, value = item[0].strip(), item[1]
        if isinstance(value, list):
            raise LabelError(f"{p}: {at}: vector labels are not supported, only class indices")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_VOCABULARY:
            raise LabelError(f"{p}: {at}: class index must be a whole number 0..{MAX_VOCABULARY - 1}, "
                             f"not {str(value)[:40]!r}")
        if not name:
            raise LabelError(f"{p}: {at} has an empty file name")
        if name in rows:
            raise LabelError(f"{p}: {name!r} appears twice ({where[name]} and {at})")
        rows[name], where[name] = (str(value),), at
        top = max(top, value)
    return LabelTable(str(p.resolve()), "label", "dataset.json", "fname", rows, where, digest,
                      integer_classes=top + 1)


# ---- 2. the vocabulary ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelSpec:
    """What a conditional engine knows about its labels: the vocabulary (class i = vocabulary[i]), the
    column it came from, and how many training images had each label combination (``counts``, keys like
    'Grass|Poison' in vocabulary order): the training distribution that unconditioned samples draw from."""
    vocabulary: tuple[str, ...]
    column: str = "label"
    counts: tuple[tuple[str, int], ...] = ()

    def __post_init__(self):
        if not self.vocabulary:
            raise LabelError("a label vocabulary needs at least one label")
        if len(self.vocabulary) > MAX_VOCABULARY:
            raise LabelError(f"{len(self.vocabulary)} labels; at most {MAX_VOCABULARY}")
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise LabelError("the label vocabulary repeats a value")

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary)

    @property
    def multi_label(self) -> bool:
        return any(SEPARATOR in combo for combo, _ in self.counts)

    @property
    def _index(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.vocabulary)}

    def indices(self, value: str | Sequence[str], where: str = "") -> tuple[int, ...]:
        """'Grass|Poison' or ['Grass', 'Poison'] -> class indices; UnknownLabelError names a value outside
        the vocabulary."""
        parts = split_values(value, where) if isinstance(value, str) else tuple(
            p for v in value for p in split_values(v, where))
        if not parts:
            raise LabelError(f"{where}an empty label; give one of the vocabulary")
        idx = self._index
        for v in parts:
            if v not in idx:
                raise UnknownLabelError(v, self.vocabulary, where)
        return tuple(sorted(idx[v] for v in dict.fromkeys(parts)))

    def text(self, indices: Iterable[int]) -> str:
        return join_values(self.vocabulary[i] for i in sorted(indices))

    def encode(self, values: Sequence[str | Sequence[str]], where: str = "") -> torch.Tensor:
        """One multi-hot row (float32, K wide) per value."""
        out = torch.zeros(len(values), self.num_classes)
        for r, v in enumerate(values):
            out[r, list(self.indices(v, where))] = 1.0
        return out

    def decode(self, rows: torch.Tensor) -> list[str]:
        return [self.text(torch.nonzero(r > 0.5).flatten().tolist()) for r in rows.detach().cpu()]

    def draw(self, n: int, seed: int | None = 0) -> torch.Tensor:
        """``n`` multi-hot rows drawn from the training distribution (``counts``) with a private generator:
        the same seed gives the same labels everywhere. Without counts: uniform over single labels."""
        g = torch.Generator().manual_seed((int(seed) + 0x1ABE1) % 2**63) if seed is not None else None
        if self.counts:
            combos = [self.indices(c) for c, _ in self.counts]
            w = torch.tensor([float(k) for _, k in self.counts])
        else:
            combos = [(i,) for i in range(self.num_classes)]
            w = torch.ones(self.num_classes)
        pick = torch.multinomial(w, int(n), replacement=True, generator=g)
        out = torch.zeros(int(n), self.num_classes)
        for r, c in enumerate(pick.tolist()):
            out[r, list(combos[c])] = 1.0
        return out

    def to_json(self) -> dict[str, Any]:
        return {"column": self.column, "vocabulary": list(self.vocabulary), "counts": dict(self.counts)}

    @classmethod
    def from_json(cls, obj: Any, where: str = "labels") -> "LabelSpec":
        """A spec from an engine config / run.json / export config, checked field by field (a damaged or
        hostile file gives a LabelError naming the field, never a huge allocation)."""
        if not isinstance(obj, dict):
            raise LabelError(f"{where} must be an object with a 'vocabulary', not {type(obj).__name__}")
        vocab = obj.get("vocabulary")
        if not isinstance(vocab, list) or not all(isinstance(v, str) and v and SEPARATOR not in v
                                                  and len(v) <= MAX_LABEL_CHARS for v in vocab):
            raise LabelError(f"{where}.vocabulary must be a list of label texts (without '{SEPARATOR}')")
        if not 1 <= len(vocab) <= MAX_VOCABULARY:
            raise LabelError(f"{where}.vocabulary must hold 1..{MAX_VOCABULARY} labels, not {len(vocab)}")
        column = obj.get("column", "label")
        if not isinstance(column, str):
            raise LabelError(f"{where}.column must be text")
        counts = obj.get("counts") or {}
        if not isinstance(counts, dict) or len(counts) > 1 << 16 or not all(
                isinstance(k, int) and not isinstance(k, bool) and 0 < k < 1 << 40 for k in counts.values()):
            raise LabelError(f"{where}.counts must map label combinations to image counts")
        spec = cls(tuple(vocab), column, ())
        for combo in counts:
            spec.indices(combo, f"{where}.counts: ")  # every combination names known labels
        return cls(tuple(vocab), column, tuple((str(k), int(v)) for k, v in counts.items()))


def vocabulary_of(values: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    """The sorted distinct labels (natural order: '2' before '10')."""
    return tuple(sorted({v for vs in values for v in vs}, key=natural_key))


# ---- 3. labels on an image set ------------------------------------------------------------------------
@dataclass
class LabelReport:
    """What matching a labels file to an image set found; nothing is left out without a line here."""
    labels_file: str
    labelled: int = 0
    unlabelled: list[str] = field(default_factory=list)         # images with no row, or an empty label
    unmatched: list[str] = field(default_factory=list)          # rows whose key names no image
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (image, value) outside a fixed vocabulary

    def lines(self) -> list[str]:
        def names(items: list[str]) -> str:
            more = f", ... and {len(items) - REPORT_NAMES} more" if len(items) > REPORT_NAMES else ""
            return ", ".join(items[:REPORT_NAMES]) + more

        out = [f"labels: {self.labelled} image(s) labelled from {self.labels_file}"]
        if self.unlabelled:
            out.append(f"  left out {len(self.unlabelled)} image(s) without a label: {names(self.unlabelled)}")
        if self.unknown:
            out.append(f"  left out {len(self.unknown)} image(s) with a label outside the vocabulary: "
                       + names([f"{n} ({v})" for n, v in self.unknown]))
        if self.unmatched:
            out.append(f"  {len(self.unmatched)} label row(s) match no image: {names(self.unmatched)}")
        return [_printable(x) for x in out]

    def format(self) -> str:
        return "\n".join(self.lines())

    def record(self) -> dict[str, Any]:
        """The report for run.json: counts, and the first names of each list."""
        return {"labelled": self.labelled, "unlabelled": len(self.unlabelled),
                "unmatched": len(self.unmatched), "unknown": len(self.unknown),
                "unlabelled_names": self.unlabelled[:REPORT_NAMES], "unmatched_names": self.unmatched[:REPORT_NAMES],
                "unknown_names": [f"{n} ({v})" for n, v in self.unknown[:REPORT_NAMES]]}


class LabeledDataset:
    """An image set (PreparedDataset or anything with images/key/name/source/files) with labels: the images
    that have one, in the set's order, ``labels`` float32 multi-hot [N, K], and a content key over both.
    Every other attribute is the underlying set's."""

    def __init__(self, base: Any, images: torch.Tensor, files: list[str], labels: torch.Tensor, spec: LabelSpec,
                 report: LabelReport, key: str, record: dict[str, Any]):
        self.base, self.images, self.files, self.labels = base, images, files, labels
        self.label_spec, self.label_report, self.key, self.label_record = spec, report, key, record
        self.image_key = base.key

    def __getattr__(self, name: str) -> Any:
        if name == "base":  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _norm_key(text: str) -> str:
    """Row keys and image names compare after this: posix separators, no leading './', and a whole number
    without leading zeros ('007' and '7' are the same id)."""
    s = posixpath.normpath(str(text).strip().replace("\\", "/"))
    s = s[2:] if s.startswith("./") else s
    return str(int(s)) if s.isdigit() else s


def _strip_image_ext(name: str) -> str:
    p = PurePosixPath(name)
    return str(p.with_suffix("")) if p.suffix.lower() in IMAGE_EXTENSIONS else name


def _image_index(files: Sequence[str]) -> tuple[dict[str, list[int]], dict[str, list[int]], dict[str, list[int]]]:
    full: dict[str, list[int]] = {}
    noext: dict[str, list[int]] = {}
    stem: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        full.setdefault(_norm_key(f), []).append(i)
        noext.setdefault(_norm_key(_strip_image_ext(f)), []).append(i)
        stem.setdefault(_norm_key(PurePosixPath(_strip_image_ext(f)).name), []).append(i)
    return full, noext, stem


def match_rows(files: Sequence[str], table: LabelTable) -> tuple[dict[int, str], list[str]]:
    """Which row labels which image: ({image index: row key}, [row keys matching no image]). A row is tried
    as the image's relative name, then without the extension, then as a bare stem (an id); a row matching two
    images, or two rows one image, is a LabelError that names them."""
    full, noext, stem = _image_index(files)
    claimed: dict[int, str] = {}
    unmatched: list[str] = []
    for key in table.rows:
        k = _norm_key(key)
        k2 = _norm_key(_strip_image_ext(k))
        hits = full.get(k) or noext.get(k2) or (stem.get(k2) if "/" not in k2 else None) or []
        if not hits:
            unmatched.append(key)
            continue
        if len(hits) > 1:
            raise LabelError(f"{table.path}: {table.key_column} {key!r} ({table.where[key]}) matches "
                             f"{len(hits)} images ({', '.join(files[i] for i in hits[:4])}); give relative "
                             f"file names in a 'file' column")
        i = hits[0]
        if i in claimed:
            other = claimed[i]
            raise LabelError(f"{table.path}: {files[i]} is labelled twice ({table.where[other]} {other!r} and "
                             f"{table.where[key]} {key!r})")
        claimed[i] = key
    return claimed, unmatched


def labels_key(image_key: str, spec: LabelSpec, files: Sequence[str], texts: Sequence[str]) -> str:
    """The content key of a labelled set: the images' key, the column, the vocabulary and every kept image's
    (name, labels) in order. Reformatting the labels file changes nothing; a changed label changes the key."""
    h = hashlib.sha256()
    h.update(f"{LABELS_VERSION}\nimages={image_key}\ncolumn={spec.column}\n".encode())
    h.update(b"vocabulary=" + "\0".join(spec.vocabulary).encode() + b"\n")
    for name, text in zip(files, texts):
        h.update(name.encode("utf-8", "surrogateescape") + b"\0" + text.encode() + b"\n")
    return h.hexdigest()[:16]


def attach_labels(ds: Any, table: LabelTable, vocabulary: Sequence[str] | None = None) -> LabeledDataset:
    """The images of ``ds`` that have a label, with their multi-hot labels. ``vocabulary`` fixes the label
    set (a resumed run's): values outside it are reported as unknown and their images left out. Images
    without a label and rows without an image are reported (``.label_report``), never dropped silently.
    A labels file that matches no image at all is a LabelError."""
    files = list(getattr(ds, "files", None) or [])
    if len(files) != len(ds.images):
        raise LabelError(f"dataset {getattr(ds, 'name', '?')!r} does not list its image files; labels are matched "
                         "to file names")
    claimed, unmatched = match_rows(files, table)
    if not claimed:
        raise LabelError(f"{table.path}: none of its {len(table.rows)} row(s) matches an image of "
                         f"{getattr(ds, 'name', 'the set')} (rows like {', '.join(list(table.rows)[:3])}; images "
                         f"like {', '.join(files[:3])}); the {table.key_column} column is matched to the image "
                         "file names without extension")
    report = LabelReport(labels_file=table.path, unmatched=unmatched)
    if vocabulary is None:
        if table.integer_classes:  # stylegan2-ada class indices keep their numbers
            vocab = tuple(str(i) for i in range(table.integer_classes))
        else:
            vocab = vocabulary_of(table.rows[k] for k in claimed.values())
    else:
        vocab = tuple(vocabulary)
    known = set(vocab)
    keep: list[int] = []
    values: list[tuple[str, ...]] = []
    for i, name in enumerate(files):
        key = claimed.get(i)
        vals = table.rows[key] if key is not None else ()
        if not vals:
            report.unlabelled.append(name)
            continue
        bad = [v for v in vals if v not in known]
        if bad:
            report.unknown.append((name, join_values(bad)))
            continue
        keep.append(i)
        values.append(vals)
    if not keep:
        raise LabelError(f"{table.path}: no image of {getattr(ds, 'name', 'the set')} has a usable label\n"
                         + report.format())
    report.labelled = len(keep)
    spec0 = LabelSpec(vocab, table.column)
    texts = [spec0.text(spec0.indices(v)) for v in values]
    counts: dict[str, int] = {}
    for t in texts:
        counts[t] = counts.get(t, 0) + 1
    spec = LabelSpec(vocab, table.column, tuple(sorted(counts.items(), key=lambda kv: natural_key(kv[0]))))
    labels = spec.encode(texts)
    idx = torch.tensor(keep, dtype=torch.long)
    images = ds.images if len(keep) == len(files) else ds.images.index_select(0, idx).contiguous()
    kept_files = [files[i] for i in keep]
    key = labels_key(ds.key, spec, kept_files, texts)
    record = {"file": table.path, "format": table.format, "column": table.column, "sha256": table.sha256,
              "vocabulary": list(vocab), "image_key": ds.key, **report.record()}
    return LabeledDataset(ds, images, kept_files, labels, spec, report, key, record)


def load_labels(ds: Any, path: str | os.PathLike, column: str | None = None,
                vocabulary: Sequence[str] | None = None) -> LabeledDataset:
    """``attach_labels(ds, read_labels(path, column), vocabulary)``."""
    return attach_labels(ds, read_labels(path, column), vocabulary)


def reattach(ds: Any, record: Any) -> Any:
    """A resumed run's images with the labels its run.json records (``dataset.labels``), the vocabulary
    fixed to the recorded one; ``ds`` itself when the run had no labels."""
    if not record:
        return ds
    if not isinstance(record, dict) or not isinstance(record.get("file"), str):
        raise LabelError("run.json: dataset.labels must record the labels 'file'")
    vocab = record.get("vocabulary")
    if not isinstance(vocab, list) or not all(isinstance(v, str) for v in vocab):
        raise LabelError("run.json: dataset.labels.vocabulary must be a list of label texts")
    column = record.get("column") if record.get("format") == "csv" else None
    return load_labels(ds, record["file"], column, vocab)


def engine_labels(current: Any, spec: LabelSpec) -> dict[str, Any]:
    """The ``labels`` entry of a conditional engine's config for a labelled set: the spec's JSON; a recorded
    one (a resumed run) must have the same vocabulary, since the nets' label layers are sized by it."""
    want = spec.to_json()
    if current is not None:
        have = LabelSpec.from_json(current, "config.engine.labels")
        if have.vocabulary != spec.vocabulary:
            raise LabelError(f"the engine was built for the labels {', '.join(have.vocabulary[:20])} but the data "
                             f"has {', '.join(spec.vocabulary[:20])}")
    return want


# ---- the engine side -------------------------------------------------------------------------------------
class ConditionalEngine:
    """Mixin for engines conditioned on labels (put it before ``Engine`` in the bases). The engine config holds
    ``labels`` (``LabelSpec.to_json()``, filled in by the trainer from the data); ``generate(z, labels)``
    takes float multi-hot rows [B, K]. ``sample``/``interpolate`` take ``labels=``:

    - None: drawn from the training distribution with the sampling seed (FID/KID and grids see the mix the
      data has; the same seed gives the same labels);
    - 'Fire', 'Grass|Poison', ['Grass', 'Poison']: one combination for every image;
    - a list of such, one per image; or a tensor [K] / [n, K].

    ``labels_optional`` engines (stylegan2_ada, projected_gan) train with or without labels: the class says
    ``conditional = False`` (the trainer and the CLI then accept --labels but do not require them) and each
    instance sets ``self.conditional`` from its config; unconditional instances behave as if the mixin were
    not there (``sample``, ``interpolate``, grids and the export's extra pass through untouched)."""

    conditional: ClassVar[bool] = True
    labels_optional: ClassVar[bool] = False
    #: rows (labels) of the per-label grid saved beside each sample grid; columns are seeds
    label_grid_rows: ClassVar[int] = 32
    label_grid_cols: ClassVar[int] = 8

    def init_labels(self) -> LabelSpec | None:
        labels = self.config.get("labels")
        if labels is None:
            if self.labels_optional:  # an unconditional instance of an engine that may take labels
                self.conditional, self.label_spec = False, None
                return None
            raise ValueError(f"engine {self.name!r} is conditional: it needs labels (pokelab train {self.name} "
                             "--labels FILE)")
        self.label_spec = LabelSpec.from_json(labels, "labels")
        if self.labels_optional:
            self.conditional = True
        return self.label_spec

    @property
    def num_classes(self) -> int:
        """K, the width of the label rows (0 for an unconditional instance)."""
        return self.label_spec.num_classes if self.conditional else 0

    def label_rows(self, labels: Any, n: int, seed: int | None = 0) -> torch.Tensor:
        """``labels`` (see the class doc) as float multi-hot rows [n, K] on the engine's device."""
        spec = self.label_spec
        if labels is None:
            y = spec.draw(n, seed)
        elif torch.is_tensor(labels):
            y = labels.detach().float().cpu()
            if y.dim() == 1:
                y = y.unsqueeze(0)
            if y.dim() != 2 or y.shape[1] != spec.num_classes:
                raise LabelError(f"labels of shape {tuple(labels.shape)}; expected [n, {spec.num_classes}]")
            if (y < 0).any() or not (y.sum(1) > 0).all():
                raise LabelError("every label row needs at least one label (non-negative weights)")
        elif isinstance(labels, str):
            y = spec.encode([labels])
        elif isinstance(labels, (list, tuple)):
            if labels and all(isinstance(v, str) for v in labels) and len(labels) != n:
                y = spec.encode([list(labels)])  # ['Grass', 'Poison']: one combination for every image
            else:
                y = spec.encode(list(labels))
        else:
            raise LabelError(f"labels must be text, a list of texts or a tensor, not {type(labels).__name__}")
        if len(y) == 1 and n != 1:
            y = y.expand(n, -1)
        if len(y) != n:
            raise LabelError(f"{len(y)} label rows for {n} images")
        return y.to(self.device)

    @torch.inference_mode()
    def sample(self, z: torch.Tensor | None = None, n: int | None = None, seed: int | None = 0,
               batch_size: int = 64, labels: Any = None, **gen_kwargs) -> torch.Tensor:
        if z is None:
            if n is None:
                raise ValueError("sample() needs z or n")
            z = self.latent(n, seed)
        if not self.conditional:
            if labels is not None:
                raise LabelError(f"this {self.name} was trained without labels: it takes no labels")
            return super().sample(z=z, batch_size=batch_size, seed=seed, **gen_kwargs)
        y = self.label_rows(labels, len(z), seed)
        return super().sample(z=z, batch_size=batch_size, seed=seed, labels=y, **gen_kwargs)

    @torch.inference_mode()
    def interpolate(self, seed_a: int, seed_b: int, frames: int = 24, mode: str = "slerp", labels: Any = None,
                    **gen_kwargs) -> torch.Tensor:
        """A latent walk with the label held: ``labels`` None takes the one drawn for ``seed_a``."""
        if not self.conditional:
            if labels is not None:
                raise LabelError(f"this {self.name} was trained without labels: it takes no labels")
            return super().interpolate(seed_a, seed_b, frames=frames, mode=mode, **gen_kwargs)
        y = self.label_rows(labels, 1, seed_a)
        return super().interpolate(seed_a, seed_b, frames=frames, mode=mode, labels=y, **gen_kwargs)

    def label_path(self, label_a: Any, label_b: Any, frames: int) -> torch.Tensor:
        """``frames`` label rows [frames, K] from ``label_a`` to ``label_b``: (1 - t) y_a + t y_b of the two
        multi-hot rows, so both ends are exactly the labels' own rows (whatever the engine does with a row:
        cgan's mean or sum pooling, StyleGAN2's embedding)."""
        if not self.conditional:
            raise LabelError(f"this {self.name} was trained without labels: there is no label to walk between")
        if int(frames) < 2:
            raise ValueError("a walk between labels needs at least 2 frames")
        ya, yb = self.label_rows(label_a, 1, None), self.label_rows(label_b, 1, None)
        t = torch.linspace(0, 1, int(frames), device=ya.device).view(-1, 1)
        return ya + (yb - ya) * t

    @torch.inference_mode()
    def interpolate_labels(self, seed: int, label_a: Any, label_b: Any, frames: int = 24, mode: str = "lerp",
                           **gen_kwargs) -> torch.Tensor:
        """A walk from ``label_a`` to ``label_b`` at one latent (``seed``'s z held): ``frames`` images in
        [-1, 1]. The label rows are mixed linearly (``label_path``) whatever ``mode`` (the latent does not move;
        'lerp' and 'slerp' are both accepted so callers need not know the engine); engines with a better space
        to walk in (StyleGAN2: W) override this."""
        if mode not in ("lerp", "slerp"):
            raise ValueError(f"interpolation mode must be 'slerp' or 'lerp', not {mode!r}")
        y = self.label_path(label_a, label_b, frames)
        z = self.latent(1, seed).expand(len(y), -1)
        return self.sample(z=z, seed=seed, labels=y, **gen_kwargs)

    def label_grid(self, seed: int = 0) -> torch.Tensor:
        """One row per label (the first ``label_grid_rows``), the same ``label_grid_cols`` latents in every row:
        what changes down a column is the label alone."""
        k = min(self.label_spec.num_classes, self.label_grid_rows)
        z = self.latent(self.label_grid_cols, seed).repeat(k, 1)
        y = torch.eye(self.label_spec.num_classes)[:k].repeat_interleave(self.label_grid_cols, 0)
        return self.sample(z=z, labels=y)

    def extra_grids(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """Saved by the trainer beside each sample grid as samples/by_label_epoch_N.png."""
        return {"by_label": self.label_grid()} if self.conditional else {}

    def export_extra(self) -> dict[str, Any]:
        return self.label_extra(super().export_extra())

    def label_extra(self, extra: dict[str, Any]) -> dict[str, Any]:
        """``extra`` with what the app needs for labels (``supports`` 'labels', ``labels.vocabulary``); an
        unconditional instance's extra unchanged (engines overriding ``export_extra`` call this)."""
        if not self.conditional:
            return extra
        extra = dict(extra)
        extra["supports"] = sorted(set(extra.get("supports", [])) | {"labels"})
        extra["labels"] = {"column": self.label_spec.column, "vocabulary": list(self.label_spec.vocabulary)}
        return extra
