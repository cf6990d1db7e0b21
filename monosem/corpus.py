"""The background corpus for SAE training: which general-English corpus is used (with its fallback), its texts, the concept-sentence filter and the held-out split.

Sources, in the order ``auto`` tries them:

- ``hf:<dataset>`` (online): the ``text`` field of a Hugging Face dataset, streamed with ``datasets``
  (``auto`` picks ``hf:NeelNanda/pile-10k`` when ``datasets`` is installed and the hub answers);
- ``wordnet`` (offline): the glosses and example sentences of WordNet 3.0, installed by ``make setup``
  from Debian's ``wordnet-base`` (``/usr/share/wordnet/data.{noun,verb,adj,adv}``);
- ``pydoc`` (last resort): the prose paragraphs of Python's documentation (``pydoc_data.topics``,
  shipped with every CPython), about 45k tokens; a banner says when it stands in for general English.
"""

from __future__ import annotations

import html
import json
import logging
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monosem.config import CODE_VERSION, MonosemError
from monosem.io import atomic_dir, clean_stale_temp, file_lock, hash_json, read_json, sha256_file
from monosem.paths import corpus_path

log = logging.getLogger(__name__)

ONLINE_DEFAULT = "hf:NeelNanda/pile-10k"
WORDNET_DIRS: tuple[Path, ...] = (Path("/usr/share/wordnet"),)  # where Debian's wordnet-base puts data.noun etc.
WORDNET_FILES: tuple[str, ...] = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDS_PER_TEXT = 64  # WordNet: median ~85 tokens, 99% under 128 (the extraction's window)
TITLES = {"wordnet": "WordNet 3.0 glosses", "pydoc": "Python docs (pydoc)"}
INSTALL_WORDNET = "install Debian's wordnet-base (`sudo apt-get install wordnet-base`, which `make setup` runs as root)"


@dataclass(frozen=True)
class CorpusSpec:
    """Which corpus was asked for ('auto', 'wordnet', 'pydoc' or 'hf:<dataset>'), which is used, and why (if it differs)."""

    asked: str
    used: str
    fallback_reason: str | None = None

    @property
    def title(self) -> str:
        """The short name shown in figure titles and summaries."""
        return TITLES.get(self.used, self.used.removeprefix("hf:"))

    @property
    def is_fallback(self) -> bool:
        """True when the corpus used is not general English (the pydoc stand-in)."""
        return self.fallback_reason is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def wordnet_dir(candidates: Sequence[Path] = WORDNET_DIRS) -> Path | None:
    """The first folder of ``candidates`` that holds all four WordNet data files, or None."""
    for folder in candidates:
        if all((Path(folder) / name).is_file() for name in WORDNET_FILES):
            return Path(folder)
    return None


def _online_unavailable(name: str, offline: bool) -> str | None:
    """Why the hub dataset ``name`` cannot be streamed here (None when it can be tried)."""
    try:
        import datasets  # noqa: F401
    except ImportError:
        return "the package `datasets` is not installed (pip install -e '.[online]')"
    from monosem.model import hub_reachable

    if not hub_reachable(offline):
        return "the Hugging Face hub is not reachable (offline)"
    return None


def resolve_corpus(asked: str = "auto", offline: bool = False, wordnet: Sequence[Path] = WORDNET_DIRS) -> CorpusSpec:
    """The corpus to use for ``asked`` ('auto': the online default, else WordNet, else pydoc with a reason).

    A corpus named explicitly that is not available is an error that says what to do; only
    ``auto`` falls back.
    """
    if asked.startswith("hf:"):
        why = _online_unavailable(asked, offline)
        if why:
            raise MonosemError(f"MONOSEM_BACKGROUND={asked} cannot be streamed: {why}; run with network access, or use MONOSEM_BACKGROUND=wordnet")
        return CorpusSpec(asked, asked)
    if asked == "wordnet":
        if wordnet_dir(wordnet) is None:
            raise MonosemError(f"MONOSEM_BACKGROUND=wordnet, but WordNet's data files are not in {', '.join(map(str, wordnet))}; {INSTALL_WORDNET}")
        return CorpusSpec(asked, "wordnet")
    if asked == "pydoc":
        return CorpusSpec(asked, "pydoc")
    if asked != "auto":
        raise MonosemError(f"unknown background corpus {asked!r}; use auto, wordnet, pydoc or hf:<dataset name>")
    online_why = _online_unavailable(ONLINE_DEFAULT, offline)
    if online_why is None:
        return CorpusSpec(asked, ONLINE_DEFAULT)
    if wordnet_dir(wordnet) is not None:
        return CorpusSpec(asked, "wordnet")
    return CorpusSpec(asked, "pydoc", f"{online_why}, and WordNet is not installed ({INSTALL_WORDNET})")


