"""The fake upstream's embeddings: deterministic vectors that carry a little meaning (a stand-in, not a model).

A text's vector is a hashed bag of its words' crude stems, where the words of each group of ``SYNONYMS`` count as
one concept: "car" and "automobile" land on the same coordinates, so a paraphrase that shares no word with a
passage still lands near it, which a keyword index cannot see. Each concept's weight is ``1 + log(count)``,
hashed (BLAKE2b) to a coordinate and a sign; the vector has unit length. Tests and the search benchmark rely on
exactly this table: change it and their expectations move.
"""

from __future__ import annotations

import hashlib
import math
import re

DEFAULT_DIMENSIONS = 256
SYNONYMS = (
    ("refund", "reimburse", "reimbursement", "repay", "repayment", "money"),
    ("car", "automobile", "vehicle", "auto", "truck"),
    ("doctor", "physician", "clinician", "medic"),
    ("buy", "purchase", "acquire", "order"),
    ("big", "large", "huge", "enormous"),
    ("start", "begin", "commence", "launch"),
    ("house", "home", "residence", "dwelling"),
    ("fix", "repair", "mend"),
    ("fast", "quick", "rapid", "speedy"),
    ("ship", "deliver", "delivery", "shipment", "dispatch", "shipping"),
    ("cancel", "terminate", "revoke"),
    ("password", "passphrase", "credential"),
    ("employee", "staff", "worker", "personnel"),
    ("salary", "wage", "pay", "compensation", "payroll"),
    ("vacation", "holiday", "leave"),
    ("sick", "ill", "illness", "unwell"),
    ("help", "support", "assist", "assistance"),
    ("error", "fault", "failure", "bug", "defect"),
    ("price", "cost", "fee", "charge"),
    ("meeting", "conference", "gathering", "assembly"),
)
_STOP = ("a an and are as at be but by for from has have how i if in into is it its of on or so that "
         "the their then there these they this to was we what when where which who why will with "
         "you your do does did can my me our get")
STOP_WORDS = frozenset(_STOP.split())
_CONCEPT = {word: group[0] for group in SYNONYMS for word in group}
_WORD = re.compile(r"[a-z0-9]+")


def stem(word: str) -> str:
    for suffix in ("ements", "ement", "ations", "ation", "ings", "ing", "ies", "ied", "ers", "er", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def concept(word: str) -> str:
    if word in _CONCEPT:
        return _CONCEPT[word]
    stemmed = stem(word)
    return _CONCEPT.get(stemmed, stemmed)


def vector(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    counts: dict[str, int] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOP_WORDS:
            key = concept(word)
            counts[key] = counts.get(key, 0) + 1
    values = [0.0] * dimensions
    for key, count in counts.items():
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        values[int.from_bytes(digest[:4], "little") % dimensions] += (1 + math.log(count)) * (
            1 if digest[4] & 1 else -1)
    norm = math.sqrt(sum(v * v for v in values))
    if norm == 0:  # no word at all: still a unit vector, the same for every such text
        values[0], norm = 1.0, 1.0
    return [v / norm for v in values]
