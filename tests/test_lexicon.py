"""The WordNet concept lexicons (monosem/lexicon.py) and the second word list they give (scripts/make_wordlist2.py, data/concepts_wordnet.csv)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from monosem.config import MonosemError
from monosem.corpus import wordnet_dir
from monosem.dataset import CATEGORIES, load_concepts
from monosem.testing import ROOT

if wordnet_dir() is None:
    pytest.skip("WordNet is not installed (Debian's wordnet-base, /usr/share/wordnet)", allow_module_level=True)

from monosem.lexicon import load_lexicon, read_wordnet, sense_count, tag_count  # noqa: E402

LIST1 = ROOT / "data" / "concepts.csv"
LIST2 = ROOT / "data" / "concepts_wordnet.csv"
SCRIPT = ROOT / "scripts" / "make_wordlist2.py"


@pytest.fixture(scope="module")
def lex():
    return load_lexicon()


def first_list_words() -> set[str]:
    with open(LIST1, encoding="utf-8") as fh:
        return {row["word"].lower() for row in csv.DictReader(fh)}


@pytest.mark.parametrize("word, category", [
    ("crimson", "colors"), ("red", "colors"), ("reddish", "colors"),
    ("running", "actions"), ("run", "actions"), ("swim", "actions"), ("jump", "actions"), ("climb", "actions"), ("dance", "actions"),
    ("walk", "actions"), ("throw", "actions"), ("kick", "actions"),
    ("anger", "emotions"), ("angry", "emotions"), ("happy", "emotions"), ("fear", "emotions"), ("terrified", "emotions"),
    ("dog", "animals"), ("cat", "animals"), ("horse", "animals"),
    ("hammer", "tools"), ("axe", "tools"), ("broom", "tools"),
    ("seventeen", "numbers"), ("thousand", "numbers"), ("42", "numbers"), ("3.5", "numbers"), ("1,000", "numbers"),
    ("bread", "foods"), ("cheese", "foods"),
    ("kitchen", "places"), ("library", "places"), ("school", "places"), ("beach", "places"), ("forest", "places"), ("city", "places"),
])
def test_known_members(lex, word, category):
    assert lex.label(word) == category


@pytest.mark.parametrize("word", ["the", "be", "have", "make", "use", "go", "get", "fellow", "state", "point", "I", "", "...", "xyzzy"])
def test_known_non_members(lex, word):
    assert lex.label(word) is None


@pytest.mark.parametrize("word, category", [
    ("dogs", "animals"), ("geese", "animals"), ("ran", "actions"), ("swam", "actions"), ("kicked", "actions"), ("dances", "actions"),
    ("happier", "emotions"), ("colors", "colors"), ("kitchens", "places"), ("libraries", "places"), ("hammers", "tools"),
    ("Crimson,", "colors"), ("“Anger”", "emotions"), ("dog's", "animals"),
])
def test_inflected_and_punctuated_forms_map_to_the_lexicon_word(lex, word, category):
    assert lex.label(word) == category


def test_morphy_uses_exception_lists_and_suffix_rules():
    wn = read_wordnet()
    assert ("run", "v") in wn.morphy("running")  # verb.exc
    assert ("goose", "n") in wn.morphy("geese")  # noun.exc
    assert ("happy", "a") in wn.morphy("happier")  # adj.exc
    assert ("library", "n") in wn.morphy("libraries")  # -ies -> -y
    assert wn.morphy("xyzzy") == set()


def test_ambiguous_words_are_in_no_category(lex):
    assert {"orange", "duck"} <= lex.ambiguous  # colour and fruit; animal and food
    for word in sorted(lex.ambiguous):
        assert not any(word in words for words in lex.words.values()), word
        assert lex.label(word) is None, word
        assert len(lex.reach[word]) >= 2, word
    for i, a in enumerate(CATEGORIES):
        for b in CATEGORIES[i + 1:]:
            assert not lex.words[a] & lex.words[b], (a, b)


def test_a_word_that_is_also_an_irregular_form_of_another_is_not_labelled(lex):
    assert "saw" in lex.words["tools"] and lex.label("saw") is None  # the tool, and the past of see
    assert lex.label("worried") == "emotions"  # worry's own past participle is still the emotion


def test_common_sense_filter_and_excluded_words(lex):
    assert "fellow" not in lex.words["numbers"]  # one of a pair, but mostly a man
    assert "bear" not in lex.words["animals"]  # mostly the verb in SemCor
    assert "go" not in lex.words["actions"]  # listed in EXCLUDED_WORDS
    assert not any(lex.label(w) for w in ("ii", "xiv", "us", "or", "in"))  # Roman numerals, state abbreviations


def test_hyponym_closure_of_a_small_synset_equals_the_hand_checked_set():
    wn = read_wordnet()
    museum = wn.synset("museum.n.01")  # data.noun 03800563: ~ science_museum, ~i Hagia_Sophia, ~i Louvre; none has hyponyms
    assert museum == "n03800563"
    assert wn.closure([museum]) == {"n03800563", "n04147364", "n03475118", "n03692942"}
    assert wn.closure([museum], ("~",)) == {"n03800563", "n04147364"}
    lemmas = {lemma for key in wn.closure([wn.synset("athletic_facility.n.01")]) for lemma in wn.lemmas(key)}
    assert lemmas == {"athletic_facility", "field_house", "football_stadium", "gym", "gymnasium", "natatorium", "swimming_bath", "swimming_pool"}


def test_synset_names_follow_the_sense_order_of_the_index():
    wn = read_wordnet()
    assert wn.lemmas(wn.synset("dog.n.01"))[0] == "dog"
    assert wn.lemmas(wn.synset("hammer.n.02")) == ("hammer",)  # n.01 is the part of a gun
    assert wn.synset("red.s.01") == wn.synset("red.a.01")
    with pytest.raises(MonosemError, match="dog.n.01"):
        wn.synset("dog.n.99")


def test_sense_counts_come_from_the_index_and_cntlist():
    assert sense_count("run", "v") == 29  # index.verb: run v 41 7 ... 41 29
    assert sense_count("run") == 29 + 7  # plus index.noun's 7
    assert tag_count("run", "v") >= 106  # run%2:38:00:: (sense 1) alone is tagged 106 times
    assert sense_count("xyzzy") == 0


def test_describe_and_overlap(lex):
    described = lex.describe(n_samples=8, seed=1)
    assert set(described) == set(CATEGORIES)
    for category, info in described.items():
        assert info["size"] == len(lex.words[category]) and info["size"] > 100
        assert info["samples"] == sorted(info["samples"]) and len(info["samples"]) == 8
        assert set(info["samples"]) <= lex.words[category] - lex.names
    assert lex.describe(8, 1) == described
    found = lex.overlap(["dog", "cats", "orange", "xyzzy", "hammer"], "animals")
    assert (found["n"], found["found"], found["missing"], found["elsewhere"]) == (5, 2, ["orange", "xyzzy"], {"hammer": "tools"})


def test_a_missing_wordnet_says_what_to_install(tmp_path: Path):
    with pytest.raises(MonosemError, match="wordnet-base"):
        load_lexicon(tmp_path)


# -- the second word list ---------------------------------------------------------------------------


def test_word_list_file_shape():
    df = load_concepts(LIST2)
    words = {category: set(group.word) for category, group in df.groupby("concept")}
    assert set(words) == set(CATEGORIES)
    assert all(len(w) >= 60 for w in words.values()), {c: len(w) for c, w in words.items()}
    frames = {word: sorted(group.frame) for word, group in df.groupby("word")}
    assert all(f == ["neutral_1", "neutral_2", "neutral_3", "neutral_4"] for f in frames.values())
    assert set(df.frame_kind) == {"neutral"}


def test_word_list_shares_no_word_or_base_form_with_the_first_list():
    wn = read_wordnet()
    df = load_concepts(LIST2)
    bases = lambda words: {w for w in words} | {base for w in words for base, _ in wn.morphy(w)}
    first = first_list_words()
    assert not set(df.word.str.lower()) & first
    assert not bases(set(df.word.str.lower())) & bases(first)


def test_word_list_words_belong_to_their_category(lex):
    df = load_concepts(LIST2)
    for category, word in sorted(set(zip(df.concept, df.word))):
        assert lex.label(word) == category, (category, word)


def test_script_is_deterministic_and_wrote_the_committed_file(tmp_path: Path):
    outs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for out in outs:
        subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, cwd=ROOT, capture_output=True, text=True)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert outs[0].read_bytes() == LIST2.read_bytes(), "data/concepts_wordnet.csv is stale: rerun `python scripts/make_wordlist2.py`"