def corpus_banner(spec: CorpusSpec) -> str:
    """HTML banner naming the corpus used and, when it is the pydoc stand-in, why and how to get general English."""
    if not spec.is_fallback:
        return f"<div style='padding:8px;border:2px solid #2a7;'><b>Background corpus:</b> {html.escape(spec.title)} (<code>{html.escape(spec.used)}</code>)</div>"
    return ("<div style='padding:8px;border:2px solid #d80;background:#fff6e0;'>"
            f"<b>Fallback corpus in use.</b> No general-English corpus is available: {html.escape(spec.fallback_reason or '')}.<br>"
            "The SAEs train on the prose of Python's own documentation (<code>pydoc</code>, about 45k tokens, repeated), "
            "so their features describe that text. Every summary and figure names the corpus.<br>"
            "To train on general English: run <code>make setup</code> as root on Debian (it installs <code>wordnet-base</code>), "
            "or install the online extra and run with network access (<code>MONOSEM_BACKGROUND=hf:NeelNanda/pile-10k</code>).</div>")


def show_corpus_banner(spec: CorpusSpec) -> None:
    """Display ``corpus_banner`` in a notebook."""
    from IPython.display import HTML, display

    display(HTML(corpus_banner(spec)))


# -- the sources -------------------------------------------------------------------------------------


def _sentence(text: str) -> str:
    """``text`` with a capital first letter and a final full stop (unless it ends in . ! or ?)."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def wordnet_entries(folder: Path) -> Iterator[str]:
    """One entry per synset, in file order: '<lemma>: <definition>.' followed by its example sentences.

    A synset line of ``data.<pos>`` ends in ``| <gloss>``; the gloss holds the definition(s) and
    example sentences in double quotes. Lemmas lose their underscores and syntactic markers ('(p)').
    """
    for name in WORDNET_FILES:
        with open(Path(folder) / name, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or " | " not in line:
                    continue  # the licence header
                head, gloss = line.rstrip("\n").split(" | ", 1)
                fields = head.split()
                lemma = re.sub(r"\([a-z]+\)$", "", fields[4]).replace("_", " ")
                examples = [e.strip() for e in re.findall(r'"([^"]+)"', gloss)]
                definition = re.sub(r'"[^"]*"', "", gloss)  # the examples
                definition = "; ".join(p.strip() for p in definition.split(";") if p.strip() and not p.strip().startswith("-"))  # '- Shakespeare'
                definition = definition.rstrip(" .;,")
                parts = ([f"{lemma}: {definition}."] if definition else []) + [_sentence(e) for e in examples if e]
                if parts:
                    yield " ".join(parts)


def pydoc_paragraphs() -> Iterator[str]:
    """The prose paragraphs of Python's documentation (``pydoc_data.topics``); code blocks, headings and fragments left out."""
    import pydoc_data.topics

    for name in sorted(pydoc_data.topics.topics):
        for para in re.split(r"\n\s*\n", pydoc_data.topics.topics[name]):
            lines = para.split("\n")
            if any(line.startswith(" ") for line in lines) or re.fullmatch(r"[*=\-^\s]+", lines[-1]) or len(para.split()) < 8:
                continue
            yield " ".join(line.strip() for line in lines)


def hf_paragraphs(name: str) -> Iterator[str]:
    """The ``text`` field of the Hugging Face dataset ``name`` (its train split), streamed with ``datasets``."""
    try:
        import datasets
    except ImportError:
        raise MonosemError("an online background corpus needs `pip install -e '.[online]'` (the package datasets)") from None
    for row in datasets.load_dataset(name, split="train", streaming=True):
        yield str(row["text"])


def corpus_paragraphs(spec: CorpusSpec, wordnet: Sequence[Path] = WORDNET_DIRS) -> Iterator[str]:
    """The raw paragraphs (entries, documents) of the corpus ``spec`` uses."""
    if spec.used == "wordnet":
        folder = wordnet_dir(wordnet)
        if folder is None:
            raise MonosemError(f"WordNet's data files are not in {', '.join(map(str, wordnet))}; {INSTALL_WORDNET}")
        return wordnet_entries(folder)
    if spec.used == "pydoc":
        return pydoc_paragraphs()
    if spec.used.startswith("hf:"):
        return hf_paragraphs(spec.used[3:])
    raise MonosemError(f"unknown background corpus {spec.used!r}; use auto, wordnet, pydoc or hf:<dataset name>")


