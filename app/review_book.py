"""Blind side-by-side review, without UI code: sources, balanced pairs, sessions, answers to SQLite.

A rater sees two images from two hidden sources and answers the questions of ``engines.review``
(except 'faithful', which is for translation pairs). Which source is on which side lives only in the
server-side ``ReviewSession`` (the page gets two pictures and a round number). Pairs are balanced per
session: the unordered pair of sources compared least so far is picked (ties broken at random), and
left/right is a coin flip. Both pictures are shown at the same size: each side is brought to the
smaller native resolution of the two and then enlarged to the display size, so resolution alone does
not give a source away.
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
from typing import Callable

import numpy as np
from PIL import Image

from engines import review as review_db

from .appconfig import LIMITS
from .inputs import AppInputError, as_text

# translation pairs only ('faithful' needs an input picture)
GENERATION_QUESTIONS = [q for q in review_db.QUESTIONS if q != "faithful"]


@dataclass
class ReviewSource:
    id: str                  # what the database stores, e.g. 'dcgan:checkpoints/dcgan', 'real:pokemon'
    kind: str                # engine | real | sd
    label: str               # for the About tab, never shown next to a picture
    native_size: int
    draw: Callable[[random.Random], tuple[np.ndarray, str]]   # -> (HWC uint8 image, item like 'seed:123')


@dataclass
class Pair:
    left: ReviewSource
    right: ReviewSource
    left_item: str
    right_item: str
    left_image: Image.Image
    right_image: Image.Image
    shown_at: float = field(default_factory=time.time)


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
    def __init__(self, db_path: str | Path, sources: Callable[[], list[ReviewSource]], display: int = 256):
        self.db_path = Path(db_path)
        self._sources = sources
        self.display = display
        self._lock = threading.Lock()

    def sources(self) -> list[ReviewSource]:
        return list(self._sources())

    def start(self, rater: str, rng: random.Random | None = None) -> ReviewSession:
        rater = as_text(rater, "your name", LIMITS.max_rater_chars)
        if len(self.sources()) < 2:
            raise AppInputError("Review needs at least two sources (two engine exports, or one export and its "
                                "training images); none are available to compare here.")
        s = ReviewSession(rater=rater)
        if rng is not None:
            s.rng = rng
        self.next_pair(s)
        return s

    def choose_sources(self, session: ReviewSession, sources: list[ReviewSource]) -> tuple[ReviewSource, ReviewSource]:
        pairs = list(itertools.combinations(sorted(sources, key=lambda s: s.id), 2))
        least = min(session.pair_counts[frozenset((a.id, b.id))] for a, b in pairs)
        a, b = session.rng.choice([p for p in pairs if session.pair_counts[frozenset((p[0].id, p[1].id))] == least])
        return (a, b) if session.rng.random() < 0.5 else (b, a)

    def next_pair(self, session: ReviewSession) -> Pair:
        sources = self.sources()
        if len(sources) < 2:
            raise AppInputError("Review needs at least two sources; fewer are available now.")
        left, right = self.choose_sources(session, sources)
        li, litem = left.draw(session.rng)
        ri, ritem = right.draw(session.rng)
        common = min(li.shape[0], ri.shape[0])
        session.current = Pair(left, right, litem, ritem, _fit(li, common, self.display),
                               _fit(ri, common, self.display))
        session.pair_counts[frozenset((left.id, right.id))] += 1
        session.rounds += 1
        return session.current

    def submit(self, session: ReviewSession | None, answers: dict[str, str | None]) -> list[int]:
        """Store one row per question for the pair on screen, then draw the next pair."""
        if session is None or session.current is None:
            raise AppInputError("Enter your name and press Start first.")
        clean: dict[str, str] = {}
        for q in GENERATION_QUESTIONS:
            a = answers.get(q)
            a = str(a).strip().lower() if a else ""
            if a not in review_db.ANSWERS:
                raise AppInputError(f"Answer every question (Left, Right or Tie) — missing: “{review_db.QUESTIONS[q]}”")
            clean[q] = a
        p = session.current
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
