"""``sendmail``: hand a message to Empath from the command line, as cron,
mail(1), PHP and scripts expect of /usr/sbin/sendmail.

The message goes straight into the queue database, committed and fsynced
before the command exits 0, so local mail is safe even while the daemon is
stopped; a running daemon is then nudged to deliver it at once.

Flags: -t (recipients from To/Cc/Bcc; Bcc is removed), -f/-r SENDER,
-F NAME, -i / -oi (a lone dot does not end the input), -bm (the default),
-bs (an SMTP dialogue on stdin and stdout: smtp/stdio.py), -bp (list the
queue, as mailq), -q (retry the deferred queue now), -C FILE
(the config; default $EMPATH_CONFIG, then /etc/empath/empath.toml), -- and
recipients as arguments. Other -o options and -v are accepted and ignored,
as sendmail does. Exit codes follow sysexits.h.
"""

import email.utils
import getpass
import logging
import os
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32

from empath import addresses
from empath.aliases import Aliases, BrokenAlias
from empath.cmd import mailq
from empath.cmd.config import loaded, local_path
from empath.config import Config
from empath.config.files import alias_tables, rewriter_of
from empath.message import dkim, submit
from empath.queue import database, ids
from empath.queue.database import QueueError
from empath.queue.insert import NewMessage, insert_alone
from empath.queue.spool import Spool
from empath.rewrite import Rules
from empath.smtp import wire
from empath.watched import FileError

# sysexits.h
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_CONFIG = 78


class UsageError(Exception):
    pass


@dataclass
class Options:
    mode: str = "deliver"  # deliver, smtp (-bs), list, flush
    from_headers: bool = False  # -t
    dot_ends: bool = True  # cleared by -i / -oi
    sender: str | None = None
    full_name: str | None = None
    config: str | None = None
    recipients: list[str] = field(default_factory=list)


def full_name(text: str) -> str:
    """-F NAME goes into a From header: a line break there would add header fields of
    the caller's choosing (web forms pass user input to -F), signed by our DKIM key."""
    if any(ch < " " or ch == "\x7f" for ch in text):
        raise UsageError("-F: the name may not contain control characters or line breaks")
    return text


def parse_args(argv: list[str]) -> Options:
    """sendmail's own argument syntax: clustered and attached values (-fme@x), -oX options."""
    opts = Options()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            opts.recipients += args
            break
        if not arg.startswith("-") or arg == "-":
            opts.recipients.append(arg)
            continue
        flag, attached = arg[:2], arg[2:]

        def value(name: str, attached: str = attached) -> str:
            if attached:
                return attached
            if not args:
                raise UsageError(f"option {name} needs a value")
            return args.pop(0)

        if flag in ("-f", "-r"):
            opts.sender = value(flag)
        elif flag == "-F":
            opts.full_name = full_name(value(flag))
        elif flag == "-C":
            opts.config = value(flag)
        elif flag == "-t" and not attached:
            opts.from_headers = True
        elif flag == "-i" and not attached:
            opts.dot_ends = False
        elif flag == "-o":
            if attached == "i":
                opts.dot_ends = False
            elif not attached:
                value("-o")  # "-o X": an option we do not use
        elif flag == "-b":
            modes = {"m": "deliver", "p": "list", "s": "smtp"}
            if attached not in modes:
                raise UsageError(f"-b{attached} is not supported (use -bm, -bs or -bp)")
            opts.mode = modes[attached]
        elif flag == "-q":
            opts.mode = "flush"
        elif flag in ("-v", "-U", "-n"):
            pass
        elif flag in ("-N", "-R", "-V", "-B", "-L", "-O", "-X"):
            value(flag)  # DSN and logging options of other MTAs: accepted, not used
        else:
            raise UsageError(f"unknown option {arg}")
    return opts


def read_message(stream, dot_ends: bool) -> bytes:
    """The message from stdin, with CRLF line ends. Without -i a line of a lone dot ends it."""
    lines = []
    for raw in stream:
        line = raw.rstrip(b"\r\n")
        if dot_ends and line == b".":
            break
        lines.append(line)
    return b"".join(line + b"\r\n" for line in lines)


# A header field's start: its name (printable ASCII but the colon, RFC 5322 §2.2), then the colon.
FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")


