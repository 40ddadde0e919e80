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

Broken sources leave the pool too: a source whose picture cannot be made (an export that fails to load, say)
is dropped when a round is drawn, logged once, and named by ``notes()`` (the Review tab shows them); the
round is drawn from the sources that remain.

Answers are stored once per round: each round has a number (``Pair.round``, shown on the page as "pair N");
``submit`` marks the round answered before storing it and refuses a second submit of the same round (or of a
round that is no longer the one on screen), so a click repeated while the next pair could not be drawn does
not store the answers again.
"""
from __future__ import annotations

import itertools
import logging
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

log = logging.getLogger("pokelab.app")


class ReviewNotice(AppInputError):
    """Nothing was stored and nothing failed: an unanswered question, a round already saved, no name. The
    page shows it as a warning and keeps the pair on screen (``app.ui``); it is an AppInputError so API
    callers of the book itself see it like any refused request."""


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
    round: int = 0                               # the session's round number (the page's "pair N")
    answered: bool = False                       # its answers are stored: a second submit is refused


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
        #: sources whose picture could not be made (id -> 'label: reason'): out of every round from then on
        self.broken: dict[str, str] = {}

    def sources(self) -> list[ReviewSource]:
        """The generation pool: every source offered except the collapsed and the broken ones."""
        return [s for s in self._sources() if not s.collapsed and s.id not in self.broken]

    def notes(self) -> list[str]:
        """Sources left out because their pictures could not be made (for the Review tab and the log)."""
        return [f"{why}" for why in self.broken.values()]

    def _drop(self, source, error: BaseException) -> None:
        with self._lock:
            if source.id in self.broken:
                return
            self.broken[source.id] = f"{source.label} left the review: {error}"
        log.warning("review: %s left the pool: %s", source.id, error)

    def translation_groups(self) -> list[TranslationGroup]:
        """Groups that can make a round: at least two sources that are not collapsed and at least one input
        picture."""
        out = []
        for g in self._translations():
            kept = [s for s in g.sources if not s.collapsed and s.id not in self.broken]
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
        try:
            rater = as_text(rater, "your name", LIMITS.max_rater_chars)
        except AppInputError as e:
            raise ReviewNotice(f"{e} (type your name above, then press Start)") from None
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

    @staticmethod
    def _make(fn, *args):
        """A side's picture, or (None, error) when the source cannot make one (it then leaves the pool)."""
        try:
            return fn(*args), None
        except Exception as e:  # noqa: BLE001 - an export that fails to load must not block the session
            return None, e

    def choose_sources(self, session: ReviewSession, sources: list[ReviewSource]) -> tuple[ReviewSource, ReviewSource]:
        pairs = [("generate", a, b) for a, b in itertools.combinations(sorted(sources, key=lambda s: s.id), 2)]
        _, a, b = self.choose(session, pairs)
        return a, b

    def next_pair(self, session: ReviewSession) -> Pair:
        """Draw the next round. A source that fails to make its picture leaves the pool (``broken``, logged)
        and another pair is drawn; when fewer than two sources remain, AppInputError says which left."""
        while True:
            candidates = self._candidates()
            if not candidates:
                gone = self.notes()
                raise AppInputError("Review needs at least two sources; fewer are available now."
                                    + (f" Left out because their pictures could not be made: {'; '.join(gone)}."
                                       if gone else ""))
            kind, left, right, *rest = self.choose(session, candidates)
            if kind == "generate":
                (l_out, err) = self._make(left.draw, session.rng)
                if err is not None:
                    self._drop(left, err)
                    continue
                (r_out, err) = self._make(right.draw, session.rng)
                if err is not None:
                    self._drop(right, err)
                    continue
                (li, litem), (ri, ritem) = l_out, r_out
                common = min(li.shape[0], ri.shape[0])
                pair = Pair(left, right, litem, ritem, _fit(li, common, self.display), _fit(ri, common, self.display))
            else:
                pair = self._translation_pair(session, rest[0], left, right)
                if pair is None:
                    continue
            session.pair_counts[frozenset((left.id, right.id))] += 1
            session.rounds += 1
            pair.round = session.rounds
            session.current = pair
            return pair

    def _translation_pair(self, session: ReviewSession, group: TranslationGroup, left: TranslationSource,
                          right: TranslationSource) -> Pair | None:
        usable = [i for i, f in enumerate(group.files) if left.accepts(f) and right.accepts(f)]
        i = session.rng.choice(usable)
        name = group.files[i]
        picture = group.images[i].permute(1, 2, 0).numpy()
        sides = []
        for src in (left, right):
            out, err = self._make(src.render, picture, name)
            if err is not None:
                self._drop(src, err)
                return None
            sides.append(out)
        (li, litem), (ri, ritem) = sides
        common = min(li.shape[0], ri.shape[0])
        return Pair(left, right, litem, ritem, _fit(li, common, self.display), _fit(ri, common, self.display),
                    kind="translate", questions=tuple(TRANSLATION_QUESTIONS),
                    input_image=_fit(picture, min(common, picture.shape[0]), self.display),
                    input_item=f"real:{name}")

    def submit(self, session: ReviewSession | None, answers: dict[str, str | None],
               round_id: int | str | None = None) -> list[int]:
        """Store one row per question of the pair on screen, then draw the next pair. Once per round: a
        round already answered, or (``round_id``, the round the page shows) one that is no longer on screen,
        is refused with a message and nothing is stored."""
        if session is None or session.current is None:
            raise AppInputError("Enter your name and press Start first.")
        p = session.current
        if round_id not in (None, "") and str(round_id) != str(p.round):
            raise ReviewNotice(f"Your answers to pair {round_id} were already saved; nothing was stored again. "
                               f"The pair on screen now is pair {p.round}.")
        clean: dict[str, str] = {}
        for q in p.questions:
            a = answers.get(q)
            a = str(a).strip().lower() if a else ""
            if a not in review_db.ANSWERS:
                raise ReviewNotice(f"Answer every question (Left, Right or Tie) — missing: “{review_db.QUESTIONS[q]}”. "
                                   "Nothing was stored; the pair stays on screen.")
            clean[q] = a
        with self._lock:  # two clicks at once: only one of them stores the round
            if p.answered:
                raise ReviewNotice(f"Your answers to pair {p.round} were already saved; nothing was stored "
                                   "again. Press Skip this pair to go on.")
            p.answered = True
        ids: list[int] = []
        try:
            for q, a in clean.items():
                ids.append(review_db.record(self.db_path, rater=session.rater, session=session.session, question=q,
                                            left_source=p.left.id, right_source=p.right.id, left_item=p.left_item,
                                            right_item=p.right_item, answer=a))
        except BaseException:
            if not ids:
                p.answered = False  # nothing stored: the same answers may be sent again
            raise
        session.answers += len(ids)
        try:
            self.next_pair(session)
        except AppInputError as e:
            raise AppInputError(f"Your answers to pair {p.round} were saved. {e}") from None
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
