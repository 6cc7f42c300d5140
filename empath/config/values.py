"""Parsers for the value types the config file uses: durations and sizes.

Pure functions; each raises ValueError with a message meant for an operator.
"""

import math
import re

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^(\d+)([KMG]?)$")
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def duration(value: object) -> float:
    """Seconds from ``30``, ``"30s"``, ``"5m"``, ``"4h"``, ``"5d"`` or ``"250ms"``."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m, 4h or 5d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value.strip())):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("must be a duration such as 30s, 5m, 4h or 5d")
    if not math.isfinite(seconds):  # TOML allows nan and inf
        raise ValueError("must be a finite duration such as 30s, 5m, 4h or 5d")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def size(value: object) -> int:
    """Bytes from ``1048576`` or ``"1M"`` (K, M, G are powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 52428800 or 50M")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (m := _SIZE.match(value.strip().upper())):
        number = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ValueError("must be a size such as 52428800 or 50M")
    if number < 0:
        raise ValueError("must not be negative")
    return number