def chunk_texts(paragraphs: Iterable[str], words_per_text: int = WORDS_PER_TEXT, min_words: int = 8) -> Iterator[str]:
    """Texts of about ``words_per_text`` words: short paragraphs are joined in order, long ones cut; pieces under ``min_words`` dropped."""
    pending: list[str] = []
    for para in paragraphs:
        words = para.split()
        if len(pending) + len(words) > words_per_text and len(pending) >= min_words:
            yield " ".join(pending)
            pending = []
        pending += words
        while len(pending) >= words_per_text:
            yield " ".join(pending[:words_per_text])
            pending = pending[words_per_text:]
    if len(pending) >= min_words:
        yield " ".join(pending)


# -- evaluation sentences never enter training ----------------------------------------------------


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


class ConceptFilter:
    """Finds texts that contain any of a set of sentences, compared as lower-case word sequences (punctuation ignored)."""

    def __init__(self, sentences: Iterable[str]):
        self.by_start: dict[tuple[str, ...], list[str]] = {}
        for sentence in sentences:
            words = _words(sentence)
            if words:
                self.by_start.setdefault(tuple(words[:2]), []).append(" " + " ".join(words) + " ")

    def contains(self, text: str) -> bool:
        """True when ``text`` holds one of the sentences as a contiguous run of words."""
        words = _words(text)
        joined = None
        for i in range(len(words)):
            for key in ((words[i], words[i + 1]) if i + 1 < len(words) else (), (words[i],)):
                candidates = self.by_start.get(tuple(key))
                if candidates:
                    joined = joined or " " + " ".join(words) + " "
                    if any(c in joined for c in candidates):
                        return True
        return False


# -- the corpus of a run ------------------------------------------------------------------------------


@dataclass
class CorpusSplit:
    """A run's background corpus: training texts, held-out texts (never trained on) and how many texts the filter dropped."""

    spec: CorpusSpec
    train: list[str]
    heldout: list[str]
    n_dropped: int  # texts that contained a concept sentence


def build_corpus(spec: CorpusSpec, concept_sentences: Iterable[str], n_heldout: int, max_words: int | None = None,
                 words_per_text: int = WORDS_PER_TEXT, wordnet: Sequence[Path] = WORDNET_DIRS) -> CorpusSplit:
    """The texts of ``spec`` (up to ``max_words`` words; None: all), without any text that contains a concept sentence,
    split into training texts and ``n_heldout`` held-out texts spread evenly over the corpus."""
    flt = ConceptFilter(concept_sentences)
    texts: list[str] = []
    n_dropped = n_words = 0
    for text in chunk_texts(corpus_paragraphs(spec, wordnet), words_per_text):
        if flt.contains(text):
            n_dropped += 1
            continue
        texts.append(text)
        n_words += len(text.split())
        if max_words is not None and n_words >= max_words:
            break
    if len(texts) <= 2 * n_heldout:
        raise MonosemError(f"the background corpus {spec.used} gave {len(texts)} texts, too few to hold out {n_heldout} (MONOSEM_EVAL_TEXTS); lower it")
    picked = set(np.linspace(0, len(texts) - 1, n_heldout).round().astype(int).tolist())
    return CorpusSplit(spec, [t for i, t in enumerate(texts) if i not in picked], [texts[i] for i in sorted(picked)], n_dropped)


def background_texts(n_tokens: int, source: str = "pydoc", words_per_text: int = 48) -> list[str]:
    """About ``n_tokens`` tokens of the corpus ``source`` ('pydoc', 'wordnet' or 'hf:<dataset>') in texts of
    ~``words_per_text`` words, unfiltered (benchmarks and tests that need plain English text)."""
    spec = CorpusSpec(source, source)
    out, n_words = [], 0
    for text in chunk_texts(corpus_paragraphs(spec), words_per_text):
        if n_words >= n_tokens * 0.75:
            break
        out.append(text)
        n_words += len(text.split())
    return out


def corpus_words_needed(spec: CorpusSpec, train_tokens: int) -> int | None:
    """Words to read from a streamed (hub) corpus to cover ``train_tokens`` training tokens (about 0.75 words per
    token, plus a fifth); None for the local corpora, which are always read whole."""
    return int(train_tokens / 0.75 * 1.2) if spec.used.startswith("hf:") else None


def sample_texts(texts: Sequence[str], token_counts: Sequence[int], n_tokens: int, seed: int = 0) -> list[str]:
    """A seeded random sample of ``texts`` (in corpus order) holding about ``n_tokens`` tokens (``token_counts`` per text)."""
    order = np.random.default_rng(seed).permutation(len(texts))
    total = np.cumsum(np.asarray(token_counts)[order])
    take = order[: int(np.searchsorted(total, n_tokens)) + 1]
    return [texts[int(i)] for i in np.sort(take)]


