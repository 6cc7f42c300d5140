"""What a plug-in sees and what it may answer: one Context in, one decision out.

Pure code. A plug-in is a callable ``hook(ctx: Context)`` that returns

- ``None``: no opinion, the next plug-in of this hook runs;
- ``Accept()``: let it through, and skip the later plug-ins of this hook;
- ``Reject(code, status, text)``: refuse with this reply (4xx temporary, 5xx permanent);
- ``Headers(add=..., replace=...)``: change the message's header (the data hook only).

Every decision checks its own shape when it is made, so a plug-in that builds
``Reject(250, ...)`` or a header value with a line break fails at once, in
the plug-in, and is handled as a failing plug-in. See docs/plugins.md.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from empath.addresses import EmailAddress, ReversePath

_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext: printable ASCII but the colon
_PRINTABLE = re.compile(r"^[ -~]*$")
MAX_TEXT = 400  # a reply line stays well inside RFC 5321's 512 octets
MAX_HEADER_LINE = 998  # RFC 5322 §2.1.1, without the CRLF

NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})  # also no parameters


class DecisionError(ValueError):
    """A decision of the wrong shape: the plug-in that made it has failed."""


@dataclass(frozen=True)
class Context:
    """Everything a hook may know, read-only. Fields a hook does not have are None or empty.

    ``message`` is the whole message, read once for every data plug-in of
    the session: wrap it in ``io.BytesIO(ctx.message)`` to read it as a file
    without another copy. ``body`` is a memoryview of its part after the header.
    """

    hook: str
    trace_id: str
    options: Mapping[str, Any] = field(default_factory=lambda: NO_OPTIONS)  # this plug-in's [[plugins]] options
    listener: str | None = None  # the listener's name; None before delivery
    client_address: str | None = None
    client_name: str | None = None  # reverse DNS: Empath does not look it up, so always None
    helo: str | None = None  # from helo on: the name the client gave
    tls: bool = False
    auth_user: str | None = None
    sender: ReversePath | None = None  # from mail on: the envelope sender, "" for the null sender
    # mail: the ESMTP parameters given (SIZE, BODY, RET, ENVID, SMTPUTF8)
    parameters: Mapping[str, str] = field(default_factory=lambda: NO_OPTIONS)
    recipient: EmailAddress | None = None  # rcpt: this recipient; before_delivery: the one this call decides on
    recipients: tuple[EmailAddress, ...] = ()  # rcpt: accepted so far; data: all; before_delivery: all of this attempt
    headers: tuple[tuple[str, str], ...] = ()  # data: (name, unfolded value), in order
    message: bytes = b""  # data: the message as the client sent it
    queue_id: str | None = None  # before_delivery
    next_hop: str | None = None  # before_delivery: "mx:DOMAIN", "route:DOMAIN" or "smarthost"
    attempt: int = 0  # before_delivery: 1 for the first attempt at this recipient

    @property
    def body(self) -> memoryview:
        return memoryview(self.message)[body_offset(self.message) :]

    def header(self, name: str) -> list[str]:
        """The values of every header field called ``name`` (any case)."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@dataclass(frozen=True)
class Accept:
    """Let it through: the later plug-ins of this hook do not run."""


@dataclass(frozen=True)
class Reject:
    """Refuse with ``code status text``: 4xx to try again later, 5xx never."""

    code: int
    status: str
    text: str

    def __post_init__(self) -> None:
        check_reply(self.code, self.status, self.text)

    @property
    def temporary(self) -> bool:
        return self.code < 500


@dataclass(frozen=True)
class Headers:
    """Header fields to add at the top of the message, to put in place of
    every field of the same name, or to remove (data hook only)."""

    add: Sequence[tuple[str, str]] = ()
    replace: Sequence[tuple[str, str]] = ()
    remove: Sequence[str] = ()  # names: every field so called goes (a header clients must not set)

    def __post_init__(self) -> None:
        # Frozen, so the lists a plug-in passed are copied into tuples here.
        object.__setattr__(self, "add", _fields(self.add))
        object.__setattr__(self, "replace", _fields(self.replace))
        object.__setattr__(self, "remove", _names(self.remove))
        if not self.add and not self.replace and not self.remove:
            raise DecisionError("Headers needs at least one field to add, replace or remove")


Decision = Accept | Reject | Headers | None


