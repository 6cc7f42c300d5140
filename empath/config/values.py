"""Parsers for the value types the config file and the operator's commands
use: durations, sizes, rates, ages, names, addresses and the rest.

Pure functions; each raises ValueError with a message meant for an operator.
"""

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any

from empath.addresses import DNS_LABEL, AddressError, Domain
from empath.config.model import NextHop

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^(\d+)([KMG]?)$")
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*/\s*(s|m|h)$")
_SECONDS = re.compile(r"\d+(\.\d+)?")  # a bare number of seconds: no nan, inf or exponent


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


def rate(value: object) -> float:
    """A rate per second (of messages, of connections) from ``0`` (no limit), ``"10/s"``, ``"60/m"`` or ``"1000/h"``."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    m = _RATE.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError("must be 0 (no limit) or a rate such as 10/s, 60/m or 1000/h")
    return float(m.group(1)) / {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def rate_text(per_second: float) -> str:
    """A rate as the config writes it: ``no limit``, ``10/s``, ``30/m``, ``1/h``."""
    if per_second <= 0:
        return "no limit"
    if per_second >= 1:
        return f"{per_second:g}/s"
    return f"{per_second * 60:g}/m" if per_second * 60 >= 1 else f"{per_second * 3600:g}/h"


def age(text: str) -> float:
    """Seconds from an age as the command line gives it: ``90``, ``1.5``, ``30m``, ``2h``, ``5d``."""
    text = text.strip()
    try:
        return float(text) if _SECONDS.fullmatch(text) else duration(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an age such as 90, 30m, 2h or 5d") from None


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return convert


def integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}")
        return value

    return convert


def at_least(convert: Callable[[Any], Any], minimum: float) -> Callable[[Any], Any]:
    def checked(value: Any) -> Any:
        result = convert(value)
        if result < minimum:
            raise ValueError(f"must be at least {minimum:g}")
        return result

    return checked


def string_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return value


def domain(value: str) -> Domain:
    try:
        return Domain.name(value.rstrip("."))
    except AddressError as exc:
        raise ValueError(f"{value!r} is not a domain name: {exc}") from None


def network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP network such as 192.0.2.0/24 or 2001:db8::/32") from None


def host_port(value: Any) -> tuple[str, int]:
    text = string(value)
    m = re.match(r"^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d{1,5})$", text)
    if not m:
        raise ValueError(f"{text!r} must be address:port, such as 127.0.0.1:2525 or [::1]:2525")
    host = m.group(1) or m.group(2)
    port = int(m.group(3))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} must be an IP address") from None
    return str(ip), port  # one spelling per address, so duplicates are seen


def positive_duration(value: Any) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def next_hop(default_port: int) -> Callable[[Any], NextHop]:
    """``host``, ``host:port``, ``192.0.2.1:25`` or ``[2001:db8::1]:25``."""

    def convert(value: Any) -> NextHop:
        text = string(value)
        m = re.match(r"^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+))(?::(\d{1,5}))?$", text)
        if not m:
            raise ValueError(f"{text!r} must be host or host:port, such as mail.example.org:25 or [2001:db8::1]:25")
        host = m.group(1) or m.group(2)
        port = int(m.group(3)) if m.group(3) else default_port
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            host = domain(host)
        return NextHop(host, port)

    return convert


def hops(default_port: int) -> Callable[[Any], tuple[NextHop, ...]]:
    def convert(value: Any) -> tuple[NextHop, ...]:
        hops = tuple(next_hop(default_port)(v) for v in string_list(value))
        if not hops:
            raise ValueError("must list at least one host")
        return hops

    return convert


def port(value: Any) -> int:
    port = integer(1)(value)
    if port > 65535:
        raise ValueError("must be a port number, 1 to 65535")
    return port


def login(value: Any) -> str:
    text = string(value)
    if not text:
        raise ValueError("must not be empty")
    return text


def selector(value: Any) -> str:
    """A DKIM selector: DNS labels joined by dots (RFC 6376 §3.1)."""
    text = string(value)
    if len(text) > 253 or not all(DNS_LABEL.fullmatch(label) for label in text.split(".")):
        raise ValueError(f"{text!r} is not a selector: DNS labels (letters, digits, hyphens) joined by dots")
    return text
