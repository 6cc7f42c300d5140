"""The control protocol: JSON lines over the control socket (pure).

A request is one line of at most ``MAX_LINE`` bytes holding one JSON object,
    {"verb": "queue-hold", "args": {"ids": ["01KAW3V8Y4C0F7QZ"]}, "token": "…"}
(``args`` and ``token`` may be left out), and its reply is one line,
    {"ok": true, "result": …}   or   {"ok": false, "error": "what is wrong"}.
``parse`` turns the bytes of a request into a checked ``Request`` whose
arguments are converted (domains to A-labels, ages to seconds, rates to
messages a second), or raises ``ProtocolError`` with the text of the error
reply. ``VERBS`` is the table of verbs: the scope each needs and the
arguments it takes.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from empath import addresses
from empath.addresses import AddressError, Domain, EmailAddress
from empath.config import values
from empath.control.tokens import ADMIN, MAX_TOKEN, OPERATE, READ
from empath.log import LEVELS
from empath.queue import ids
from empath.queue.states import FILTER_STATES

MAX_LINE = 65536  # bytes of one request, its newline included
MAX_IDS = 2000  # queue ids in one request (2000 of them fit in a line)
MAX_LIMIT = 100000  # messages in one listing
DEFAULT_LIMIT = 1000  # messages a listing returns unless told: it runs on the daemon's database thread
MAX_CONCURRENCY = 10000


class ProtocolError(Exception):
    """A request that cannot be served; the message is the error reply's text."""


class VerbError(Exception):
    """A request that was understood but cannot be done; the message is the reply's text."""


@dataclass(frozen=True)
class Request:
    verb: str
    args: dict[str, Any]
    token: str | None = None


Convert = Callable[[Any], Any]


@dataclass(frozen=True)
class Verb:
    scope: str  # tokens.READ, OPERATE or ADMIN
    args: dict[str, Convert] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    check: Callable[[dict[str, Any]], None] | None = None  # rules across arguments; raises ValueError

    @property
    def mutating(self) -> bool:
        """Does it change anything? (Those are written to the audit log.)"""
        return self.scope != READ


# -- argument converters: each returns the value or raises ValueError (the end of "argument 'x' …") --


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _text(value: Any, limit: int = 998) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise ValueError(f"must be a printable string of 1 to {limit} characters")
    return value


def _queue_id(value: Any) -> str:
    if not ids.valid(value):
        raise ValueError(f"is {_shown(value)}, not a queue id (16 characters of 0-9 and A-Z)")
    return value


def _queue_ids(value: Any) -> list[str]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_IDS:
        raise ValueError(f"must be a list of 1 to {MAX_IDS} queue ids")
    for item in value:
        if not ids.valid(item):
            raise ValueError(f"holds {_shown(item)}, which is not a queue id (16 characters of 0-9 and A-Z)")
    return list(dict.fromkeys(value))


