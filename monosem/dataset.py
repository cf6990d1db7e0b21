"""The concept dataset: the categories, reading and validating data/concepts.csv, and its content hash."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from monosem.config import MonosemError
from monosem.io import hash_json

CONCEPTS: tuple[str, ...] = ("numbers", "emotions", "actions", "colors")
CONTROLS: tuple[str, ...] = ("animals", "foods", "tools", "places")
CATEGORIES: tuple[str, ...] = CONCEPTS + CONTROLS
REQUIRED_COLUMNS: tuple[str, ...] = ("concept", "word", "sentence")
FRAME_KINDS: tuple[str, ...] = ("neutral", "category")  # optional column frame_kind; without it every row is "unspecified"
UNSPECIFIED = "unspecified"
# Surface forms a concept's words split into (name, regex on the word). A unit that fires on one form of the concept's
# words and not the other responds to the form (digits, an -ing ending), not to the concept: ``surface_form_balance``.
SURFACE_FORMS: dict[str, tuple[str, str]] = {"numbers": ("written in digits", r"\d"), "emotions": ("ending in -ed", r"ed$"),
                                              "actions": ("ending in -ing", r"ing$")}
FORM_BOUND = 0.1  # balance below which a unit counts as bound to one surface form


def word_span(sentence: str, word: str) -> tuple[int, int] | None:
    """Character span of ``word`` as a whole word in ``sentence``, or None unless it occurs exactly once."""
    hits = [m.span() for m in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", sentence)]
    return hits[0] if len(hits) == 1 else None


def load_concepts(path: Path | str, categories: Sequence[str] = CATEGORIES, concepts: Sequence[str] = CONCEPTS) -> pd.DataFrame:
    """Read and validate the concept dataset (columns concept, word, sentence).

    Errors name the line of the file and what is wrong. A UTF-8 byte-order mark (as Excel writes) is
    accepted. The optional columns ``frame`` (an id of the sentence frame) and ``frame_kind``
    (``neutral``: a frame every category uses; ``category``: written for the word's category) mark
    the crossed design; without them every row's kind is ``unspecified``. Adds ``is_concept`` (in
    ``concepts``), ``label`` (index in ``categories``), ``word_start``/``word_end`` (character span),
    ``word_id`` and ``line`` (the line in the file).
    """
    path = Path(path)
    if not path.is_file():
        raise MonosemError(f"concept dataset {path} not found; regenerate it with `python scripts/make_concepts.py`")
    raw = path.read_bytes()
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark: Excel's "CSV UTF-8"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MonosemError(f"{path}: line {line} is not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise MonosemError(f"{path}: line {reader.line_num}: {exc} (a field over {csv.field_size_limit():,} characters, or an unclosed quote); "
                           "keep one sentence per line and close every quote") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise MonosemError(f"{path} is empty; it needs a header line 'concept,word,sentence' and one row per sentence")
    header = [c.strip() for c in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise MonosemError(f"{path}: line 1 lacks column(s) {missing}; the header must be 'concept,word,sentence' (found {header})")
    col = {c: header.index(c) for c in REQUIRED_COLUMNS}
    frame_col = header.index("frame") if "frame" in header else None
    kind_col = header.index("frame_kind") if "frame_kind" in header else None
    records, seen = [], {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise MonosemError(f"{path}: line {line_no} has {len(row)} fields, expected {len(header)}; quote sentences that contain commas")
        concept, word, sentence = (row[col[c]].strip() for c in REQUIRED_COLUMNS)
        if concept not in categories:
            raise MonosemError(f"{path}: line {line_no}: unknown concept {concept!r}; use one of {list(categories)}")
        if not word or not sentence:
            raise MonosemError(f"{path}: line {line_no}: empty word or sentence")
        span = word_span(sentence, word)
        if span is None:
            n = len(re.findall(rf"(?<!\w){re.escape(word)}(?!\w)", sentence))
            raise MonosemError(f"{path}: line {line_no}: the word {word!r} occurs {n} times as a whole word in {sentence!r}; it must occur exactly once")
        key = (concept, word, sentence)
        if key in seen:
            raise MonosemError(f"{path}: line {line_no} duplicates line {seen[key]}; remove one of them")
        seen[key] = line_no
        kind = row[kind_col].strip() if kind_col is not None else UNSPECIFIED
        if kind_col is not None and kind not in FRAME_KINDS:
            raise MonosemError(f"{path}: line {line_no}: frame_kind {kind!r} must be one of {list(FRAME_KINDS)} (neutral: a frame every category uses)")
        frame = row[frame_col].strip() if frame_col is not None else ""
        records.append((concept, word, sentence, *span, line_no, frame, kind))
    if not records:
        raise MonosemError(f"{path} has a header but no rows")
    df = pd.DataFrame(records, columns=["concept", "word", "sentence", "word_start", "word_end", "line", "frame", "frame_kind"])
    owners = df.groupby("word")["concept"].nunique()
    shared = [word for word, n in zip(owners.index, owners.to_numpy()) if n > 1]
    if shared:
        w = shared[0]
        raise MonosemError(f"{path}: word {w!r} is listed under several concepts {sorted(df[df.word == w].concept.unique())}; keep it in one")
    df["is_concept"] = df["concept"].isin(list(concepts))
    df["label"] = pd.Categorical(df["concept"], categories=list(categories)).codes.astype(int)
    df["word_id"] = pd.factorize(df["word"])[0]
    return df


def dataset_hash(df: pd.DataFrame) -> str:
    """Hash of the dataset content that determines activations (concept, word, sentence)."""
    return hash_json(df[list(REQUIRED_COLUMNS)].values.tolist())
