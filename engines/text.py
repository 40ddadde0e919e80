"""Captions and text encoders for text-conditioned engines (stackgan; docs/stackgan.md).

1. Captions: ``read_caption_table(path, columns)`` reads a CSV with an ``id`` or ``file`` column. With a
   ``caption`` column it is a captions file (several rows per image allowed: one caption each); without one,
   a caption is composed per row from the chosen columns of a labels file such as species.csv:
   "a Grass and Poison type Pokémon of the Monster and Grass egg groups, 6.9 kg". ``captions_for_images``
   matches the rows to an image set exactly as labels are matched (``engines.labels.match_rows``).
2. Words: ``words(text)`` (lower case, accents folded, numbers read digit by digit so that any number is in
   the vocabulary) and ``WordVocabulary`` (built from the training captions; unknown words are reported).
3. Encoders, sentence -> one vector: ``WordEncoder`` (embedding + bidirectional GRU, or a mean of the word
   vectors; trained with the GAN and saved in its export) and ``ClipTextEncoder`` (a frozen pretrained CLIP
   text transformer from ``transformers``, loaded once per process from a Hub id or a local folder).
4. ``CaptionBank``: the training captions as buffers of an export (UTF-8 bytes, a sampling weight and the
   image's labels per caption), so an export draws prompts from the training mix without its data.
"""
from __future__ import annotations

import csv
import hashlib
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .data.prepare import _printable
from .labels import (KEY_COLUMNS, REPORT_NAMES, LabelError, LabelTable, csv_header, match_rows, read_side_file,
                     split_values)

#: the column of a captions file
CAPTION_COLUMN = "caption"
MAX_CAPTION_CHARS = 1000
#: id 0 of a word vocabulary pads short captions
PAD = "<pad>"
#: the most distinct words a vocabulary keeps (an export config's lists are bounded at 4096 entries)
MAX_WORDS_VOCABULARY = 4000
#: species.csv's columns composed into a caption when ``caption_columns`` is "auto"
SPECIES_COLUMNS = ("types", "egg_groups", "weight_kg")
#: columns never composed by "auto": a name identifies one image and describes nothing
NAME_COLUMNS = ("name",)


class CaptionError(LabelError):
    """Captions that cannot be used (unreadable file, an image without one, ...); the message names it."""


class UnknownWordsError(CaptionError):
    """A prompt none of whose words the text encoder knows: nothing is generated from it."""

    def __init__(self, prompt: str, unknown: Sequence[str], vocabulary: Sequence[str]):
        self.prompt, self.unknown = prompt, tuple(unknown)
        shown = ", ".join(repr(w) for w in list(dict.fromkeys(unknown))[:REPORT_NAMES])
        examples = ", ".join(vocabulary[:40]) + (", ..." if len(vocabulary) > 40 else "")
        super().__init__(f"the prompt {_printable(prompt)[:120]!r} has no word this text encoder knows "
                         f"(unknown: {shown}); it knows {len(vocabulary)} words from its training captions, "
                         f"e.g. {examples}")


# ---- 1. caption tables -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionTable:
    """A captions file (``kind`` "captions") or captions composed from a labels file (``kind`` "composed")."""
    path: str
    kind: str
    key_column: str
    rows: dict[str, tuple[str, ...]]   # row key (id / file) -> its captions, in file order
    where: dict[str, str]              # key -> "line 12" (its first line)
    sha256: str
    columns: tuple[str, ...] = ()      # the composed columns

    def record(self) -> dict[str, Any]:
        return {"file": self.path, "kind": self.kind, "sha256": self.sha256, "columns": list(self.columns)}


def _read_text(path: Path) -> tuple[str, str]:
    """(text, sha256) of a regular UTF-8 file of at most DEFAULT_MAX_FILE_BYTES."""
    raw = read_side_file(path, "captions file", CaptionError)
    try:
        return raw.decode("utf-8-sig"), hashlib.sha256(raw).hexdigest()
    except UnicodeDecodeError as e:
        raise CaptionError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _clean_caption(text: str) -> str:
    """One line: runs of white space (newlines included) become one space."""
    return " ".join(str(text).split())


