"""Queue ids: short, unique, and sorted by arrival, for operators to read aloud."""

import re
import secrets
import time

# Crockford's base32: no I, L, O or U to misread.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID = re.compile(f"[{_ALPHABET}]{{16}}")


def _encode(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(now: float | None = None) -> str:
    """Ten characters of milliseconds since the epoch, then six random ones."""
    millis = int((time.time() if now is None else now) * 1000)
    return _encode(millis, 10) + _encode(secrets.randbits(30), 6)


def valid(text: object) -> bool:
    """Is ``text`` a queue id as new_id makes them (upper case, exactly 16 characters)?"""
    return isinstance(text, str) and _ID.fullmatch(text) is not None
