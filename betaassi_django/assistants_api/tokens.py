"""Token counts with OpenAI's own tokenizer (o200k_base, through tiktoken), offline.

tiktoken downloads its ranks on first use; the ranks are vendored instead
(``tokenizer/o200k_base.tiktoken.gz``, see its NOTICE), so counting works on a
machine without network. Used where the API counts tokens: chunking files
(``static`` chunking sizes are in tokens) and fitting a run's context into
``max_prompt_tokens``.
"""

from __future__ import annotations

import base64
import gzip
from functools import cache
from pathlib import Path

import tiktoken

RANKS_PATH = Path(__file__).parent / "tokenizer" / "o200k_base.tiktoken.gz"
#: o200k_base's split pattern and special tokens, as tiktoken_ext.openai_public defines them.
PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
SPECIAL_TOKENS = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}


@cache
def encoding() -> tiktoken.Encoding:
    ranks = {}
    with gzip.open(RANKS_PATH, "rb") as lines:
        for line in lines:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding("o200k_base", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=SPECIAL_TOKENS)


def encode(text: str) -> list[int]:
    """Special tokens in ``text`` are counted as plain text (user content is never a control token)."""
    return encoding().encode_ordinary(text)


def decode(tokens: list[int]) -> str:
    return encoding().decode(tokens)


def count(text: str) -> int:
    return len(encode(text))
