"""The empathctl verbs that talk to the daemon over the control socket.

status, connections, stats, reload, log-level, domain set, breaker list|reset,
pause, resume, verify, queue list|show|delete|hold|release|retry. Each builds a
request, checks it with the daemon's own parser (so a bad id is refused
before anything is sent), sends it, and prints the result as text
(control/render.py) or, with ``--json``, as JSON. When no daemon runs, the
queue verbs and stats work on the database directly (control/offline.py);
the others fail with one line.
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from empath.config import Config
from empath.control import client, offline, protocol
from empath.control.client import ControlError
from empath.control.render import render
from empath.queue.states import FILTER_STATES

VERBS = (
    "status",
    "connections",
    "stats",
    "reload",
    "log-level",
    "domain",
    "breaker",
    "pause",
    "resume",
    "verify",
    "queue",
)
TARGET_HELP = "queue ids (16 characters each)"


def add_verbs(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_argument("--token-file", type=Path, help="a file whose first line is the token (default: $EMPATH_TOKEN)")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the reply (default 30)")

    def verb(parent: Any, name: str, text: str) -> argparse.ArgumentParser:
        return parent.add_parser(name, parents=[common], help=text, description=text)

    verb(verbs, "status", "version, uptime, listeners, queue counts, delivery paused or not")
    verb(verbs, "connections", "the SMTP sessions open now")
    verb(verbs, "stats", "counters since the daemon started")
    verb(verbs, "reload", "re-read the config; one that does not validate is refused and the old one stays")
    verb(verbs, "log-level", "change the log level until restart or reload").add_argument(
        "level", help="debug, info, warning or error"
    )
    domain = verbs.add_parser("domain", help="per-destination limits at run time")
    domain_set = verb(domain.add_subparsers(dest="domain_verb", required=True), "set", "override rate/concurrency")
    domain_set.add_argument("destination", help="a domain, or smarthost")
    domain_set.add_argument("settings", nargs="+", metavar="KEY=VALUE", help="rate=60/m (or 0), concurrency=5")
    breaker = verbs.add_parser("breaker", help="circuit breakers of destinations")
    breaker_verbs = breaker.add_subparsers(dest="breaker_verb", required=True)
    verb(breaker_verbs, "list", "every breaker and its state")
    verb(breaker_verbs, "reset", "close a breaker; the mail it held back goes now").add_argument("destination")
    for name, text in (("pause", "stop delivering (all, or one domain); mail stays queued"), ("resume", "undo pause")):
        verb(verbs, name, text).add_argument("domain", nargs="?", help="only this recipient domain")
    verify = verb(verbs, "verify", "would a RCPT to this address be taken, and on whose word (table, callout)")
    verify.add_argument("address")
    verify.add_argument("--ask", action="store_true", help="ask the next hop now, whatever is kept (callout)")
    verify.add_argument("--forget", action="store_true", help="drop the answer kept: the next RCPT asks again")
    _add_queue(verbs, verb)


def _add_queue(verbs: Any, verb: Any) -> None:
    queue = verbs.add_parser("queue", help="list, show and act on queued mail")
    queue_verbs = queue.add_subparsers(dest="queue_verb", required=True)
    listing = verb(queue_verbs, "list", "messages in the queue, oldest first (Postfix-like)")
    listing.add_argument("--state", help=", ".join(FILTER_STATES))
    listing.add_argument("--domain", help="with a recipient in this domain")
    listing.add_argument("--sender", help="from this address; <> for the null sender, @domain for a domain")
    listing.add_argument("--older-than", help="received longer ago than this: 90, 30m, 2h, 5d")
    listing.add_argument("--limit", type=int, help="at most this many messages (default 1000)")
    show = verb(queue_verbs, "show", "one message: envelope, recipients, attempts, why it waits")
    show.add_argument("queue_id")
    show.add_argument("--body", action="store_true", help="print the message too")
    for name, text in (
        ("delete", "remove messages from the queue"),
        ("hold", "keep messages from delivery until released"),
        ("release", "let held messages go"),
        ("retry", "deliver now: waiting recipients are due at once"),
    ):
        action = verb(queue_verbs, name, text)
        action.add_argument("ids", nargs="*", metavar="ID", help=TARGET_HELP)
        action.add_argument("--all", action="store_true", help="every message (needs --yes)")
        action.add_argument("--yes", action="store_true", help="confirm --all")
        if name == "retry":
            action.add_argument("--domain", help="every message with a recipient in this domain")


def _wire(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The verb and arguments of the request the command line asks for."""
    if args.verb == "log-level":
        return "log-level", {"level": args.level}
    if args.verb == "domain":
        return "domain-set", {"destination": args.destination, **_settings(args.settings)}
    if args.verb == "breaker":
        return f"breaker-{args.breaker_verb}", {"destination": args.destination} if args.breaker_verb == "reset" else {}
    if args.verb == "verify":
        return "verify", {"address": args.address} | {k: True for k in ("ask", "forget") if getattr(args, k)}
    if args.verb in ("pause", "resume"):
        return args.verb, {"domain": args.domain} if args.domain else {}
    if args.verb != "queue":
        return args.verb, {}
    sub = args.queue_verb
    if sub == "list":
        given = {"state": args.state, "domain": args.domain, "sender": args.sender}
        given |= {"older_than": args.older_than, "limit": args.limit}
        return "queue-list", {k: v for k, v in given.items() if v is not None}
    if sub == "show":
        return "queue-show", {"id": args.queue_id, "body": args.body}
    return f"queue-{sub}", _targets(args)


def _settings(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in ("rate", "concurrency"):
            raise ControlError(f"{item!r}: give rate=VALUE or concurrency=N")
        if key == "concurrency":
            if not value.isdigit():
                raise ControlError(f"concurrency={value}: must be a whole number")
            out[key] = int(value)
        else:
            out[key] = value
    return out


def _targets(args: argparse.Namespace) -> dict[str, Any]:
    domain = getattr(args, "domain", None)
    if args.all and not args.yes:
        raise ControlError(f"queue {args.queue_verb} --all acts on every message: add --yes to confirm")
    if sum(map(bool, (args.ids, args.all, domain))) != 1:
        also = ", --domain D" if args.queue_verb == "retry" else ""
        raise ControlError(f"queue {args.queue_verb}: give queue ids{also} or --all --yes")
    if args.all:
        return {"all": True, "confirm": True}
    return {"domain": domain} if domain else {"ids": args.ids}


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is None:
        return os.environ.get("EMPATH_TOKEN") or None
    try:
        lines = args.token_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ControlError(f"cannot read the token file {args.token_file}: {exc}") from None
    if not lines or not lines[0].strip():
        raise ControlError(f"the token file {args.token_file} is empty")
    return lines[0].strip()


def command(args: argparse.Namespace, config: Config) -> int:
    """Run the verb; every failure is one line (per problem) on stderr and exit code 1."""
    try:
        verb, wire_args = _wire(args)
        line = protocol.encode_request(verb, wire_args, _token(args))
        try:
            request = protocol.parse(line)  # the daemon's own checks, before anything is sent
        except protocol.ProtocolError as exc:
            raise ControlError(str(exc)) from None
        try:
            result = client.call(config.control_socket, line, args.timeout)
        except client.DaemonDown:
            if verb not in offline.OFFLINE_VERBS:
                raise
            print("empathctl: the daemon is not running; using the queue database directly", file=sys.stderr)
            result = offline.run(config, request)
    except ControlError as exc:
        for text in str(exc).splitlines() or ["failed"]:
            print(f"empathctl: {text}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(render(verb, result, request.args))
    return 0
