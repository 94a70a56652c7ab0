"""OpenAI-style object ids and Unix timestamps."""

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


#: Bytes below this map evenly onto the alphabet (4 x 62); the rest are drawn again.
_EVEN = 256 - 256 % len(_ALPHABET)


def new_id(prefix: str) -> str:
    """``prefix_`` plus 24 random characters, as OpenAI's ids look: every character equally likely, from one
    read of the system's random source (24 ``secrets.choice`` calls were a tenth of a message's creation)."""
    chars = ""
    while len(chars) < 24:
        chars += "".join(_ALPHABET[b % len(_ALPHABET)] for b in secrets.token_bytes(32) if b < _EVEN)
    return f"{prefix}_{chars[:24]}"


def now() -> int:
    """Unix seconds, the unit of every ``*_at`` field."""
    return int(time.time())