def check_reply(code: object, status: object, text: object) -> None:
    if isinstance(code, bool) or not isinstance(code, int) or not (400 <= code <= 559 and code // 10 % 10 <= 5):
        raise DecisionError(f"reply code {code!r} must be 4xx or 5xx (400 to 559)")
    m = _STATUS.fullmatch(status) if isinstance(status, str) else None
    if m is None or m.group(1) != str(code)[0]:
        raise DecisionError(f"enhanced status {status!r} must be {str(code)[0]}.X.Y, the class of code {code}")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT or not _PRINTABLE.fullmatch(text):
        raise DecisionError(f"reply text must be one line of 1 to {MAX_TEXT} printable ASCII characters")


def check_header(name: object, value: object) -> None:
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        raise DecisionError(f"header name {name!r} must be 1 to 76 printable ASCII characters, no colon or space")
    if not isinstance(value, str) or not _PRINTABLE.fullmatch(value):
        raise DecisionError(
            f"value of header {name} must be one line of printable ASCII (encode anything else per RFC 2047)"
        )
    if len(name) + 2 + len(value) > MAX_HEADER_LINE:
        raise DecisionError(f"header {name} is longer than {MAX_HEADER_LINE} characters")


def _fields(pairs: object) -> tuple[tuple[str, str], ...]:
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence):
        raise DecisionError("header fields must be a list of (name, value) pairs")
    out = []
    for pair in pairs:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise DecisionError("header fields must be a list of (name, value) pairs")
        check_header(*pair)
        out.append((pair[0], pair[1]))
    return tuple(out)


def _names(names: object) -> tuple[str, ...]:
    if isinstance(names, str | bytes) or not isinstance(names, Sequence):
        raise DecisionError("header names to remove must be a list of names")
    for name in names:
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise DecisionError(f"header name {name!r} must be 1 to 76 printable ASCII characters, no colon or space")
    return tuple(names)


def validate(decision: object, hook: str) -> Decision:
    """The decision if it is one this hook may make; DecisionError otherwise.

    The fields are checked again: a frozen dataclass can still be changed
    behind its back (object.__setattr__).
    """
    if decision is None or type(decision) is Accept:
        return decision
    if type(decision) is Reject:
        check_reply(decision.code, decision.status, decision.text)
        return decision
    if type(decision) is Headers:
        if hook != "data":
            raise DecisionError(f"Headers is a decision for the data hook only, not {hook}")
        _fields(decision.add)
        _fields(decision.replace)
        _names(decision.remove)
        return decision
    raise DecisionError(f"returned {type(decision).__name__}, not None, Accept, Reject or Headers")


# -- the message's header ------------------------------------------------------------


def body_offset(message: bytes) -> int:
    """Where the body starts: after the first empty line (the whole message if there is none)."""
    if message.startswith(b"\r\n"):
        return 2
    end = message.find(b"\r\n\r\n")
    return len(message) if end < 0 else end + 4


def _raw_fields(message: bytes) -> list[bytes]:
    """The header's fields as sent, each with its continuation lines and CRLFs."""
    block = message[: body_offset(message)]
    fields: list[bytes] = []
    for line in block.split(b"\r\n")[:-1]:
        if not line:
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return fields


def parse_headers(message: bytes) -> tuple[tuple[str, str], ...]:
    """(name, value) of every field, unfolded; a line that is no field is left out."""
    out = []
    for raw in _raw_fields(message):
        name, colon, value = raw.decode("utf-8", "replace").partition(":")
        if colon and name and name == name.strip():
            out.append((name, " ".join(value.split())))
    return tuple(out)


def apply_headers(message: bytes, edits: Sequence[Headers]) -> bytes:
    """The message with the header changes made: new fields first, the body untouched."""
    added = [pair for edit in edits for pair in (*edit.replace, *edit.add)]
    replaced = {name.lower() for edit in edits for name, _ in edit.replace}
    replaced |= {name.lower() for edit in edits for name in edit.remove}
    if not added and not replaced:
        return message
    top = b"".join(f"{name}: {value}\r\n".encode("ascii") for name, value in added)
    if not replaced:
        return top + message
    fields = _raw_fields(message)
    kept = [raw for raw in fields if raw.split(b":", 1)[0].decode("utf-8", "replace").lower() not in replaced]
    return top + b"".join(kept) + message[sum(len(raw) for raw in fields) :]