# -- the corpus on disk: <data>/corpus/<key>/ -----------------------------------------------------


def _source_version(spec: CorpusSpec, wordnet: Sequence[Path]) -> str:
    """What the corpus text depends on besides its name: the WordNet files' hashes, the Python version, or the dataset name."""
    if spec.used == "wordnet":
        folder = wordnet_dir(wordnet)
        return hash_json([sha256_file(folder / name) for name in WORDNET_FILES]) if folder else "missing"
    if spec.used == "pydoc":
        return sys.version.split()[0]
    return spec.used


@dataclass
class StoredCorpus:
    """A corpus written by ``load_or_build_corpus``: its folder and ``meta.json`` (spec, counts, checksums)."""

    folder: Path
    meta: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.meta["key"])

    @property
    def spec(self) -> CorpusSpec:
        return CorpusSpec(**self.meta["spec"])

    @property
    def n_dropped(self) -> int:
        """Texts left out because they contain a concept sentence."""
        return int(self.meta["n_dropped"])

    def train_texts(self) -> list[str]:
        """The training texts, in corpus order."""
        return self._read("train.json")

    def heldout_texts(self) -> list[str]:
        """The held-out texts (never trained on)."""
        return self._read("heldout.json")

    def _read(self, name: str) -> list[str]:
        path = self.folder / name
        fix = "rerun notebooks/01_extract_activations.ipynb to rebuild it"
        if not path.is_file() or sha256_file(path) != self.meta["sha256"].get(name):
            raise MonosemError(f"{path} is missing or corrupted (its SHA-256 does not match meta.json); {fix}")
        return read_json(path, "corpus texts", fix)


def open_corpus(data: Path, key: str) -> StoredCorpus:
    """The stored corpus ``key`` (meta.json read; the texts are verified when read), or an error naming notebook 01."""
    folder = corpus_path(data, key)
    meta = read_json(folder / "meta.json", "corpus metadata", "run notebooks/01_extract_activations.ipynb first (with the same settings)")
    if not isinstance(meta, dict) or meta.get("key") != key:
        raise MonosemError(f"{folder / 'meta.json'} does not belong to corpus {key}; rerun notebooks/01_extract_activations.ipynb")
    return StoredCorpus(folder, meta)


def load_or_build_corpus(data: Path, spec: CorpusSpec, concept_sentences: Sequence[str], n_heldout: int, max_words: int | None = None,
                         words_per_text: int = WORDS_PER_TEXT, wordnet: Sequence[Path] = WORDNET_DIRS) -> StoredCorpus:
    """The corpus of ``spec`` without concept sentences, split into training and held-out texts: loaded from
    ``<data>/corpus/<key>/`` if it is there and intact, else built (``build_corpus``) and written atomically."""
    inputs = {"corpus": spec.used, "source_version": _source_version(spec, wordnet), "words_per_text": words_per_text, "max_words": max_words,
              "n_heldout": n_heldout, "concept_sentences": hash_json(sorted(set(concept_sentences))), "code_version": CODE_VERSION}
    key = hash_json(inputs)
    folder = corpus_path(data, key)
    clean_stale_temp(folder.parent)
    with file_lock(folder):
        if (folder / "meta.json").is_file():
            try:
                stored = open_corpus(data, key)
                _ = stored.train_texts(), stored.heldout_texts()  # verifies the checksums
                return stored
            except MonosemError as exc:
                warnings.warn(f"corpus {folder} is damaged ({exc}); rebuilding it", stacklevel=2)
        split = build_corpus(spec, concept_sentences, n_heldout, max_words, words_per_text, wordnet)
        with atomic_dir(folder) as tmp:
            for name, texts in (("train.json", split.train), ("heldout.json", split.heldout)):
                (tmp / name).write_text(json.dumps(texts), encoding="utf-8")
            meta = {"key": key, "key_inputs": inputs, "spec": spec.to_json(), "n_train": len(split.train), "n_heldout": len(split.heldout),
                    "n_dropped": split.n_dropped, "n_words": sum(len(t.split()) for t in split.train),
                    "sha256": {name: sha256_file(tmp / name) for name in ("train.json", "heldout.json")}}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        log.info("corpus %s: %d training texts, %d held out, %d dropped -> %s", spec.used, len(split.train), len(split.heldout), split.n_dropped, folder)
    return open_corpus(data, key)
