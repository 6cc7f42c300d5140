"""The Sender Rewriting Scheme: forwarded mail keeps SPF whole.

When an alias sends mail for a local address on to another domain, the next
hop checks the envelope sender's SPF against this server, which the
sender's domain does not list. So the forwarded copy's sender is rewritten
into an address of ours that still says whose it was, signed and dated, and
a bounce to it is turned back to the original sender (postsrsd and libsrs2
do the same)::

    alice@far.example             → SRS0=HHHHHH=TT=far.example=alice@office.test
    SRS0=hhhhhh=tt=far.example=alice@other.example    (forwarded to us by another)
                                  → SRS1=HHHHHH=other.example==hhhhhh=tt=far.example=alice@office.test

HHHHHH is a keyed hash (HMAC-SHA1, its first 30 bits in base32: no case to
lose on the way), TT the day it was made (base32, modulo 1024 days). A bounce
to an address whose hash does not verify under any key, or older than
``max_age``, is refused: nobody can make one up. One made here can be used
again until it expires, by anyone who saw it, but only to reach the sender it
names, and only with the null sender (a bounce): the trade-off every SRS
makes, bounded by ``max_age``. (An SRS1 carries no date of its own, as in
libsrs2.) Pure.
"""

import base64
import hashlib
import hmac
from dataclasses import dataclass

from empath.watched import uncommented

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
HASH_LENGTH = 6
DAY = 86400
DAYS = 1024  # TT counts days modulo this
MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1: a longer rewritten sender is not made


MIN_KEY = 16  # characters of a secret


def parse_keys(text: str) -> tuple[bytes, ...]:
    """The secrets of a keys file: one a line, the first signing; ``#`` comments.
    ValueError names a line too short to be a secret, or an empty file."""
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        key = uncommented(line).strip()
        if not key:
            continue
        if len(key) < MIN_KEY:
            raise ValueError(f"line {number}: a secret must be at least {MIN_KEY} characters")
        keys.append(key.encode("utf-8"))
    if not keys:
        raise ValueError("no secret in it (one a line; generate one with: openssl rand -base64 30)")
    return tuple(keys)


class SrsError(ValueError):
    """An SRS address that is forged, expired or malformed; the text says which."""


def is_srs(local: str) -> bool:
    return local[:5].upper() in ("SRS0=", "SRS1=")


@dataclass(frozen=True)
class Srs:
    keys: tuple[bytes, ...]  # the first signs; each verifies (an old one, while it is retired)
    domain: str  # where the rewritten senders live: a local domain
    max_age: float = 21 * DAY

    def _hash(self, key: bytes, data: str) -> str:
        digest = hmac.new(key, data.lower().encode("utf-8"), hashlib.sha1).digest()
        return base64.b32encode(digest).decode("ascii")[:HASH_LENGTH].lower()

    def _signed(self, hashed: str, data: str) -> bool:
        return any(hmac.compare_digest(hashed.lower(), self._hash(key, data)) for key in self.keys)

    def forward(self, sender: str, now: float) -> str | None:
        """The sender of a forwarded copy; None when the result would be longer than a local
        part may be (the copy then keeps the original: its SPF may fail, as without SRS)."""
        local, _, domain = sender.rpartition("@")
        if local[:5].upper() == "SRS0=":  # forwarded to us by another forwarder: SRS1 names it
            rest = local[4:]  # "=hash=tt=domain=local", kept as it came
            local = f"SRS1={self._hash(self.keys[0], domain + rest)}={domain}={rest}"
        elif local[:5].upper() == "SRS1=":  # a chain already: keep its first forwarder and SRS0 part
            _, _, tail = local[5:].partition("=")  # drop the last forwarder's hash
            first, sep, rest = tail.partition("==")
            if not sep:
                return None
            local = f"SRS1={self._hash(self.keys[0], first + '=' + rest)}={first}=={rest}"
        elif local.startswith('"'):
            return None  # a quoted local part makes no valid SRS address: the copy keeps its sender
        else:
            day = int(now // DAY) % DAYS
            tt = ALPHABET[day // 32] + ALPHABET[day % 32]
            local = f"SRS0={self._hash(self.keys[0], f'{tt}={domain}={local}')}={tt}={domain}={local}"
        return f"{local}@{self.domain}" if len(local.encode("utf-8")) <= MAX_LOCAL_PART else None

    def original(self, address: str, now: float) -> str | None:
        """The sender a rewritten address of ours stands for; None if ``address`` is not
        one (not SRS, or another domain's); SrsError if it is forged, expired or malformed."""
        local, _, domain = address.rpartition("@")
        if domain.lower() != self.domain or not is_srs(local):
            return None
        return self.reverse(local, now)

    def reverse(self, local: str, now: float) -> str:
        """The address the SRS local part ``local`` (of our domain) stands for; SrsError if it
        was not made here, is too old, or is malformed."""
        tag = local[:5].upper()
        if tag == "SRS1=":
            hashed, _, tail = local[5:].partition("=")
            first, sep, rest = tail.partition("==")
            if not sep or not first or not self._signed(hashed, first + "=" + rest):
                raise SrsError("not an SRS address made here")
            return f"SRS0={rest}@{first}"
        if tag != "SRS0=":
            raise SrsError("not an SRS address")
        parts = local[5:].split("=", 3)
        if len(parts) != 4 or not all(parts):
            raise SrsError("a malformed SRS address")
        hashed, tt, domain, original = parts
        # With the separators: the hash of a@b.cx must not also be that of x@b.c's parts moved.
        if not self._signed(hashed, f"{tt}={domain}={original}"):
            raise SrsError("not an SRS address made here")
        try:
            made = ALPHABET.index(tt[0].lower()) * 32 + ALPHABET.index(tt[1].lower())
        except (ValueError, IndexError):
            raise SrsError("a malformed SRS address") from None
        if len(tt) != 2 or (int(now // DAY) - made) % DAYS * DAY > self.max_age:
            raise SrsError("an expired SRS address")
        return f"{original}@{domain}"
