"""Concept lexicons drawn from WordNet 3.0: per category, the single words under chosen root synsets, and the labelling of text words with them.

A category's lexicon is built in four steps, each a rule a reader can check:

1. **Roots** (``CATEGORY_ROOTS``, named as NLTK names synsets: 'dog.n.01' is the first noun sense of
   dog in ``index.noun``). A noun or verb root brings its hyponym closure (instance hyponyms
   included); an adjective root brings its cluster (the head and its similar-to satellites).
   ``EXCLUDED_ROOTS`` takes subtrees back out.
2. **Single words**: lemmas of letters only, two or more, not abbreviations written in capitals
   ('US', 'OR', 'IN' are places in WordNet); lowercased. For numbers, Roman numerals are left out.
3. **Common sense** (the SemCor tag counts of ``cntlist.rev``, over all parts of speech): a lemma
   tagged ``MIN_TAGGED`` times or more stays only if at least ``MIN_SHARE`` of its tags fall on the
   category's senses, so 'fellow' (one of a pair), 'make' (reach: make the train), 'state' and
   'bear' (mostly the verb) leave, while 'run', 'dog' and 'school' stay. Untagged rare lemmas stay.
   ``EXCLUDED_WORDS`` lists the members that still read wrong among each category's most frequent.
4. **Ambiguity**: a word left in two or more categories (orange: colors and foods; duck: animals and
   foods) is in none of them; ``Lexicon.ambiguous`` holds it.

The roots and why:

- numbers: the digits (one..nine, zero), large integers (ten, hundred, million), and the adjective
  clusters of cardinal and ordinal numbers (thirteen, sixteenth); any token of digits
  (``NUMBER_TOKEN``: 42, 3.5, 1,000) is a number too, without being listed.
- emotions: emotion.n.01 and the feeling.n.01 subtrees that are emotional states (pleasure, shame,
  pride, happiness, sadness, hope, calmness, ...; not desire, sex, pang, sensitivity, thing, soul),
  and the adjective clusters of happy, sad, angry, afraid, calm, nervous, excited, surprised,
  ashamed, ... (furious, terrified, astonished). Adjectives reached through the nouns' attribute
  (=) and derivational (+) pointers were tried and left out: they bring the adjectives of what
  causes an emotion (awful, terrible, alarming: 'causing awe') and, through + at the synset level,
  'poor' (pitiable). Emotion verbs (love, fear as verbs) are not members.
- actions: physical action verbs (travel.v.01: walk, run, swim, climb; move.v.03: jump, dance;
  propel.v.01: throw, kick; hit.v.03: punch) and physical-activity nouns (sport.n.01,
  exercise.n.01: swimming, skiing, jogging). Cognitive and social verbs (read, sing, cook) are not,
  nor are the generic motion verbs come, go, move, follow, pass (``EXCLUDED_WORDS``).
- colors: color.n.01 (red, crimson, gray, tint) and the adjective clusters of chromatic, white,
  black and grey (reddish, snowy, inky).
- animals: chordates and invertebrates (not hominids), domestic animals, young, larvae and game;
  not the role nouns directly under animal.n.01 (female, male, prey, survivor).
- foods: food.n.01 (nutrients, dishes, beverages) and food.n.02 (solid food), without livestock feed.
- places: buildings, rooms, establishments, facilities, workplaces, schools, geographical areas,
  geological formations, bodies of water, land and forests (kitchen, library, beach, city), rather
  than every 'location' (point, position, state).
- tools: tool.n.01 and household implements: cleaning, kitchen and writing implements, brushes,
  needles, hooks, sieves, tongs, peelers (broom, ladle, pencil).
"""

from __future__ import annotations

import functools
import random
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from monosem.config import MonosemError
from monosem.corpus import INSTALL_WORDNET, WORDNET_DIRS, wordnet_dir
from monosem.dataset import CATEGORIES