def read_caption_table(path: str | Any, columns: str | Sequence[str] | None = "auto") -> CaptionTable:
    """A CSV with an ``id`` or ``file`` column: its ``caption`` column (several rows per image allowed), or, in a
    file without one, a caption composed per row from ``columns`` ("auto": see ``choose_columns``)."""
    p = Path(path).expanduser()
    text, digest = _read_text(p)
    try:
        reader, header, key_col = csv_header(p, text, "id,caption", CaptionError)
        ki = header.index(key_col)
        composed = CAPTION_COLUMN not in header
        cols = choose_columns(header, columns, p) if composed else ()
        rows: dict[str, list[str]] = {}
        where: dict[str, str] = {}
        for row in reader:
            line = f"line {reader.line_num}"
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise CaptionError(f"{p}: {line} has {len(row)} fields, the header {len(header)}")
            key = row[ki].strip()
            if not key:
                raise CaptionError(f"{p}: {line} has an empty {key_col!r}")
            if composed:
                if key in rows:
                    raise CaptionError(f"{p}: {key_col} {key!r} appears twice ({where[key]} and {line})")
                cap = compose_caption({h: v for h, v in zip(header, row)}, cols, f"{p}: {line}: ")
            else:
                cap = _clean_caption(row[header.index(CAPTION_COLUMN)])
            if len(cap) > MAX_CAPTION_CHARS:
                raise CaptionError(f"{p}: {line}: a caption of {len(cap)} characters; at most {MAX_CAPTION_CHARS}")
            where.setdefault(key, line)
            if cap:  # an empty caption cell adds nothing (an image left with none is reported later)
                rows.setdefault(key, []).append(cap)
            else:
                rows.setdefault(key, [])
    except csv.Error as e:
        raise CaptionError(f"{p}: not a readable CSV ({e})") from None
    if not any(rows.values()):
        raise CaptionError(f"{p}: holds no caption" + (" (every composed column is empty)" if composed else ""))
    return CaptionTable(str(p.resolve()), "composed" if composed else "captions", key_col,
                        {k: tuple(v) for k, v in rows.items()}, where, digest, tuple(cols))


def choose_columns(header: Sequence[str], columns: str | Sequence[str] | None, where: Any = "") -> tuple[str, ...]:
    """The columns a caption is composed from. "auto" (or None): species.csv's types, egg groups and weight
    where present, else every column but the key and a name; or a list (or 'a,b' text) of column names."""
    others = [h for h in header if h and h not in KEY_COLUMNS and h != CAPTION_COLUMN]
    if columns in (None, "", "auto"):
        picked = [c for c in SPECIES_COLUMNS if c in others] or [c for c in others if c not in NAME_COLUMNS]
        if not picked:
            raise CaptionError(f"{where}: no column to compose captions from (columns: {', '.join(header)})")
        return tuple(picked)
    names = [c.strip() for c in columns.split(",")] if isinstance(columns, str) else [str(c).strip() for c in columns]
    names = [c for c in names if c]
    missing = [c for c in names if c not in others]
    if missing or not names:
        raise CaptionError(f"{where}: caption_columns {', '.join(missing) or '(none)'} not in the file "
                           f"(columns: {', '.join(others)})")
    return tuple(dict.fromkeys(names))