def _shown(value: Any) -> str:
    """A bad value as an error reply shows it: quoted and cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _domain(value: Any) -> Domain:
    text = _text(value, 255)
    try:
        return Domain.name(text.rstrip("."))
    except AddressError as exc:
        raise ValueError(f"is {_shown(text)}, not a domain name: {exc}") from None


def _address(value: Any) -> EmailAddress:
    text = _text(value, 320)
    try:
        mailbox = addresses.parse_path(f"<{text.strip('<>')}>", utf8=True).mailbox
    except AddressError as exc:
        raise ValueError(f"is {_shown(text)}, not an email address: {exc}") from None
    if mailbox is None:
        raise ValueError("must be an email address, not <>")
    return mailbox.address


def _state(value: Any) -> str:
    if value not in FILTER_STATES:
        raise ValueError(f"must be one of {', '.join(FILTER_STATES)}")
    return value


def _age(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be an age such as 90, 30m, 2h or 5d")
    return values.age(str(value))


def _count(maximum: int) -> Convert:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= maximum:
            raise ValueError(f"must be a whole number from 1 to {maximum}")
        return value

    return convert


def _messages_per_second(value: Any) -> float:
    if value in (0, "0") and not isinstance(value, bool):
        return 0.0
    return values.rate(value)


def _level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LEVELS:
        raise ValueError(f"must be one of {', '.join(LEVELS)}")
    return value.lower()


# -- rules across arguments ----------------------------------------------------------


def _one_target(*choices: str) -> Callable[[dict[str, Any]], None]:
    """Exactly one of ``choices``; ``all`` only with ``confirm``."""

    def check(args: dict[str, Any]) -> None:
        given = [name for name in choices if name in args]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(choices)}")
        if "all" in args and not args["all"]:
            raise ValueError("all must be true when given")
        if args.get("all") and not args.get("confirm"):
            raise ValueError("acting on every message needs confirm: true (empathctl: --all --yes)")

    return check


def _some_limit(args: dict[str, Any]) -> None:
    if "rate" not in args and "concurrency" not in args:
        raise ValueError("give rate, concurrency or both")


_TARGETS: dict[str, Convert] = {"ids": _queue_ids, "all": _bool, "confirm": _bool}

VERBS: dict[str, Verb] = {
    "status": Verb(READ),
    "connections": Verb(READ),
    "stats": Verb(READ),
    "breaker-list": Verb(READ),
    "queue-list": Verb(
        READ,
        {"state": _state, "domain": _domain, "sender": _text, "older_than": _age, "limit": _count(MAX_LIMIT)},
    ),
    "queue-show": Verb(READ, {"id": _queue_id, "body": _bool}, required=("id",)),
    "queue-delete": Verb(OPERATE, _TARGETS, check=_one_target("ids", "all")),
    "queue-hold": Verb(OPERATE, _TARGETS, check=_one_target("ids", "all")),
    "queue-release": Verb(OPERATE, _TARGETS, check=_one_target("ids", "all")),
    "queue-retry": Verb(OPERATE, {**_TARGETS, "domain": _domain}, check=_one_target("ids", "domain", "all")),
    "pause": Verb(OPERATE, {"domain": _domain}),
    "resume": Verb(OPERATE, {"domain": _domain}),
    "breaker-reset": Verb(OPERATE, {"destination": _domain}, required=("destination",)),
    "domain-set": Verb(
        OPERATE,
        {"destination": _domain, "rate": _messages_per_second, "concurrency": _count(MAX_CONCURRENCY)},
        required=("destination",),
        check=_some_limit,
    ),
    "log-level": Verb(OPERATE, {"level": _level}, required=("level",)),
    # Asking the next hop, or forgetting its answer, acts; looking up does not.
    "verify": Verb(READ, {"address": _address, "ask": _bool, "forget": _bool}, required=("address",)),
    "reload": Verb(ADMIN),
}


def scope_of(request: "Request") -> str:
    """The scope a request needs: its verb's, but the text of the mail itself
    (``queue show --body``) is more than a read token's look at the queue."""
    if request.verb == "queue-show" and request.args.get("body"):
        return OPERATE
    if request.verb == "verify" and (request.args.get("ask") or request.args.get("forget")):
        return OPERATE
    return VERBS[request.verb].scope


def parse(line: bytes) -> Request:
    """A request line (its newline taken off or not) → a checked Request; ProtocolError says what is wrong."""
    if len(line) > MAX_LINE:
        raise ProtocolError(f"request longer than {MAX_LINE} bytes")
    try:
        data = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError("request is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"request is not valid JSON: {exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # a number too long to convert, arrays nested too deep
        raise ProtocolError(f"request is not usable JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ProtocolError('request must be a JSON object such as {"verb": "status"}')
    unknown = sorted(set(data) - {"verb", "args", "token"})
    if unknown:
        raise ProtocolError(f"unknown request field {_shown(unknown[0])} (verb, args, token)")
    name = data.get("verb")
    if not isinstance(name, str):
        raise ProtocolError('request has no "verb" string')
    verb = VERBS.get(name)
    if verb is None:
        raise ProtocolError(f"unknown verb {_shown(name)} (one of {', '.join(VERBS)})")
    token = data.get("token")
    if token is not None and (not isinstance(token, str) or len(token) > MAX_TOKEN):
        raise ProtocolError(f"token must be a string of at most {MAX_TOKEN} characters")
    raw = data.get("args", {})
    if not isinstance(raw, dict):
        raise ProtocolError(f"{name}: args must be a JSON object")
    return Request(name, _arguments(name, verb, raw), token)


def _arguments(name: str, verb: Verb, raw: dict[str, Any]) -> dict[str, Any]:
    args = {}
    for key, value in raw.items():
        convert = verb.args.get(key)
        if convert is None:
            known = ", ".join(verb.args) or "none"
            raise ProtocolError(f"{name}: unknown argument {_shown(key)} (known: {known})")
        try:
            args[key] = convert(value)
        except ValueError as exc:
            raise ProtocolError(f"{name}: argument {key!r} {exc}") from None
    for key in verb.required:
        if key not in args:
            raise ProtocolError(f"{name}: argument {key!r} is required")
    if verb.check is not None:
        try:
            verb.check(args)
        except ValueError as exc:
            raise ProtocolError(f"{name}: {exc}") from None
    return args


def encode_request(verb: str, args: dict[str, Any], token: str | None = None) -> bytes:
    data: dict[str, Any] = {"verb": verb, "args": args}
    if token is not None:
        data["token"] = token
    return json.dumps(data).encode() + b"\n"


def ok(result: Any) -> bytes:
    return json.dumps({"ok": True, "result": result}, ensure_ascii=False, default=str).encode() + b"\n"


def error(text: str) -> bytes:
    return json.dumps({"ok": False, "error": text}, ensure_ascii=False).encode() + b"\n"