def split_header(message: bytes) -> tuple[bytes, bytes]:
    """The input's header fields (each with its CRLF) and its body.

    The header section ends at the first blank line, which belongs to neither,
    or, as Postfix's cleanup reads it, at the first line that is not a field:
    that line begins the body. ``echo text | sendmail`` is all body.
    """
    at = 0
    while at < len(message):
        end = message.find(b"\r\n", at)
        end = len(message) if end == -1 else end
        line = message[at:end]
        if not line:
            return message[:at], message[end + 2 :]
        if not (FIELD.match(line) or (at and line[:1] in (b" ", b"\t"))):
            break
        at = end + 2
    return message[:at], message[at:]


def crlf_lines(text: bytes) -> bytes:
    """``text`` with every line ended by CRLF, whatever ended it (local programs send anything)."""
    return b"".join(line + b"\r\n" for line in wire.lines(text))


def header_recipients(header: bytes) -> list[str]:
    """-t: every address in To, Cc and Bcc."""
    parsed = BytesHeaderParser(policy=compat32).parsebytes(header)
    values = [v for name in ("to", "cc", "bcc") for v in parsed.get_all(name, [])]
    return [address for _, address in email.utils.getaddresses([str(v) for v in values]) if address]


def remove_bcc(header: bytes) -> bytes:
    """Drop Bcc fields (and their continuation lines): the recipients must not see them."""
    kept = []
    skipping = False
    for line in header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line[:4].lower() == b"bcc:"
        if not skipping:
            kept.append(line)
    return b"\r\n".join(kept)


def qualify(address: str, domain: addresses.Domain) -> addresses.Mailbox:
    """A recipient or sender as a mailbox; a bare local name gets our domain, as Postfix's myorigin."""
    text = address.strip().strip("<>")
    if "@" not in text:
        text = f"{text}@{domain}"
    return addresses.parse_mailbox(text, utf8=True)


def build(
    opts: Options,
    message: bytes,
    config: Config,
    user: str,
    now: float,
    queue_id: str,
    aliases: Aliases,
    rules: Rules | None = None,
) -> tuple[tuple[NewMessage, ...], dkim.Signing]:
    """The queue entries of a message handed to sendmail (itself, and a forwarded copy with
    SRS: submit.entries), and its DKIM signing (pure but for the key and the aliases' files)."""
    header, body = split_header(message)
    recipients = list(opts.recipients)
    if opts.from_headers:
        recipients += header_recipients(header)
        header = remove_bcc(header)
    if not recipients:
        raise UsageError("no recipients given (name them, or use -t)")
    sender = qualify(opts.sender, config.hostname) if opts.sender else qualify(user, config.hostname)
    boxes = list(dict.fromkeys(qualify(r, config.hostname) for r in recipients))
    # What SMTP would have carried: the blank line after the header is always there.
    data = crlf_lines(header) + b"\r\n" + crlf_lines(body)
    expanded = aliases.expand_all([b.address for b in boxes])  # as a session's RCPTs are
    envelope = submit.Envelope(
        sender=sender.address,
        recipients=submit.expanded([(a, a.domain, (), None, targets) for a, targets in expanded]),
        given=[b.address for b in boxes],
        smtputf8=not all(str(b).isascii() for b in [sender, *boxes, *(t for _, ts in expanded for t in ts)]),
        body_type="7BIT" if data.isascii() else "8BITMIME",
    )
    origin = submit.LocalUser(user, opts.full_name)
    msg, signing = submit.compose(config, origin, envelope, Spool.holding(data), queue_id, now, uuid.uuid4().hex, rules)
    return submit.entries(msg, expanded, aliases.ours, aliases.srs, now, ids.new_id(now)), signing


def _aliases(config: Config) -> Aliases:
    """The aliases, and SRS if this user may read its secrets; if not (they are the daemon's,
    mode 0600), mail an alias forwards keeps its sender, and a line says why."""
    try:
        return alias_tables(config)
    except FileError as exc:
        if config.srs.secret_file is None:
            raise
        tables = alias_tables(config, read_srs=False)  # the aliases' own fault raises here
        print(f"sendmail: {exc}; mail an alias forwards keeps its sender (no SRS)", file=sys.stderr)
        return tables


def enqueue(config: Config, *entries: NewMessage) -> None:
    insert_alone(config.database_path, entries, config.queue.max_size)


