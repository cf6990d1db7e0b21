"""Regenerate data/concepts.csv: 4 concepts + 4 control categories, >= 40 words each, 7 sentences per word.

A crossed design: every word appears in the 4 NEUTRAL frames, and every neutral frame is used by all
8 categories, so no neutral frame can carry a category: on the neutral frames the word is the only
difference. Each word also gets 3 frames written for its category (so the sentence reads naturally);
those rows are marked ``frame_kind=category`` and the analysis reports them separately, because a
feature that only reacts to a category's sentence frames would look selective on them.

Columns: concept, word, sentence, frame (an id such as ``neutral_2`` or ``colors_1``), frame_kind
(``neutral`` or ``category``).

    python scripts/make_concepts.py            # writes data/concepts.csv
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from pathlib import Path

NEUTRAL = [
    "She wrote the word {w} on the board.",
    "The next word on the list was {w}.",
    "He said the word {w} twice.",
    "The card in the box said {w}.",
]

# category -> list of (frames, words). A category can have several groups when its words come
# in different grammatical forms (e.g. "running" vs "walks").
CATEGORIES: dict[str, list[tuple[list[str], list[str]]]] = {
    "numbers": [(
        ["She counted {w} coins in the jar.",
         "There were {w} chairs in the room.",
         "The bus arrived with {w} passengers on board."],
        ["seven", "100", "13", "2024", "two", "three", "four", "five", "six", "eight", "nine",
         "ten", "eleven", "twelve", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty",
         "ninety", "42", "7", "12", "25", "99", "250", "1000", "3", "50", "64", "18", "500",
         "8", "30"],
    )],
    "emotions": [(
        ["He felt {w} after the long meeting.",
         "She looked {w} when she heard the news.",
         "They were {w} about the results of the exam."],
        ["happy", "angry", "worried", "sad", "afraid", "excited", "nervous", "proud", "calm",
         "jealous", "lonely", "anxious", "cheerful", "grateful", "ashamed", "bored", "curious",
         "disappointed", "frustrated", "hopeful", "joyful", "miserable", "furious", "scared",
         "surprised", "upset", "delighted", "embarrassed", "guilty", "glad", "terrified",
         "relieved", "confident", "depressed", "thrilled", "gloomy", "tense", "annoyed",
         "envious", "hopeless", "ecstatic", "content"],
    )],
    "actions": [
        (["The children were {w} in the park all afternoon.",
          "She was {w} when the phone rang.",
          "He spent the whole morning {w} with his friends."],
         ["running", "flying", "swimming", "jumping", "climbing", "dancing", "singing",
          "reading", "writing", "cooking", "driving", "cycling", "skating", "skiing", "hiking",
          "rowing", "fishing", "throwing", "digging", "laughing", "sleeping", "walking",
          "shouting", "whispering", "sailing", "surfing", "kicking", "crawling", "wrestling",
          "juggling"]),
        (["Every morning he {w} before breakfast.",
          "She {w} whenever she gets the chance.",
          "My brother {w} faster than anyone I know."],
         ["walks", "runs", "jumps", "swims", "climbs", "throws", "drives", "dances", "sings",
          "writes", "reads", "cooks"]),
    ],
    "colors": [(
        ["She painted the door {w} last summer.",
         "He bought the {w} shirt at the market.",
         "The walls of the room were {w}."],
        ["blue", "red", "green", "yellow", "purple", "orange", "pink", "brown", "black",
         "white", "gray", "violet", "crimson", "scarlet", "turquoise", "teal", "beige",
         "maroon", "navy", "indigo", "magenta", "cyan", "lavender", "gold", "silver", "olive",
         "amber", "ivory", "coral", "tan", "khaki", "lilac", "ochre", "emerald", "azure",
         "mauve", "burgundy", "charcoal", "cream", "peach", "ruby", "saffron"],
    )],
    "animals": [(
        ["The {w} was sleeping in the shade.",
         "A photo of the {w} hung on the wall.",
         "The farmer watched the {w} from the fence."],
        ["dog", "cat", "horse", "cow", "sheep", "goat", "pig", "lion", "tiger", "elephant",
         "giraffe", "zebra", "monkey", "rabbit", "fox", "wolf", "bear", "deer", "mouse", "rat",
         "owl", "eagle", "duck", "goose", "chicken", "frog", "snake", "turtle", "whale",
         "dolphin", "shark", "camel", "donkey", "squirrel", "beaver", "otter", "penguin",
         "parrot", "hedgehog", "kangaroo", "leopard", "badger"],
    )],
    "foods": [(
        ["The {w} tasted better than she expected.",
         "He bought the {w} at the market.",
         "We had {w} for dinner last night."],
        ["bread", "cheese", "rice", "pasta", "soup", "salad", "butter", "yogurt", "honey",
         "beef", "pork", "bacon", "sausage", "pizza", "cake", "pie", "cookie", "chocolate",
         "apple", "banana", "mango", "grape", "lemon", "potato", "carrot", "tomato", "onion",
         "garlic", "cucumber", "spinach", "broccoli", "lettuce", "noodles", "sandwich",
         "omelette", "pancake", "waffle", "popcorn", "cereal", "porridge", "tofu", "salmon"],
    )],
    "tools": [(
        ["He picked up the {w} from the workbench.",
         "She borrowed the {w} from her neighbor.",
         "The {w} was hanging in the garage."],
        ["hammer", "wrench", "screwdriver", "saw", "drill", "chisel", "pliers", "shovel",
         "rake", "axe", "ladder", "knife", "scissors", "needle", "tape", "ruler", "clamp",
         "spade", "trowel", "hoe", "crowbar", "mallet", "sander", "stapler", "broom", "mop",
         "bucket", "brush", "flashlight", "toolbox", "hacksaw", "sickle", "pickaxe", "funnel",
         "tweezers", "sledgehammer", "vise", "plunger", "pitchfork", "wheelbarrow", "chainsaw",
         "hatchet"],
    )],
    "places": [(
        ["They met at the {w} after work.",
         "We walked to the {w} together.",
         "The {w} was crowded on Saturday."],
        ["kitchen", "library", "school", "hospital", "airport", "station", "museum", "beach",
         "forest", "village", "city", "church", "bank", "market", "office", "garden",
         "factory", "harbor", "stadium", "theater", "hotel", "prison", "castle", "farm",
         "island", "bakery", "cafe", "restaurant", "pharmacy", "bridge", "tunnel", "cave",
         "lake", "zoo", "gym", "mall", "cathedral", "playground", "courthouse", "warehouse",
         "temple", "cinema"],
    )],
}

CONCEPTS = ["numbers", "emotions", "actions", "colors"]


def rows() -> list[tuple[str, str, str, str, str]]:
    """All (category, word, sentence, frame, frame_kind) rows, category-specific frames first, then NEUTRAL."""
    out = []
    for category, groups in CATEGORIES.items():
        for g, (frames, words) in enumerate(groups):
            ids = [f"{category}_{g * len(frames) + i + 1}" for i in range(len(frames))]
            for word in words:
                if not word.isalnum():  # "sledgehammer" style placeholders are never written
                    continue
                for frame_id, frame in zip(ids, frames):
                    out.append((category, word, frame.format(w=word), frame_id, "category"))
                for i, frame in enumerate(NEUTRAL, start=1):
                    out.append((category, word, frame.format(w=word), f"neutral_{i}", "neutral"))
    return out


def check(all_rows: list[tuple[str, str, str, str, str]]) -> None:
    """Fail loudly if a word is shared between categories or not exactly once in a sentence, or the design is not crossed."""
    owner: dict[str, str] = {}
    for category, word, sentence, _, _ in all_rows:
        if owner.setdefault(word, category) != category:
            raise SystemExit(f"word {word!r} is in both {owner[word]} and {category}")
        n = len(re.findall(rf"(?<!\w){re.escape(word)}(?!\w)", sentence))
        if n != 1:
            raise SystemExit(f"{word!r} occurs {n} times in {sentence!r}")
    for category in CATEGORIES:
        n_words = len({w for c, w, *_ in all_rows if c == category})
        if n_words < 40:
            raise SystemExit(f"{category} has only {n_words} words, need >= 40")
        used = {f for c, _, _, f, kind in all_rows if c == category and kind == "neutral"}
        if used != {f"neutral_{i}" for i in range(1, len(NEUTRAL) + 1)}:
            raise SystemExit(f"{category} does not use every neutral frame")


def main(path: Path) -> None:
    all_rows = rows()
    check(all_rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["concept", "word", "sentence", "frame", "frame_kind"])
    writer.writerows(all_rows)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    print(f"wrote {len(all_rows)} rows, {len({w for _, w, *_ in all_rows})} words to {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "data" / "concepts.csv")