def _and(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def compose_caption(row: dict[str, str], columns: Sequence[str], where: str = "") -> str:
    """One sentence from a labels row: 'a Grass and Poison type Pokémon of the Monster and Grass egg groups,
    6.9 kg'. types -> 'a/an X type Pokémon', egg_groups -> 'of the X egg group(s)', weight_kg -> 'N kg',
    generation -> 'from generation N', any other column -> 'column value'. Empty cells are left out."""
    values = {c: split_values(row.get(c, ""), where) for c in columns}
    head = ""
    if "types" in columns:
        t = values["types"]
        if t:
            head = f"{'an' if t[0][:1].lower() in 'aeiou' else 'a'} {_and(t)} type Pokémon"
    parts: list[str] = []
    tail: list[str] = []
    for c in columns:
        v = values[c]
        if c == "types" or not v:
            continue
        if c == "egg_groups":
            parts.append(f"of the {_and(v)} egg group{'s' if len(v) > 1 else ''}")
        elif c == "weight_kg":
            tail.append(f"{_and(v)} kg")
        elif c == "generation":
            parts.append(f"from generation {_and(v)}")
        elif c in NAME_COLUMNS:
            parts.append(f"named {_and(v)}")
        else:
            tail.append(f"{c.replace('_', ' ')} {_and(v)}")
    text = " ".join(x for x in [head or ("a Pokémon" if "types" in columns else ""), *parts] if x)
    return ", ".join(x for x in [text, *tail] if x)


@dataclass
class ImageCaptions:
    """Captions of an image set, in its image order, and what matching them found."""
    table: CaptionTable
    per_image: list[tuple[str, ...]]
    unmatched: list[str] = field(default_factory=list)    # rows naming no image

    @property
    def count(self) -> int:
        return sum(len(c) for c in self.per_image)

    def report(self) -> dict[str, Any]:
        return {**self.table.record(), "images": len(self.per_image), "captions": self.count,
                "unmatched": len(self.unmatched), "unmatched_names": self.unmatched[:REPORT_NAMES]}


def captions_for_images(files: Sequence[str], table: CaptionTable) -> ImageCaptions:
    """Every image's captions. Rows are matched to file names as labels are (id = file stem, or a relative file
    name); an image without a caption is a CaptionError naming it (the trainer cannot leave images out here:
    the labels file decides which images take part)."""
    proxy = LabelTable(table.path, CAPTION_COLUMN, "csv", table.key_column, {k: () for k in table.rows},
                       table.where, table.sha256)
    claimed, unmatched = match_rows(files, proxy)
    missing = [f for i, f in enumerate(files) if not table.rows.get(claimed.get(i, ""), ())]
    if missing:
        more = f", ... and {len(missing) - REPORT_NAMES} more" if len(missing) > REPORT_NAMES else ""
        raise CaptionError(f"{table.path}: {len(missing)} training image(s) have no caption: "
                           f"{', '.join(_printable(m) for m in missing[:REPORT_NAMES])}{more}; give every image "
                           "of the labelled set at least one")
    return ImageCaptions(table, [table.rows[claimed[i]] for i in range(len(files))], unmatched)


# ---- 2. words --------------------------------------------------------------------------------------------
# a digit, a decimal point between digits, or a run of letters (digits are single tokens: every number is
# spelt with eleven words)
_WORD = re.compile(r"\d|(?<=\d)\.(?=\d)|[^\W\d_]+")


def words(text: str) -> list[str]:
    """'A Grass type Pokémon, 6.9 kg' -> ['a', 'grass', 'type', 'pokemon', '6', '.', '9', 'kg']."""
    folded = unicodedata.normalize("NFKD", str(text).casefold())
    folded = "".join(ch for ch in folded if unicodedata.category(ch) != "Mn")
    return _WORD.findall(folded)


class WordVocabulary:
    """Words -> ids 1..V (0 pads). Built from the training captions, most frequent first (ties alphabetical),
    at most ``max_size`` words; stored as the list in the engine config, so exports carry it."""

    def __init__(self, vocabulary: Sequence[str]):
        vocab = list(vocabulary) if isinstance(vocabulary, (list, tuple)) else []
        if not vocab or not all(isinstance(w, str) and w and w == w.strip() for w in vocab):
            raise CaptionError("a word vocabulary must be a non-empty list of words")
        if len(set(vocab)) != len(vocab):
            raise CaptionError("the word vocabulary repeats a word")
        if len(vocab) > MAX_WORDS_VOCABULARY:
            raise CaptionError(f"{len(vocab)} words; a vocabulary holds at most {MAX_WORDS_VOCABULARY}")
        self.words = tuple(vocab)
        self.index = {w: i + 1 for i, w in enumerate(vocab)}

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, captions: Sequence[str], max_size: int = MAX_WORDS_VOCABULARY) -> "WordVocabulary":
        counts: dict[str, int] = {}
        for c in captions:
            for w in words(c):
                counts[w] = counts.get(w, 0) + 1
        if not counts:
            raise CaptionError("the captions hold no words")
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        return cls(ranked[:max(1, min(int(max_size), MAX_WORDS_VOCABULARY))])

    def split(self, text: str) -> tuple[list[int], list[str]]:
        """(ids of the known words, the unknown words), in order."""
        ids, unknown = [], []
        for w in words(text):
            i = self.index.get(w)
            if i is None:
                unknown.append(w)
            else:
                ids.append(i)
        return ids, unknown

    def encode(self, texts: Sequence[str], max_words: int, strict: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [n, L] padded with 0, lengths [n]); L = the longest caption, at most ``max_words`` (longer
        captions are cut). Unknown words are left out; ``strict``: a caption with no known word at all is an
        UnknownWordsError naming its words."""
        rows = []
        for t in texts:
            ids, unknown = self.split(t)
            if not ids:
                if strict:
                    raise UnknownWordsError(t, unknown, self.words)
                ids = []
            rows.append(ids[:max_words])
        width = max(1, max(len(r) for r in rows) if rows else 1)
        out = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        return out, torch.tensor([len(r) for r in rows], dtype=torch.long)


# ---- 3. encoders --------------------------------------------------------------------------------------------
class WordEncoder(nn.Module):
    """Sentence -> vector, trained with the GAN. ``kind`` "gru": word embeddings read by a bidirectional GRU, the
    last hidden state of each direction concatenated (AttnGAN's RNN_ENCODER sentence feature); "mean": the mean
    of the word embeddings through a linear layer.

    The two directions are two GRUs, the backward one reading each caption reversed within its own length, and
    the state at the caption's last word is gathered: the numbers of a packed bidirectional GRU without packing,
    which would need the lengths on the host (a sync every step on a GPU)."""

    def __init__(self, vocab_size: int, word_dim: int, text_dim: int, kind: str = "gru"):
        super().__init__()
        if kind not in ("gru", "mean"):
            raise ValueError(f"text encoder must be gru, mean or clip, not {kind!r}")
        if kind == "gru" and text_dim % 2:
            raise ValueError(f"text_dim must be even for the bidirectional GRU, not {text_dim}")
        self.kind = kind
        self.embed = nn.Embedding(vocab_size + 1, word_dim, padding_idx=0)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)  # AttnGAN's init_weights
        with torch.no_grad():
            self.embed.weight[0].zero_()
        if kind == "gru":
            self.forward_rnn = nn.GRU(word_dim, text_dim // 2, batch_first=True)
            self.backward_rnn = nn.GRU(word_dim, text_dim // 2, batch_first=True)
        else:
            self.proj = nn.Linear(word_dim, text_dim)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(ids.device).clamp(1, ids.shape[1]).unsqueeze(1)   # [B, 1]
        if self.kind == "mean":
            e = self.embed(ids)
            return self.proj(e.sum(1) / lengths.to(e.dtype))                      # padding embeds to 0
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        reverse = ids.gather(1, (lengths - 1 - pos).clamp_min(0)) * (pos < lengths)
        last = (lengths - 1).unsqueeze(-1)                                       # [B, 1, 1]
        out = []
        for rnn, seq in ((self.forward_rnn, ids), (self.backward_rnn, reverse)):
            h, _ = rnn(self.embed(seq))                                          # [B, L, text_dim / 2]
            out.append(h.gather(1, last.expand(-1, 1, h.shape[-1])).squeeze(1))
        return torch.cat(out, 1)


_CLIP_CACHE: dict[tuple[str, str], tuple[Any, Any]] = {}
_CLIP_LOCK = threading.Lock()


def load_clip(model: str, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """(tokenizer, CLIPTextModel) from a Hub id or a local folder, frozen, in eval mode; once per process and
    device. A CaptionError says why it cannot be loaded (not installed, offline and not cached, wrong folder)."""
    key = (str(model), str(device))
    with _CLIP_LOCK:
        if key in _CLIP_CACHE:
            return _CLIP_CACHE[key]
        try:
            from transformers import AutoTokenizer, CLIPTextModel
        except ImportError as e:
            raise CaptionError(f"text_encoder=clip needs the transformers package ({e})") from None
        try:
            tok = AutoTokenizer.from_pretrained(str(model))
            net = CLIPTextModel.from_pretrained(str(model))
        except Exception as e:  # noqa: BLE001 - OSError offline, ValueError for a wrong folder, ...
            raise CaptionError(f"cannot load the CLIP text encoder {model!r}: {str(e).splitlines()[0][:300]} "
                               "(give a local folder with --set clip_model=DIR, or a Hub id with network)") from None
        net.requires_grad_(False)
        net.eval().to(device)
        _CLIP_CACHE[key] = (tok, net)
        return tok, net


def clip_width(model: str) -> int:
    """The sentence vector size of a CLIP text model (its hidden size)."""
    return int(load_clip(model)[1].config.hidden_size)


class ClipTextEncoder(nn.Module):
    """A frozen pretrained CLIP text transformer: the pooled end-of-text feature (``pooler_output``). It holds no
    parameters of its own: the weights stay in their folder (or the Hub cache) and are loaded once per process,
    so checkpoints and exports name the model instead of copying it."""

    def __init__(self, model: str, text_dim: int):
        super().__init__()
        self.model, self.text_dim = str(model), int(text_dim)

    def tokenizer_and_net(self, device: torch.device) -> tuple[Any, Any]:
        tok, net = load_clip(self.model, device)
        if int(net.config.hidden_size) != self.text_dim:
            raise CaptionError(f"the CLIP text encoder {self.model!r} gives {net.config.hidden_size}-wide vectors, "
                               f"this engine was built for {self.text_dim}")
        return tok, net

    def max_tokens(self, tok, net) -> int:
        return int(min(tok.model_max_length, net.config.max_position_embeddings))

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], device: torch.device, batch_size: int = 256) -> torch.Tensor:
        tok, net = self.tokenizer_and_net(device)
        out = []
        for i in range(0, len(texts), batch_size):
            b = tok(list(texts[i:i + batch_size]), padding=True, truncation=True,
                    max_length=self.max_tokens(tok, net), return_tensors="pt").to(device)
            out.append(net(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).pooler_output.float())
        return torch.cat(out) if out else torch.zeros(0, self.text_dim, device=device)

    def truncated(self, text: str, device: str | torch.device = "cpu") -> bool:
        tok, net = load_clip(self.model, device)
        return len(tok(text)["input_ids"]) > self.max_tokens(tok, net)


# ---- 4. the caption bank of an export ------------------------------------------------------------------
#: the bank's byte budget (engine configs hold whole numbers up to 2**20)
BANK_BYTES = 1_000_000


def bank_captions(per_image: Sequence[Sequence[str]], labels: torch.Tensor | None,
                  budget: int = BANK_BYTES) -> tuple[list[str], list[float], torch.Tensor | None]:
    """(captions, weights, label rows) of the bank: every image's captions, each weighted 1 / (its image's
    caption count) so that a draw picks images uniformly, as training does. Over ``budget`` bytes, captions
    are taken round-robin (every image's first, then every second, ...) until the budget is spent."""
    order = [(r, j) for j in range(max((len(c) for c in per_image), default=0))
             for r, c in enumerate(per_image) if j < len(c)]
    kept: list[tuple[int, int]] = []
    used = 0
    for r, j in order:
        n = len(per_image[r][j].encode()) + 1
        if used + n > budget:
            break
        kept.append((r, j))
        used += n
    kept.sort()
    per = [0] * len(per_image)
    for r, _ in kept:
        per[r] += 1
    texts = [per_image[r][j] for r, j in kept]
    weights = [1.0 / per[r] for r, _ in kept]
    rows = labels[[r for r, _ in kept]] if labels is not None else None
    return texts, weights, rows


class CaptionBank(nn.Module):
    """Training captions as buffers: ``text`` (UTF-8, one caption per line), ``weight`` [M] and ``labels`` [M, K]
    (the caption's image's multi-hot labels, uint8). Sizes come from the engine config, so an export builds an
    empty bank of the right shape and loads it with the weights."""

    def __init__(self, captions: int, nbytes: int, num_labels: int):
        super().__init__()
        self.register_buffer("text", torch.zeros(int(nbytes), dtype=torch.uint8))
        self.register_buffer("weight", torch.zeros(int(captions)))
        self.register_buffer("labels", torch.zeros(int(captions), int(num_labels), dtype=torch.uint8))
        self._texts: list[str] | None = None

    @staticmethod
    def sizes(texts: Sequence[str]) -> tuple[int, int]:
        return len(texts), len("\n".join(texts).encode())

    def fill(self, texts: Sequence[str], weights: Sequence[float], labels: torch.Tensor | None) -> None:
        data = "\n".join(texts).encode()
        if (len(texts), len(data)) != (len(self.weight), len(self.text)):
            raise CaptionError("the caption bank does not match its recorded size (the captions changed?)")
        with torch.no_grad():
            self.text.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else self.text)
            self.weight.copy_(torch.tensor(list(weights), dtype=torch.float32))
            if labels is not None and self.labels.shape[1]:
                self.labels.copy_((labels > 0.5).to(torch.uint8))
        self._texts = list(texts)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._texts = None  # decoded again on next use

    @property
    def texts(self) -> list[str]:
        if self._texts is None:
            raw = self.text.cpu().numpy().tobytes()
            self._texts = raw.decode("utf-8", "replace").split("\n") if len(self.weight) else []
            if len(self._texts) != len(self.weight):
                raise CaptionError(f"the caption bank holds {len(self._texts)} captions for {len(self.weight)} weights")
        return self._texts

    def __len__(self) -> int:
        return int(self.weight.numel())

    def pick(self, u: torch.Tensor, labels: torch.Tensor | None = None) -> list[str]:
        """One caption per value of ``u`` (uniform in [0, 1)), by inverse CDF of the weights; with ``labels``
        (multi-hot rows [n, K]) only among captions of images that have every label of the row."""
        if not len(self):
            raise CaptionError("this export holds no training captions: give a prompt")
        texts = self.texts
        w = self.weight.detach().float().cpu()
        bank = self.labels.cpu().bool()
        out = []
        for i, ui in enumerate(u.detach().float().cpu().tolist()):
            wi = w
            if labels is not None:
                want = labels[i].detach().cpu() > 0
                ok = (bank[:, want].all(1) if bank.shape[1] == want.numel() else torch.ones(len(w), dtype=torch.bool))
                wi = w * ok
                if not float(wi.sum()) > 0:
                    raise CaptionError("no training caption belongs to an image with the labels asked for")
            cdf = torch.cumsum(wi, 0)
            k = int(torch.searchsorted(cdf, torch.tensor([min(ui, 1 - 1e-7) * float(cdf[-1])]), right=True))
            out.append(texts[min(k, len(texts) - 1)])
        return out
