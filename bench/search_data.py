"""The search benchmark's text, generated deterministically (seeded): filler chunks and a small labelled set.

- Filler: ``chunk(n)`` is ~250 words of pseudo-words drawn with a Zipf-like law, common English words between
  them, and one word of a random ``SYNONYMS`` group (so every concept is common alone).
- The labelled set (``bench/data/search_labelled.json``, written by ``python -m bench.search_data``): 30 short
  documents, each naming three concepts of ``tests/fake_embeddings.SYNONYMS`` (a distinct triple each) with one
  word of each group; and one query per document. Even-numbered queries use the document's own words (a keyword
  index can find them); odd-numbered ones are paraphrases: other words of the same groups, none of the
  document's (only the fake embeddings' synonym table can find them). recall@5: the document's file is among
  the first five results.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from tests.fake_embeddings import SYNONYMS

LABELLED = Path(__file__).resolve().parent / "data" / "search_labelled.json"
WORDS_PER_CHUNK = 250
COMMON = ("the", "of", "and", "to", "in", "is", "for", "on", "with", "that", "by", "as", "at", "from")
TEMPLATES = (
    "Office note {n}: every {a} request about the {b} goes through the {c} desk first.",
    "Handbook section {n}. The {a} rules for a {b} also apply to any {c} of the team.",
    "Memo {n}: before the {a}, check the {b} and write down the {c} in the ledger.",
    "Guide {n}: a {a} needs a {b} form signed; the {c} is noted on the back.",
)


def _vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    seen: dict[str, None] = {}
    while len(seen) < size:
        seen["".join(rng.choice(syllables) for _ in range(rng.choice((2, 3, 3, 4))))] = None
    return list(seen)


_RNG = random.Random(18)
_VOCABULARY = _vocabulary(_RNG)
_WEIGHTS = list(itertools.accumulate(1 / (rank + 10) for rank in range(len(_VOCABULARY))))
_CONCEPT_WORDS = [word for group in SYNONYMS for word in group]


def chunk(n: int, words: int = WORDS_PER_CHUNK) -> str:
    """Filler chunk ``n`` (the same text for the same ``n``)."""
    rng = random.Random(n * 7919 + 18)
    picked = rng.choices(_VOCABULARY, cum_weights=_WEIGHTS, k=words)
    for at in range(0, words, 4):
        picked[at] = rng.choice(COMMON)
    picked[rng.randrange(words)] = rng.choice(_CONCEPT_WORDS)
    return " ".join(picked).capitalize() + "."


def labelled() -> list[dict]:
    """``[{"doc", "text", "query", "kind"}]``: 30 documents and their queries (see the module)."""
    rng = random.Random(1818)
    triples = list(itertools.combinations(range(len(SYNONYMS)), 3))
    rng.shuffle(triples)
    chosen, used = [], set()
    for triple in triples:  # no two documents share two concepts
        pairs = set(itertools.combinations(triple, 2))
        if not pairs & used:
            chosen.append(triple)
            used |= pairs
        if len(chosen) == 30:
            break
    items = []
    for n, triple in enumerate(chosen):
        groups = [SYNONYMS[g] for g in triple]
        doc_words = [rng.choice(group) for group in groups]
        text = TEMPLATES[n % len(TEMPLATES)].format(n=n, a=doc_words[0], b=doc_words[1], c=doc_words[2])
        if n % 2 == 0:
            query, kind = f"the {doc_words[0]} {doc_words[1]} and {doc_words[2]}", "keyword"
        else:
            others = [rng.choice([w for w in group if w != word]) for group, word in zip(groups, doc_words,
                                                                                         strict=True)]
            query, kind = f"{others[0]} {others[1]} {others[2]}?", "paraphrase"
        items.append({"doc": f"labelled-{n:02d}.txt", "text": text, "query": query, "kind": kind})
    return items


def load() -> list[dict]:
    return json.loads(LABELLED.read_text())


if __name__ == "__main__":
    LABELLED.parent.mkdir(exist_ok=True)
    LABELLED.write_text(json.dumps(labelled(), indent=1) + "\n")
    print(f"wrote {LABELLED}")
