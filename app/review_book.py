"""Blind side-by-side review, without UI code: sources, balanced pairs, sessions, answers to SQLite.

A rater sees two images from two hidden sources and answers questions of ``engines.review``. Which source
is on which side lives only in the server-side ``ReviewSession`` (the page gets the pictures and a round
number). Pairs are balanced per session: the unordered pair of sources compared least so far is picked
(ties broken at random), and left/right is a coin flip. Both pictures are shown at the same size: each
side is brought to the smaller native resolution of the two and then enlarged to the display size, so
resolution alone does not give a source away.

Two kinds of round share that balance:
- generation rounds: two samples, questions 'pokemon' and 'novel';
- translation rounds: an input picture from a translation export's source domain and two translations of
  it from two hidden sources, questions 'pokemon' and 'faithful'. The sources of a translation group are
  the translation exports that take the same input domain and, as a reference, the target domain's own
  picture with the input's file name when the target set has one (the paired official art: for sprites ->
  artwork that is the same Pokémon drawn by the artists). The input itself is never a side: it would win
  'faithful' by construction and tell nothing.

Collapsed sources never take part: a source marked ``collapsed`` (an export whose run's last evaluation
flagged mode collapse: the same picture, or nearly, for every seed) is dropped from the pool before any pair
is formed, in generation and translation rounds alike. Pairing real art with it would make the answer obvious
and the session no longer blind. ``left_out`` names what was dropped, for the message when fewer than two
sources remain.
"""
from __future__ import annotations

import itertools
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from engines import review as review_db

from .appconfig import LIMITS
from .inputs import AppInputError, as_text

# translation pairs only ('faithful' needs an input picture)
GENERATION_QUESTIONS = [q for q in review_db.QUESTIONS if q != "faithful"]
TRANSLATION_QUESTIONS = ["pokemon", "faithful"]


@dataclass
class ReviewSource:
    id: str                  # what the database stores, e.g. 'dcgan:checkpoints/dcgan', 'real:pokemon'
    kind: str                # engine | real | sd
    label: str               # for the About tab, never shown next to a picture
    native_size: int
    draw: Callable[[random.Random], tuple[np.ndarray, str]]   # -> (HWC uint8 image, item like 'seed:123')
    collapsed: bool = False  # its run's last evaluation flagged mode collapse: never paired


@dataclass
class TranslationSource:
    """One side of a translation round: an export's translation of the input, or the paired target picture."""
    id: str                  # e.g. 'cyclegan:checkpoints/runs/<run>/export', 'real:dreamworld-256'
    kind: str                # translate | real
    label: str
    native_size: int
    render: Callable[[np.ndarray, str], tuple[np.ndarray, str]]  # (input HWC uint8, input file) -> (image, item)
    accepts: Callable[[str], bool] = lambda _file: True          # the paired reference exists only for some files
    collapsed: bool = False                                      # flagged collapsed: never paired


@dataclass
class TranslationGroup:
    """Translation sources that take the same input domain, and that domain's pictures."""
    inputs: str                                  # the source-domain dataset's name
    images: Any                                  # uint8 [N, 3, S, S]
    files: list[str]
    sources: list[TranslationSource]


@dataclass
class Pair:
    left: ReviewSource
    right: ReviewSource
    left_item: str
    right_item: str
    left_image: Image.Image
    right_image: Image.Image
    shown_at: float = field(default_factory=time.time)
    kind: str = "generate"                       # generate | translate
    questions: tuple[str, ...] = tuple(GENERATION_QUESTIONS)
    input_image: Image.Image | None = None       # translation rounds: the picture both sides translated
    input_item: str = ""


@dataclass
class ReviewSession:
    rater: str
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    rng: random.Random = field(default_factory=lambda: random.Random(secrets.randbits(64)))
    pair_counts: Counter = field(default_factory=Counter)
    current: Pair | None = None
    rounds: int = 0
    answers: int = 0


def _fit(img: np.ndarray, common: int, display: int) -> Image.Image:
    pic = Image.fromarray(np.ascontiguousarray(img[:, :, :3]))
    if pic.size != (common, common):
        pic = pic.resize((common, common), Image.Resampling.LANCZOS)
    return pic.resize((display, display), Image.Resampling.LANCZOS) if common != display else pic


