"""The blind-review database (SQLite): written by the app, read by the studio.

One row per answer. A rater sees two images side by side from two hidden sources and answers one
question with 'left', 'right' or 'tie'. No torch import: the studio uses this module.

Questions (``QUESTIONS``): 'pokemon' (looks like a Pokémon?), 'novel' (new design, not a copy?),
'faithful' (keeps the input's features? — translation pairs only).
"""
from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1
#: where the app writes and the studio reads answers unless told otherwise (env POKELAB_REVIEW_DB)
DEFAULT_PATH = Path("runs") / "review.sqlite"
QUESTIONS = {
    "pokemon": "Which one looks more like a Pokémon?",
    "novel": "Which one is a newer design (not a copy of an existing Pokémon)?",
    "faithful": "Which one keeps more of the input picture's features?",
}
ANSWERS = ("left", "right", "tie")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created      REAL    NOT NULL,              -- unix time
    rater        TEXT    NOT NULL,
    session      TEXT    NOT NULL,
    question     TEXT    NOT NULL,
    left_source  TEXT    NOT NULL,              -- e.g. 'dcgan:checkpoints/dcgan', 'real', 'sd-pokemon'
    right_source TEXT    NOT NULL,
    left_item    TEXT    NOT NULL,              -- what was shown: 'seed:123', 'real:25.png', ...
    right_item   TEXT    NOT NULL,
    answer       TEXT    NOT NULL CHECK (answer IN ('left', 'right', 'tie'))
);
CREATE INDEX IF NOT EXISTS ratings_question ON ratings(question);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


class ReviewDBError(RuntimeError):
    pass


def default_path() -> Path:
    """The review database the app and the studio share by default."""
    return Path(os.environ.get("POKELAB_REVIEW_DB") or DEFAULT_PATH)


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    """Open (creating on first use) with WAL and a busy timeout so several raters can write at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA busy_timeout=30000")
        con.executescript(_SCHEMA)
        con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    except sqlite3.DatabaseError as e:
        con.close()
        raise ReviewDBError(f"{path} is not a pokelab review database: {e}") from e
    return con


def record(path: str | os.PathLike, *, rater: str, session: str, question: str, left_source: str,
           right_source: str, left_item: str, right_item: str, answer: str,
           created: float | None = None) -> int:
    rater = (rater or "").strip()
    if not rater:
        raise ValueError("a rater name is required")
    if question not in QUESTIONS:
        raise ValueError(f"unknown question {question!r}; one of {', '.join(QUESTIONS)}")
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {ANSWERS}")
    with closing(connect(path)) as con:
        cur = con.execute(
            "INSERT INTO ratings(created, rater, session, question, left_source, right_source,"
            " left_item, right_item, answer) VALUES (?,?,?,?,?,?,?,?,?)",
            (time.time() if created is None else created, rater[:100], session, question,
             left_source, right_source, left_item, right_item, answer),
        )
        return int(cur.lastrowid)


def load(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All ratings as dicts (empty list when the database does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM ratings ORDER BY id")]
    except sqlite3.DatabaseError as e:
        raise ReviewDBError(f"{path} is not a readable pokelab review database: {e}") from e


def winner_loser(row: dict[str, Any]) -> tuple[str, str] | None:
    """(winner source, loser source) of one rating, None for a tie."""
    if row["answer"] == "left":
        return row["left_source"], row["right_source"]
    if row["answer"] == "right":
        return row["right_source"], row["left_source"]
    return None


def pair_key(row: dict[str, Any]) -> tuple:
    """Order-free identity of what was compared, to find repeated pairs across raters."""
    a = (row["left_source"], row["left_item"])
    b = (row["right_source"], row["right_item"])
    return (row["question"],) + tuple(sorted([a, b]))


def sources(rows: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({r["left_source"] for r in rows} | {r["right_source"] for r in rows})
