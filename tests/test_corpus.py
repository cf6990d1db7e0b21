"""The background corpus (monosem/corpus.py): WordNet parsing, the fallback with its banner, the concept-sentence filter, the split and the stored copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monosem.config import MonosemError
from monosem.corpus import (
    WORDNET_FILES,
    ConceptFilter,
    CorpusSpec,
    build_corpus,
    chunk_texts,
    corpus_banner,
    corpus_words_needed,
    load_or_build_corpus,
    resolve_corpus,
    sample_texts,
    wordnet_dir,
    wordnet_entries,
)

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n  2 Princeton University under the following license.  \n"


def fake_wordnet(folder: Path, extra_glosses: tuple[str, ...] = (), n: int = 60) -> Path:
    """A WordNet folder in the data.<pos> format: a licence header, then synset lines ending in '| <gloss>'."""
    folder.mkdir(parents=True, exist_ok=True)
    for pos, name in zip("nvar", WORDNET_FILES):
        lines = [HEADER]
        for i in range(n):
            gloss = f"a {pos} thing number {i} that people use every day in town; \"they used thing {i} at home\""
            lines.append(f"{i:08d} 05 {pos} 01 {name[5:]}_word{i}(p) 0 000 | {gloss}  \n")
        for j, gloss in enumerate(extra_glosses if pos == "n" else ()):
            lines.append(f"{900 + j:08d} 05 n 01 extra{j} 0 000 | {gloss}  \n")
        (folder / name).write_text("".join(lines), encoding="utf-8")
    return folder


def test_wordnet_entries_are_definitions_plus_example_sentences(tmp_path):
    folder = fake_wordnet(tmp_path / "wn", ('the sound of silk; - Shakespeare; "a faint rustle"; "the rustle of leaves etc."',), n=2)
    entries = list(wordnet_entries(folder))
    assert entries[0] == "noun word0: a n thing number 0 that people use every day in town. They used thing 0 at home."
    assert entries[2] == "extra0: the sound of silk. A faint rustle. The rustle of leaves etc."  # no '(p)', no attribution, no '..'
    assert len(entries) == 3 + 3 * 2 and not any("LICENSEE" in e for e in entries)


def test_chunk_texts_joins_short_paragraphs_and_cuts_long_ones():
    texts = list(chunk_texts(["one two three four five", "six seven eight nine ten", " ".join(f"w{i}" for i in range(25))], words_per_text=10, min_words=3))
    assert [len(t.split()) for t in texts] == [10, 10, 10, 5]
    assert texts[0].startswith("one two three four five six")


def test_resolve_corpus_prefers_wordnet_offline_and_falls_back_to_pydoc_with_a_reason(tmp_path):
    folder = fake_wordnet(tmp_path / "wn")
    assert wordnet_dir([tmp_path / "none", folder]) == folder
    spec = resolve_corpus("auto", offline=True, wordnet=[folder])
    assert spec == CorpusSpec("auto", "wordnet") and not spec.is_fallback and spec.title == "WordNet 3.0 glosses"
    fallback = resolve_corpus("auto", offline=True, wordnet=[tmp_path / "none"])
    assert fallback.used == "pydoc" and fallback.is_fallback
    assert "offline" in (fallback.fallback_reason or "") or "datasets" in (fallback.fallback_reason or "")
    assert "WordNet is not installed" in (fallback.fallback_reason or "")
    banner = corpus_banner(fallback)
    assert "Fallback corpus in use" in banner and "wordnet-base" in banner and "make setup" in banner
    assert "Fallback" not in corpus_banner(spec) and "WordNet 3.0 glosses" in corpus_banner(spec)


def test_a_corpus_named_explicitly_that_is_missing_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(MonosemError, match="wordnet-base"):
        resolve_corpus("wordnet", offline=True, wordnet=[tmp_path / "none"])
    with pytest.raises(MonosemError, match="cannot be streamed.*MONOSEM_BACKGROUND=wordnet"):
        resolve_corpus("hf:NeelNanda/pile-10k", offline=True)
    assert resolve_corpus("pydoc", offline=True).used == "pydoc"


def test_the_filter_finds_concept_sentences_whatever_their_case_spacing_or_punctuation():
    flt = ConceptFilter(["She painted the door blue last summer.", "Seven."])
    assert flt.contains("Intro text. she  painted the door Blue, last summer! More text.")
    assert flt.contains("the number seven")  # a one-word sentence is a whole word
    assert not flt.contains("She painted the door green last summer.")
    assert not flt.contains("She painted the door blue")  # only part of the sentence
    assert not flt.contains("seventeen doors")


def test_no_training_or_held_out_text_contains_a_concept_sentence(tmp_path, concepts):
    sentences = concepts["sentence"].tolist()
    planted = (sentences[0], f"a gloss that quotes it: \"{sentences[500]}\"", sentences[1000].upper())
    folder = fake_wordnet(tmp_path / "wn", planted)
    split = build_corpus(CorpusSpec("wordnet", "wordnet"), sentences, n_heldout=4, wordnet=[folder], words_per_text=30)
    assert split.n_dropped >= 1
    flt = ConceptFilter(sentences)
    assert not [t for t in split.train + split.heldout if flt.contains(t)], "a concept sentence entered the corpus"
    unfiltered = build_corpus(CorpusSpec("wordnet", "wordnet"), [], n_heldout=4, wordnet=[folder], words_per_text=30)
    assert unfiltered.n_dropped == 0 and [t for t in unfiltered.train + unfiltered.heldout if flt.contains(t)], "the planted sentences are found"


def test_held_out_texts_are_spread_over_the_corpus_and_never_in_training(tmp_path):
    folder = fake_wordnet(tmp_path / "wn", n=200)
    split = build_corpus(CorpusSpec("wordnet", "wordnet"), [], n_heldout=8, wordnet=[folder], words_per_text=40)
    assert len(split.heldout) == 8 and not set(split.heldout) & set(split.train)
    assert "noun" in split.heldout[0] and "adv" in split.heldout[-1], "held-out texts come from every part of the corpus"
    with pytest.raises(MonosemError, match="MONOSEM_EVAL_TEXTS"):
        build_corpus(CorpusSpec("wordnet", "wordnet"), [], n_heldout=10_000, wordnet=[folder])


def test_the_stored_corpus_reloads_by_key_and_a_damaged_copy_is_rebuilt(tmp_path):
    folder = fake_wordnet(tmp_path / "wn", n=100)
    spec = CorpusSpec("wordnet", "wordnet")
    first = load_or_build_corpus(tmp_path / "data", spec, ["x y z"], 4, wordnet=[folder])
    again = load_or_build_corpus(tmp_path / "data", spec, ["x y z"], 4, wordnet=[folder])
    assert again.key == first.key and again.train_texts() == first.train_texts() and len(first.heldout_texts()) == 4
    other = load_or_build_corpus(tmp_path / "data", spec, ["another sentence"], 4, wordnet=[folder])
    assert other.key != first.key, "the key depends on the concept sentences that are filtered out"
    train = first.folder / "train.json"
    train.write_text(json.dumps(["tampered"]), encoding="utf-8")
    with pytest.raises(MonosemError, match="corrupted"):
        first.train_texts()
    with pytest.warns(UserWarning, match="damaged"):
        rebuilt = load_or_build_corpus(tmp_path / "data", spec, ["x y z"], 4, wordnet=[folder])
    assert rebuilt.train_texts() == again.train_texts()


def test_sample_texts_takes_about_the_tokens_asked_for_in_corpus_order():
    texts = [f"text {i}" for i in range(100)]
    sample = sample_texts(texts, [10] * 100, 205, seed=1)
    assert len(sample) == 21 and sample == sorted(sample, key=texts.index)
    assert sample_texts(texts, [10] * 100, 205, seed=1) == sample and sample_texts(texts, [10] * 100, 205, seed=2) != sample


def test_only_a_streamed_corpus_is_cut_to_the_words_needed():
    assert corpus_words_needed(CorpusSpec("auto", "wordnet"), 10**6) is None
    assert corpus_words_needed(CorpusSpec("hf:x", "hf:x"), 750_000) == 1_200_000


@pytest.mark.skipif(wordnet_dir() is None, reason="Debian's wordnet-base is not installed (make setup installs it as root)")
def test_the_installed_wordnet_gives_well_over_a_million_tokens_of_english(concepts):
    split = build_corpus(resolve_corpus("wordnet"), concepts["sentence"].tolist(), n_heldout=256)
    n_words = sum(len(t.split()) for t in split.train)
    assert n_words > 1_200_000, f"WordNet gave only {n_words} words"  # ~1.6M words, ~2.3M tokens with either tokenizer
    assert len(split.heldout) == 256 and all(len(t.split()) >= 8 for t in split.train[:1000])