POS_FILES: dict[str, str] = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
SS_TYPES: dict[str, str] = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}  # sense-key digits; 5 = adjective satellite
HYPONYMS: tuple[str, ...] = ("~", "~i")  # hyponym and instance hyponym
SIMILAR: tuple[str, ...] = ("&",)  # an adjective cluster: head and satellites
NUMBER_TOKEN = re.compile(r"\d+([.,]\d+)?")
ROMAN = re.compile(r"[ivxlcdm]+")
STRIP = string.punctuation + "“”‘’«»„–—…"
MORPHY_RULES: dict[str, tuple[tuple[str, str], ...]] = {  # WordNet's morphy(7) detachment rules (suffix, ending)
    "n": (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y")),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}

CATEGORY_ROOTS: dict[str, tuple[str, ...]] = {
    "numbers": ("digit.n.01", "large_integer.n.01", "cardinal.a.02", "ordinal.a.02"),
    "emotions": ("emotion.n.01", "pleasure.n.01", "pain.n.02", "liking.n.01", "dislike.n.02", "gratitude.n.01", "shame.n.01", "pride.n.01",
                 "astonishment.n.01", "expectation.n.03", "agitation.n.03", "calmness.n.03", "fearlessness.n.01", "happiness.n.02", "sadness.n.01",
                 "hope.n.02", "despair.n.02", "affection.n.01", "temper.n.02", "sympathy.n.02", "enthusiasm.n.01",
                 "happy.a.01", "unhappy.a.01", "sad.a.01", "glad.a.01", "cheerful.a.01", "content.a.01", "angry.a.01", "afraid.a.01",
                 "troubled.a.01", "nervous.a.01", "calm.a.01", "excited.a.01", "surprised.a.01", "ashamed.a.01", "hopeful.a.01", "grateful.a.01"),
    "actions": ("travel.v.01", "move.v.03", "propel.v.01", "hit.v.03", "sport.n.01", "exercise.n.01"),
    "colors": ("color.n.01", "chromatic.a.03", "white.a.01", "black.a.01", "grey.a.01"),
    "animals": ("chordate.n.01", "invertebrate.n.01", "domestic_animal.n.01", "young.n.01", "larva.n.01", "game.n.04"),
    "foods": ("food.n.01", "food.n.02"),
    "places": ("building.n.01", "room.n.01", "establishment.n.04", "facility.n.01", "workplace.n.01", "educational_institution.n.01",
               "geographical_area.n.01", "geological_formation.n.01", "body_of_water.n.01", "land.n.04", "forest.n.01"),
    "tools": ("tool.n.01", "cleaning_implement.n.01", "kitchen_utensil.n.01", "writing_implement.n.01", "brush.n.02", "beater.n.02", "eraser.n.01",
              "fire_iron.n.01", "hook.n.05", "needle.n.03", "oar.n.01", "sharpener.n.01", "stirrer.n.02", "swatter.n.01", "filter.n.01",
              "tongs.n.01", "peeler.n.03", "corer.n.01", "shredder.n.01"),
}
EXCLUDED_ROOTS: dict[str, tuple[str, ...]] = {"animals": ("hominid.n.01",), "foods": ("feed.n.01",)}
EXCLUDED_WORDS: dict[str, frozenset[str]] = {k: frozenset(v.split()) for k, v in {  # read off each category's most tagged members and samples
    "numbers": "ace leash yoke thou craps tertiary couplet ane ordinal",
    "emotions": "taste tendency grim gay awful terrible ominous tragic formidable chill fever dreadful frightening appalling frightful taut strained "
                "torture preference offense composed collected ego humor hairy belonging attachment buffeted struggling careful mothy clouded fraught "
                "haunted hagridden troublous queasy bright golden halcyon prosperous blessed discredited disgraced dishonored tragicomic tragical "
                "tragicomical bittersweet isotonic electric suspenseful suspensive sunny debonair psychedelic hectic hydrophobic xenophobic "
                "mysophobic hunted numb shitless black sore togetherness lightness easiness itchy partiality beneficence",
    "actions": "come go move follow pass return approach proceed accompany withdraw depart greet ease escort congratulate thread click rack flush "
               "pop buzz birdie transpire overhaul whop itinerate haunt",
    "colors": "bleach complexion fairness earthlike complementary sanguine rosaceous snuff",
    "animals": "queen buckskin charger drone monarch kit hobby whiteface chat tumbler tit windowpane nymph lappet grayback creeper glutton "
               "ephemeral boxer stilt poster broody slider",
    "foods": "toast crisp premix porter marrow brittle farce dainty gum pasty turnover sack chilly wedge vintage mould windfall swede savory "
             "spirits cordial tart mint vegetarianism bootleg ail blanc sinker",
    "places": "water earth box bench plot patch medium transportation depression setting bush installation tract hollow pit architecture "
              "compartment trough outlet subdivision cab bar wood terminal patchboard ascent declination outpouring landscaping ben ness sampler "
              "switchboard topiary",
    "tools": "charcoal slick boiler tamper drove router cloisonne turner heckle sledge rounder stemmer filter strop rigger gig kieselguhr "
             "latchstring pallet",
}.items()}
MIN_TAGGED = 3  # a lemma tagged this often in SemCor ...
MIN_SHARE = 0.2  # ... needs this share of its tags on the category's senses


class WordNet:
    """WordNet's database files, read once: synsets by key ('n02084071': part of speech + offset), senses by lemma, SemCor tag counts, exception lists."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lines: dict[str, str] = {}
        self._parsed: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {}
        self.index: dict[str, dict[str, tuple[str, ...]]] = {pos: {} for pos in POS_FILES}  # pos -> lemma -> synset keys in sense order
        self.tagsense: dict[str, dict[str, int]] = {pos: {} for pos in POS_FILES}  # pos -> lemma -> tagsense_cnt of index.<pos>
        self.exceptions: dict[str, dict[str, tuple[str, ...]]] = {pos: {} for pos in POS_FILES}  # pos -> inflected -> base forms
        self.counts: dict[tuple[str, str], int] = {}  # (lemma, synset key) -> SemCor tags
        for pos, name in POS_FILES.items():
            with open(self.folder / f"data.{name}", encoding="utf-8", errors="replace") as fh:
                self._lines.update((pos + line[:8], line) for line in fh if not line.startswith(" "))
            with open(self.folder / f"index.{name}", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.startswith(" "):
                        f = line.split()
                        n_ptr = int(f[3])
                        self.index[pos][f[0]] = tuple(pos + offset for offset in f[6 + n_ptr:])
                        self.tagsense[pos][f[0]] = int(f[5 + n_ptr])
            exc = self.folder / f"{name}.exc"
            for line in exc.read_text(encoding="utf-8").splitlines() if exc.is_file() else ():
                inflected, *bases = line.split()
                self.exceptions[pos][inflected] = tuple(bases)
        cntlist = self.folder / "cntlist.rev"
        for line in cntlist.read_text(encoding="utf-8").splitlines() if cntlist.is_file() else ():
            sense_key, number, count = line.split()
            lemma, lex_sense = sense_key.split("%", 1)
            senses = self.index[SS_TYPES[lex_sense[0]]].get(lemma, ())
            if int(number) <= len(senses):
                self.counts[(lemma, senses[int(number) - 1])] = int(count)

    def _parse(self, key: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        """(lemmas, pointers) of a synset; a pointer is (symbol, target key)."""
        if key not in self._parsed:
            f = self._lines[key].split(" | ", 1)[0].split()
            n_words = int(f[3], 16)
            lemmas = tuple(re.sub(r"\([a-z]+\)$", "", w) for w in f[4:4 + 2 * n_words:2])  # 'galore(ip)' -> 'galore'
            at = 4 + 2 * n_words
            pointers = tuple((f[i], ("a" if f[i + 2] == "s" else f[i + 2]) + f[i + 1]) for i in range(at + 1, at + 1 + 4 * int(f[at]), 4))
            self._parsed[key] = (lemmas, pointers)
        return self._parsed[key]

    def lemmas(self, key: str, cased: bool = False) -> tuple[str, ...]:
        """The lemmas of synset ``key`` with '_' for spaces, lowercased (or as written: 'Paris', 'US')."""
        lemmas = self._parse(key)[0]
        return lemmas if cased else tuple(lemma.lower() for lemma in lemmas)

    def pointers(self, key: str, symbols: Iterable[str]) -> list[str]:
        """The synsets that ``key`` points to with any of the pointer ``symbols`` ('~' hyponym, '&' similar to, ...)."""
        wanted = set(symbols)
        return [target for symbol, target in self._parse(key)[1] if symbol in wanted]

    def synset(self, name: str) -> str:
        """The key of the synset NLTK names ``name`` ('dog.n.01': the first synset of dog in index.noun)."""
        try:
            lemma, pos, number = name.rsplit(".", 2)
            return self.index["a" if pos == "s" else pos][lemma][int(number) - 1]
        except (ValueError, KeyError, IndexError):
            raise MonosemError(f"WordNet has no synset {name!r}; name one as lemma.pos.NN, e.g. 'dog.n.01'") from None

    def senses(self, lemma: str, pos: str | None = None) -> tuple[str, ...]:
        """The synsets of ``lemma`` in WordNet's sense order, of one part of speech or of all (nouns, verbs, adjectives, adverbs)."""
        return tuple(key for p in ((pos,) if pos else POS_FILES) for key in self.index[p].get(lemma, ()))

    def closure(self, roots: Iterable[str], symbols: Iterable[str] = HYPONYMS) -> set[str]:
        """``roots`` and every synset reached from them by following pointers with ``symbols``."""
        seen, stack, symbols = set(roots), list(roots), tuple(symbols)
        while stack:
            for target in self.pointers(stack.pop(), symbols):
                if target not in seen:
                    seen.add(target)
                    stack.append(target)
        return seen

    def morphy(self, word: str) -> set[tuple[str, str]]:
        """The (base form, part of speech) pairs that WordNet's morphy finds for ``word``: exception lists, then suffix rules."""
        found = set()
        for pos, rules in MORPHY_RULES.items():
            candidates = [*self.exceptions[pos].get(word, ()), *(word[: -len(suffix)] + ending for suffix, ending in rules if word.endswith(suffix))]
            found |= {(base, pos) for base in candidates if base in self.index[pos]}
        return found


def _folder(folder: Path | None) -> Path:
    """The WordNet folder to read: ``folder`` or the first of corpus.WORDNET_DIRS that holds the data files."""
    found = wordnet_dir((Path(folder),) if folder else WORDNET_DIRS)
    if found is None:
        raise MonosemError(f"WordNet's data files are not in {folder or ', '.join(map(str, WORDNET_DIRS))}; {INSTALL_WORDNET}")
    return found


@functools.lru_cache(maxsize=4)
def _read(folder: Path) -> WordNet:
    return WordNet(folder)


def read_wordnet(folder: Path | None = None) -> WordNet:
    """WordNet's database in ``folder`` (default: Debian's /usr/share/wordnet), read once per process."""
    return _read(_folder(folder))


def sense_count(lemma: str, pos: str | None = None, folder: Path | None = None) -> int:
    """How many senses of ``lemma`` SemCor tags (tagsense_cnt of index.<pos>, summed over parts of speech when ``pos`` is None): a frequency proxy."""
    wn = read_wordnet(folder)
    return sum(wn.tagsense[p].get(lemma, 0) for p in ((pos,) if pos else POS_FILES))


def tag_count(lemma: str, pos: str | None = None, folder: Path | None = None) -> int:
    """How often SemCor tags ``lemma`` (cntlist.rev, summed over its senses of ``pos``, or of all parts of speech)."""
    wn = read_wordnet(folder)
    return sum(wn.counts.get((lemma, key), 0) for key in wn.senses(lemma, pos))


def category_senses(wn: WordNet, category: str) -> set[tuple[str, str]]:
    """The (lemma as written, synset key) senses of ``category``: its roots' closures less the excluded subtrees."""
    roots = [wn.synset(name) for name in CATEGORY_ROOTS[category]]
    keys = wn.closure([r for r in roots if r[0] != "a"], HYPONYMS) | wn.closure([r for r in roots if r[0] == "a"], SIMILAR)
    keys -= wn.closure([wn.synset(name) for name in EXCLUDED_ROOTS.get(category, ())])
    return {(lemma, key) for key in keys for lemma in wn.lemmas(key, cased=True)}


def _plain(lemma: str) -> bool:
    """True for a single word: letters only, two or more, not an abbreviation written in capitals ('US', 'OR')."""
    return lemma.isalpha() and len(lemma) > 1 and sum(c.isupper() for c in lemma) <= 1


def _common(wn: WordNet, word: str, senses: set[tuple[str, str]]) -> bool:
    """True unless SemCor tags ``word`` MIN_TAGGED times or more and under MIN_SHARE of them on ``senses`` (lowercased lemma, key)."""
    counts = [(wn.counts.get((word, key), 0), (word, key) in senses) for key in wn.senses(word)]
    tagged = sum(n for n, _ in counts)
    return tagged < MIN_TAGGED or sum(n for n, inside in counts if inside) >= MIN_SHARE * tagged


@dataclass(frozen=True)
class Lexicon:
    """Per category, the words of its WordNet lexicon; a word in two or more categories is ambiguous and in none."""

    words: dict[str, frozenset[str]]  # category -> its words (lowercase, unambiguous)
    ambiguous: frozenset[str]  # words that two or more categories hold
    names: frozenset[str]  # members that WordNet writes only capitalised (Paris, Dalmatian): names rather than everyday words
    reach: dict[str, frozenset[str]]  # word -> every category with any sense of it under its roots (before steps 2-4)
    pos: dict[str, str] = field(repr=False)  # member or ambiguous word -> the parts of speech of its category senses ('n', 'av')
    wordnet: WordNet = field(repr=False, compare=False)

    @cached_property
    def owner(self) -> dict[str, str]:
        """word -> its category, for every (unambiguous) lexicon word."""
        return {word: category for category, words in self.words.items() for word in words}

    def label(self, word: str) -> str | None:
        """The category of a text word ('Running,' -> 'actions'), or None when it has none or is ambiguous.

        The word is lowercased and stripped of surrounding punctuation and a possessive 's; a token of
        digits is a number. Otherwise the word itself and its base forms (morphy, in the part of
        speech of the form: 'dogs' -> dog, 'ran' -> run, 'happier' -> happy) are looked up; forms in
        two categories or an ambiguous form give None, and so does a word that is also an irregular
        form of another word ('saw': tool and past of see; 'rose': flower and past of rise; not
        'worried' of worry).
        """
        text = re.sub(r"['’]s$", "", word.strip().lower().strip(STRIP)).strip(STRIP)
        if NUMBER_TOKEN.fullmatch(text):
            return "numbers"
        if not text or text in self.ambiguous:
            return None
        own = self.owner.get(text)
        hits = {own} if own else set()
        is_lemma = any(text in index for index in self.wordnet.index.values())
        for base, pos in self.wordnet.morphy(text):
            if base == text:
                continue
            irregular = base in self.wordnet.exceptions[pos].get(text, ()) and not text.startswith(base[:-1])  # saw (see), not worried (worry)
            if pos in self.pos.get(base, ""):
                hits.add(self.owner.get(base, "ambiguous"))
            if irregular and (own or is_lemma) and self.owner.get(base) != own:
                hits.add("other reading")
        return hits.pop() if len(hits) == 1 and hits <= set(self.words) else None

    def describe(self, n_samples: int = 10, seed: int = 0) -> dict[str, dict[str, Any]]:
        """Per category: size, how many are names, and ``n_samples`` sorted random everyday (non-name) words."""
        rng = random.Random(seed)
        out = {}
        for category, words in self.words.items():
            everyday = sorted(words - self.names)
            out[category] = {"size": len(words), "names": len(words & self.names), "samples": sorted(rng.sample(everyday, min(n_samples, len(everyday))))}
        return out

    def overlap(self, words: Iterable[str], category: str | None = None) -> dict[str, Any]:
        """How many of ``words`` are labelled ``category`` (any category when None); the rest as missing, or labelled elsewhere."""
        words = list(dict.fromkeys(words))
        labels = {word: self.label(word) for word in words}
        found = [w for w in words if labels[w] is not None and (category is None or labels[w] == category)]
        return {"n": len(words), "found": len(found), "share": len(found) / len(words) if words else 0.0,
                "missing": sorted(w for w in words if labels[w] is None), "elsewhere": {w: labels[w] for w in words if w not in found and labels[w]}}


def build_lexicon(wn: WordNet) -> Lexicon:
    """The lexicon of every category of dataset.CATEGORIES, following the four steps of this module's docstring."""
    members: dict[str, dict[str, str]] = {}
    reach: dict[str, set[str]] = {}
    cased: dict[str, set[str]] = {}
    for category in CATEGORIES:
        senses = category_senses(wn, category)
        lowered = {(lemma.lower(), key) for lemma, key in senses}
        pos: dict[str, set[str]] = {}
        for lemma, key in senses:
            reach.setdefault(lemma.lower(), set()).add(category)
            if _plain(lemma) and not (category == "numbers" and ROMAN.fullmatch(lemma.lower())):
                pos.setdefault(lemma.lower(), set()).add(key[0])
                cased.setdefault(lemma.lower(), set()).add(lemma)
        excluded = EXCLUDED_WORDS.get(category, frozenset())
        members[category] = {w: "".join(sorted(p)) for w, p in pos.items() if w not in excluded and _common(wn, w, lowered)}
    owners: dict[str, list[str]] = {}
    for category, words in members.items():
        for word in words:
            owners.setdefault(word, []).append(category)
    ambiguous = frozenset(w for w, cats in owners.items() if len(cats) > 1)
    return Lexicon(words={c: frozenset(m) - ambiguous for c, m in members.items()}, ambiguous=ambiguous,
                   names=frozenset(w for w in owners if all(lemma[0].isupper() for lemma in cased[w])),
                   reach={w: frozenset(c) for w, c in reach.items()},
                   pos={w: "".join(sorted(set("".join(members[c][w] for c in cats)))) for w, cats in owners.items()}, wordnet=wn)


@functools.lru_cache(maxsize=4)
def _lexicon(folder: Path) -> Lexicon:
    return build_lexicon(_read(folder))


def load_lexicon(folder: Path | None = None) -> Lexicon:
    """The concept lexicons built from WordNet in ``folder`` (default: Debian's /usr/share/wordnet), built once per process."""
    return _lexicon(_folder(folder))