def daemon_pid(config: Config) -> int | None:
    """The running daemon's pid, from its data directory lock, or None."""
    return database.lock_holder(config.data_dir)


def nudge(config: Config, sig: signal.Signals) -> bool:
    pid = daemon_pid(config)
    if pid is None:
        return False
    try:
        os.kill(pid, sig)
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"sendmail: {exc}", file=sys.stderr)
        return EX_USAGE
    config = loaded("sendmail", local_path(opts.config))
    if config is None:
        return EX_CONFIG
    if opts.mode == "list":
        return mailq.show(config)
    if opts.mode == "smtp":
        return serve_smtp(config, getpass.getuser())
    if opts.mode == "flush":
        if not nudge(config, signal.SIGUSR1):
            print("sendmail: the Empath daemon is not running; mail will go when it starts", file=sys.stderr)
        return EX_OK
    now = time.time()
    queue_id = ids.new_id(now)
    try:
        message = read_message(sys.stdin.buffer, opts.dot_ends)
        if len(message) > config.limits.max_message_size:
            print(f"sendmail: message larger than {config.limits.max_message_size} bytes", file=sys.stderr)
            return EX_DATAERR
        rewriter = rewriter_of(config)
        rules = rewriter.rules() if rewriter.active else None
        entries, signing = build(opts, message, config, getpass.getuser(), now, queue_id, _aliases(config), rules)
    except UsageError as exc:
        print(f"sendmail: {exc}", file=sys.stderr)
        return EX_USAGE
    except addresses.AddressError as exc:
        print(f"sendmail: bad address: {exc}", file=sys.stderr)
        return EX_NOUSER
    except BrokenAlias as exc:
        print(f"sendmail: {exc}; fix the aliases (empath --check names the line)", file=sys.stderr)
        return EX_CONFIG
    except FileError as exc:  # being edited, say: try again shortly
        print(f"sendmail: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    try:
        enqueue(config, *entries)
    except database.SchemaTooNew as exc:
        print(f"sendmail: {exc}", file=sys.stderr)
        return EX_SOFTWARE
    except (QueueError, OSError) as exc:
        print(f"sendmail: cannot queue the message in {config.database_path}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if not isinstance(exc, PermissionError) else EX_CANTCREAT
    except Exception as exc:  # noqa: BLE001 - peewee/sqlite errors: one clear line, not a traceback
        print(f"sendmail: cannot queue the message in {config.database_path}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    for line in signing.warnings():  # queued all the same: nothing is lost
        print(f"sendmail: {line}", file=sys.stderr)
    nudge(config, signal.SIGUSR2)
    return EX_OK


def serve_smtp(config: Config, user: str) -> int:
    """sendmail -bs: one SMTP dialogue on stdin and stdout (smtp/stdio.py); the exit code its end calls for."""
    # Imported here: only -bs needs gevent and the SMTP session.
    from empath.smtp import stdio

    # The session's log events stay unsaid: what matters to the caller goes to stderr below.
    logging.getLogger("empath").addHandler(logging.NullHandler())

    def store(*entries: NewMessage) -> None:
        try:
            enqueue(config, *entries)
        except Exception as exc:  # noqa: BLE001 - sqlite errors too: a 451 and one line, not a traceback
            print(f"sendmail: cannot queue the message in {config.database_path}: {exc}", file=sys.stderr)
            raise QueueError(str(exc)) from None
        nudge(config, signal.SIGUSR2)

    try:
        session = stdio.LocalSession(config, user, stdio.Pipe(0, 1), store)
    except FileError as exc:
        print(f"sendmail: {exc}", file=sys.stderr)
        return EX_CONFIG
    outcome = session.run()
    if outcome == "timeout":
        print("sendmail: timed out waiting for the client", file=sys.stderr)
        return EX_TEMPFAIL
    if outcome == "client hung up" or isinstance(session.error, BrokenPipeError):
        if session.machine.transaction is None:
            return EX_OK
        print("sendmail: the input ended inside a mail transaction; it was not queued", file=sys.stderr)
        return EX_PROTOCOL
    if session.error is not None:  # a bug, or stdin or stdout that fails otherwise than by closing
        print(f"sendmail: internal error: {type(session.error).__name__}: {session.error}", file=sys.stderr)
        return EX_SOFTWARE
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
