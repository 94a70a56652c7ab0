"""OpenAI-style object ids and Unix timestamps."""

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """``prefix_`` plus 24 random characters, as OpenAI's ids look."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def now() -> int:
    """Unix seconds, the unit of every ``*_at`` field."""
    return int(time.time())