class ReviewBook:
    def __init__(self, db_path: str | Path, sources: Callable[[], list[ReviewSource]], display: int = 256,
                 translations: Callable[[], list[TranslationGroup]] | None = None):
        self.db_path = Path(db_path)
        self._sources = sources
        self._translations = translations or (lambda: [])
        self.display = display
        self._lock = threading.Lock()

    def sources(self) -> list[ReviewSource]:
        """The generation pool: every source offered except the collapsed ones."""
        return [s for s in self._sources() if not s.collapsed]

    def translation_groups(self) -> list[TranslationGroup]:
        """Groups that can make a round: at least two sources that are not collapsed and at least one input
        picture."""
        out = []
        for g in self._translations():
            kept = [s for s in g.sources if not s.collapsed]
            if len(kept) >= 2 and len(g.files) > 0:
                out.append(g if len(kept) == len(g.sources) else TranslationGroup(g.inputs, g.images, g.files, kept))
        return out

    def left_out(self) -> list[str]:
        """Labels of the sources left out of every round because they are flagged collapsed."""
        labels = [s.label for s in self._sources() if s.collapsed]
        labels += [s.label for g in self._translations() for s in g.sources if s.collapsed]
        return list(dict.fromkeys(labels))

    def _candidates(self) -> list[tuple]:
        """Every pair a round may show: ('generate', a, b) and ('translate', a, b, group), sources sorted by id."""
        gen = [("generate", a, b) for a, b in itertools.combinations(sorted(self.sources(), key=lambda s: s.id), 2)]
        tr = [("translate", a, b, g) for g in self.translation_groups()
              for a, b in itertools.combinations(sorted(g.sources, key=lambda s: s.id), 2)
              if any(a.accepts(f) and b.accepts(f) for f in g.files)]
        return gen + tr

    def start(self, rater: str, rng: random.Random | None = None) -> ReviewSession:
        rater = as_text(rater, "your name", LIMITS.max_rater_chars)
        if not self._candidates():
            dropped = self.left_out()
            raise AppInputError("Review needs at least two sources (two engine exports, or one export and its "
                                "training images; for translation rounds two translation exports, or one and "
                                "the target set's pictures); none are available to compare here."
                                + (f" Left out because their last evaluation flagged mode collapse: "
                                   f"{'; '.join(dropped)}." if dropped else ""))
        s = ReviewSession(rater=rater)
        if rng is not None:
            s.rng = rng
        self.next_pair(s)
        return s

    @staticmethod
    def _pair_key(cand: tuple) -> frozenset:
        return frozenset((cand[1].id, cand[2].id))

    def choose(self, session: ReviewSession, candidates: list[tuple]) -> tuple:
        """The least-compared pair so far (ties at random), sides flipped by a coin: (kind, left, right, ...)."""
        least = min(session.pair_counts[self._pair_key(c)] for c in candidates)
        c = session.rng.choice([c for c in candidates if session.pair_counts[self._pair_key(c)] == least])
        return c if session.rng.random() < 0.5 else (c[0], c[2], c[1], *c[3:])

    def choose_sources(self, session: ReviewSession, sources: list[ReviewSource]) -> tuple[ReviewSource, ReviewSource]:
        pairs = [("generate", a, b) for a, b in itertools.combinations(sorted(sources, key=lambda s: s.id), 2)]
        _, a, b = self.choose(session, pairs)
        return a, b

    def next_pair(self, session: ReviewSession) -> Pair:
        candidates = self._candidates()
        if not candidates:
            raise AppInputError("Review needs at least two sources; fewer are available now.")
        kind, left, right, *rest = self.choose(session, candidates)
        if kind == "generate":
            li, litem = left.draw(session.rng)
            ri, ritem = right.draw(session.rng)
            common = min(li.shape[0], ri.shape[0])
            session.current = Pair(left, right, litem, ritem, _fit(li, common, self.display),
                                   _fit(ri, common, self.display))
        else:
            session.current = self._translation_pair(session, rest[0], left, right)
        session.pair_counts[frozenset((left.id, right.id))] += 1
        session.rounds += 1
        return session.current

    def _translation_pair(self, session: ReviewSession, group: TranslationGroup, left: TranslationSource,
                          right: TranslationSource) -> Pair:
        usable = [i for i, f in enumerate(group.files) if left.accepts(f) and right.accepts(f)]
        i = session.rng.choice(usable)
        name = group.files[i]
        picture = group.images[i].permute(1, 2, 0).numpy()
        li, litem = left.render(picture, name)
        ri, ritem = right.render(picture, name)
        common = min(li.shape[0], ri.shape[0])
        return Pair(left, right, litem, ritem, _fit(li, common, self.display), _fit(ri, common, self.display),
                    kind="translate", questions=tuple(TRANSLATION_QUESTIONS),
                    input_image=_fit(picture, min(common, picture.shape[0]), self.display),
                    input_item=f"real:{name}")

    def submit(self, session: ReviewSession | None, answers: dict[str, str | None]) -> list[int]:
        """Store one row per question of the pair on screen, then draw the next pair."""
        if session is None or session.current is None:
            raise AppInputError("Enter your name and press Start first.")
        p = session.current
        clean: dict[str, str] = {}
        for q in p.questions:
            a = answers.get(q)
            a = str(a).strip().lower() if a else ""
            if a not in review_db.ANSWERS:
                raise AppInputError(f"Answer every question (Left, Right or Tie) — missing: “{review_db.QUESTIONS[q]}”")
            clean[q] = a
        ids = [review_db.record(self.db_path, rater=session.rater, session=session.session, question=q,
                                left_source=p.left.id, right_source=p.right.id, left_item=p.left_item,
                                right_item=p.right_item, answer=a) for q, a in clean.items()]
        session.answers += len(ids)
        self.next_pair(session)
        return ids

    def stats(self) -> dict:
        rows = review_db.load(self.db_path)
        return {
            "answers": len(rows),
            "raters": len({r["rater"] for r in rows}),
            "sessions": len({r["session"] for r in rows}),
            "by_question": dict(Counter(r["question"] for r in rows)),
            "sources": review_db.sources(rows),
            "db": str(self.db_path),
        }
