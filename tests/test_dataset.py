import pytest

from monosem.config import MonosemError
from monosem.dataset import CATEGORIES, load_concepts, word_span
from monosem.testing import ROOT

REFERENCE_WORDS = {"numbers": ["seven", "100", "13", "2024"], "emotions": ["happy", "angry", "worried"],
                   "actions": ["running", "flying", "walks"], "colors": ["blue", "red", "green"]}


def test_shipped_dataset_meets_the_spec(concepts):
    df = concepts
    assert set(df.concept) == set(CATEGORIES)
    assert (df.groupby("concept").word.nunique() >= 40).all()
    assert df.groupby("word").size().min() >= 5
    for concept, words in REFERENCE_WORDS.items():
        present = set(df[df.concept == concept].word)
        assert set(words) <= present, f"{concept} lacks reference words {set(words) - present}"
    # a crossed design: every word in at least 4 neutral frames, every neutral frame used by all 8 categories
    neutral = df[df.frame_kind == "neutral"]
    assert neutral.groupby("word").frame.nunique().reindex(df.word.unique()).min() >= 4
    per_frame = neutral.groupby("frame").concept.nunique()
    assert len(per_frame) >= 4 and (per_frame == len(CATEGORIES)).all()
    # a neutral frame is the same sentence around the word whatever the category; category frames belong to one category
    templates = neutral.apply(lambda r: r.sentence.replace(r.word, "{w}", 1), axis=1).groupby(neutral.frame).nunique()
    assert (templates == 1).all()
    category = df[df.frame_kind == "category"]
    assert (category.groupby("frame").concept.nunique() == 1).all() and set(df.frame_kind) == {"neutral", "category"}


def test_frame_columns_are_optional_and_validated(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("concept,word,sentence\nnumbers,two,She had two coins.\n", encoding="utf-8")
    assert load_concepts(plain).frame_kind.tolist() == ["unspecified"]
    bad = tmp_path / "bad.csv"
    bad.write_text("concept,word,sentence,frame,frame_kind\nnumbers,two,She had two coins.,f1,shared\n", encoding="utf-8")
    with pytest.raises(MonosemError, match="line 2: frame_kind 'shared' must be one of"):
        load_concepts(bad)


def test_generator_reproduces_the_csv(tmp_path):
    import runpy

    out = tmp_path / "c.csv"
    runpy.run_path(str(ROOT / "scripts" / "make_concepts.py"), run_name="not_main")["main"](out)
    assert out.read_bytes() == (ROOT / "data" / "concepts.csv").read_bytes()


def test_word_span_whole_word_only():
    assert word_span("He felt happy.", "happy") == (8, 13)
    assert word_span("He felt unhappy.", "happy") is None
    assert word_span("happy happy", "happy") is None


@pytest.mark.parametrize("text, message", [
    ("concept,word\nnumbers,seven\n", "lacks column(s) ['sentence']"),
    ("concept,word,sentence\nnumbers,seven,She counted six coins.\n", "line 2: the word 'seven' occurs 0 times"),
    ("concept,word,sentence\nnumbers,two,two plus two.\n", "line 2: the word 'two' occurs 2 times"),
    ("concept,word,sentence\nnumbers,two,She had two coins.\nplanets,mars,We saw mars.\n", "line 3: unknown concept 'planets'"),
    ("concept,word,sentence\nnumbers,two,She had two coins.\nnumbers,two,She had two coins.\n", "line 3 duplicates line 2"),
    ("", "is empty"),
    ("concept,word,sentence\n", "no rows"),
    ("concept,word,sentence\nnumbers,two,She had two, or three, coins.\n", "line 2 has 5 fields"),
])
def test_loader_rejects_bad_files(tmp_path, text, message):
    p = tmp_path / "c.csv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(MonosemError) as err:
        load_concepts(p)
    assert message in str(err.value)


def test_loader_rejects_non_utf8(tmp_path):
    p = tmp_path / "c.csv"
    p.write_bytes(b"concept,word,sentence\nnumbers,two,She had two \xff coins.\n")
    with pytest.raises(MonosemError, match="line 2 is not valid UTF-8"):
        load_concepts(p)


def test_loader_rejects_word_in_two_concepts(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("concept,word,sentence\nnumbers,orange,A orange x.\ncolors,orange,The orange door.\n", encoding="utf-8")
    with pytest.raises(MonosemError, match="several concepts"):
        load_concepts(p)


def test_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(MonosemError, match="make_concepts.py"):
        load_concepts(tmp_path / "nope.csv")
