"""Property-based tests (hypothesis): the parsers, the body on the wire, the
DATA reader, the retry schedule, and the SMTP state machine against a model.

Each property holds for every input hypothesis can build, not just the
examples in the other unit tests. Settings stay modest (SETTINGS) so the file
runs in seconds; a failure prints the smallest input that breaks it, which
belongs in the example-based tests as a regression.
"""

import io
import itertools
import string
from dataclasses import replace
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

from data_helpers import reader_for
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from empath import addresses
from empath.aliases import Aliases
from empath.cmd.sendmail import FIELD, Options, build, read_message
from empath.config.model import Limits
from empath.config.sections import validate
from empath.delivery.retry import Schedule
from empath.smtp import replies, wire
from empath.smtp.commands import (
    MailArgs,
    RcptArgs,
    parse_command,
    parse_mail,
    parse_rcpt,
    xtext_encode,
)
from empath.smtp.data import DataReader
from empath.smtp.machine import Action, Machine, Policy, State

SETTINGS = settings(max_examples=200, deadline=None)
NO_ALIASES = Aliases(None, None, "mx.test", 1000)
SENDMAIL_CONFIG = validate(
    {"server": {"hostname": "host.test", "data_dir": "/tmp/x"}, "listeners": [{"address": "127.0.0.1:2525"}]},
    "",
    Path("/tmp/empath.toml"),
)

# -- generators -----------------------------------------------------------------

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"

# A DNS label (letter-digit-hyphen, no hyphen at either end, at most 63).
label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True)
domain = st.lists(label, min_size=1, max_size=4).map(".".join).filter(lambda d: len(d) <= 255)

atom = st.text(alphabet=ATEXT, min_size=1, max_size=12)
dot_atom = st.lists(atom, min_size=1, max_size=4).map(".".join)
# SMTPUTF8 (RFC 6531) adds every non-ASCII character to atext; no surrogates,
# which no UTF-8 line can carry.
utf8_atom = st.text(
    alphabet=st.one_of(st.sampled_from(ATEXT), st.characters(min_codepoint=0x80, exclude_categories=("Cs",))),
    min_size=1,
    max_size=8,
)
utf8_dot_atom = st.lists(utf8_atom, min_size=1, max_size=3).map(".".join)
# Inside quotes any printable ASCII, space, quote and backslash included.
quoted_local = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)

ascii_local = st.one_of(dot_atom, quoted_local).filter(lambda s: len(s.encode()) <= addresses.MAX_LOCAL_PART)
utf8_local = st.one_of(dot_atom, utf8_dot_atom, quoted_local).filter(
    lambda s: len(s.encode()) <= addresses.MAX_LOCAL_PART
)


def fits(mailbox: addresses.Mailbox) -> bool:
    return len(f"<{mailbox}>".encode()) <= addresses.MAX_PATH


mailbox = st.builds(addresses.Mailbox, ascii_local, domain).filter(fits)
utf8_mailbox = st.builds(addresses.Mailbox, utf8_local, domain).filter(fits)
printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=100)


@st.composite
def mail_args(draw) -> MailArgs:
    smtputf8 = draw(st.booleans())
    path = draw(
        st.one_of(st.just(addresses.Path(None)), st.builds(addresses.Path, utf8_mailbox if smtputf8 else mailbox))
    )
    size = draw(st.none() | st.integers(min_value=0, max_value=10**20 - 1))
    body = draw(st.sampled_from(["7BIT", "8BITMIME"]))
    ret = draw(st.none() | st.sampled_from(["FULL", "HDRS"]))
    envid = draw(st.none() | printable)
    has_params = smtputf8 or size is not None or body != "7BIT" or ret is not None or envid is not None
    return MailArgs(path, size, body, smtputf8, ret, envid, has_params)


@st.composite
def rcpt_args(draw) -> RcptArgs:
    path = addresses.Path(draw(mailbox))
    notify = draw(
        st.just(("NEVER",))
        | st.lists(st.sampled_from(["SUCCESS", "FAILURE", "DELAY"]), min_size=1, max_size=3, unique=True).map(tuple)
        | st.just(())
    )
    orcpt = draw(st.none() | printable.map(lambda a: f"rfc822;{a}"))
    return RcptArgs(path, notify, orcpt, bool(notify) or orcpt is not None)


# -- rendering parsed values back to a command line -----------------------------


def render_path(path: addresses.Path) -> str:
    return f"<{path.address}>"


def render_mail(args: MailArgs) -> str:
    params = []
    if args.size is not None:
        params.append(f"SIZE={args.size}")
    if args.body != "7BIT":
        params.append(f"BODY={args.body}")
    if args.smtputf8:
        params.append("SMTPUTF8")
    if args.ret is not None:
        params.append(f"RET={args.ret}")
    if args.envid is not None:
        params.append(f"ENVID={xtext_encode(args.envid)}")
    return " ".join([f"FROM:{render_path(args.path)}", *params])


def render_rcpt(args: RcptArgs) -> str:
    params = []
    if args.notify:
        params.append("NOTIFY=" + ",".join(args.notify))
    if args.orcpt is not None:
        kind, _, address = args.orcpt.partition(";")
        params.append(f"ORCPT={kind};{xtext_encode(address)}")
    return " ".join([f"TO:{render_path(args.path)}", *params])


def command_arg(line: str) -> str:
    """The line as the session hands it over: bytes, through the command parser."""
    return parse_command(line.encode("utf-8")).arg


def normalise_path(path: addresses.Path) -> addresses.Path:
    """What parsing records of a generated mailbox: lower-case domain, quoted when it had to be."""
    if path.mailbox is None:
        return path
    box = path.mailbox
    quoted = addresses.quote_local(box.local) != box.local
    return replace(path, mailbox=replace(box, domain=box.domain.lower(), quoted=quoted))


# -- command parsing round trips -------------------------------------------------


@SETTINGS
@given(mail_args())
def test_mail_round_trip(args):
    parsed = parse_mail(command_arg("MAIL " + render_mail(args)))
    assert parsed == replace(args, path=normalise_path(args.path))
    assert parse_mail(command_arg("MAIL " + render_mail(parsed))) == parsed


@SETTINGS
@given(rcpt_args())
def test_rcpt_round_trip(args):
    parsed = parse_rcpt(command_arg("RCPT " + render_rcpt(args)), utf8=False)
    assert parsed == replace(args, path=normalise_path(args.path))
    assert parse_rcpt(command_arg("RCPT " + render_rcpt(parsed)), utf8=False) == parsed


@SETTINGS
@given(st.sampled_from(["MAIL", "mail", "Mail"]), st.sampled_from(["FROM:", "from:", "From:"]), mailbox)
def test_verbs_and_prefixes_in_any_case(verb, prefix, box):
    cmd = parse_command(f"{verb} {prefix}<{box}>".encode())
    assert cmd.verb == "MAIL"
    assert parse_mail(cmd.arg).path.address == str(normalise_path(addresses.Path(box)).mailbox)


# -- address parsing ---------------------------------------------------------------


@SETTINGS
@given(ascii_local, domain)
def test_mailbox_parses_and_renders_back(local, dom):
    text = str(addresses.Mailbox(local, dom))
    parsed = addresses.parse_mailbox(text)
    assert parsed.local == local
    assert parsed.domain == dom.lower()
    assert parsed.quoted == text.startswith('"')
    assert str(parsed) == str(addresses.Mailbox(local, dom.lower()))
    assert addresses.parse_mailbox(str(parsed)) == parsed


@SETTINGS
@given(utf8_local, domain)
def test_utf8_mailbox_needs_smtputf8_only_when_non_ascii(local, dom):
    text = str(addresses.Mailbox(local, dom))
    if text.isascii():
        assert addresses.parse_mailbox(text).local == local
    else:
        try:
            addresses.parse_mailbox(text)
        except addresses.NeedsSMTPUTF8:
            pass
        else:
            raise AssertionError(f"{text!r} parsed without SMTPUTF8")
    assert addresses.parse_mailbox(text, utf8=True).local == local


@SETTINGS
@given(domain)
def test_domain_is_lower_cased_once(dom):
    parsed = addresses.parse_domain(dom)
    assert parsed == dom.lower()
    assert addresses.parse_domain(parsed) == parsed


# Internationalised labels: letters beyond ASCII, mixed with ASCII ones.
u_letter = st.characters(whitelist_categories=("Ll", "Lu", "Lo"), min_codepoint=0xC0)
u_label = st.text(alphabet=u_letter, min_size=1, max_size=10)
idn_domain = st.lists(u_label | label, min_size=1, max_size=3).map(".".join)


def typed_or_none(make, text):
    try:
        return make(text)
    except addresses.AddressError:
        return None  # not every generated U-label is valid IDNA


@SETTINGS
@given(domain | idn_domain)
def test_domain_type_parse_str_parse_is_identity(text):
    parsed = typed_or_none(addresses.Domain, text)
    assume(parsed is not None)
    again = addresses.Domain(str(parsed))
    assert again == parsed and type(again) is addresses.Domain
    assert parsed.isascii() and parsed == parsed.lower()


@SETTINGS
@given(utf8_local, domain | idn_domain)
def test_email_address_parse_str_parse_is_identity(local, dom):
    parsed = typed_or_none(addresses.EmailAddress, f"{addresses.quote_local(local)}@{dom}")
    assume(parsed is not None)
    again = addresses.EmailAddress(str(parsed))
    assert again == parsed and type(again) is addresses.EmailAddress
    assert parsed.local == local  # the local part as given, SMTPUTF8 or not
    assert parsed.domain == addresses.Domain(dom)
    assert len(f"<{parsed}>".encode()) <= addresses.MAX_PATH


# -- the body on the wire and back ------------------------------------------------


def feed_all(reader: DataReader, data: bytes) -> list[bool]:
    """Feed ``data`` line by line (each ending at its LF), as the session does."""
    return [reader.feed(line + b"\n") for line in data.split(b"\n")[:-1]]


def reader(lenient: bool = False) -> DataReader:
    # No size or hop limit gets in the way; lines as long as SMTP allows (RFC 5321 §4.5.3.1.6).
    return reader_for(max_size=10**9, max_line=1000, max_received=10**9, max_header=10**9, lenient=lenient)


def crlf_normalised(body: bytes) -> bytes:
    return b"".join(line + b"\r\n" for line in wire.lines(body))


def short_lines(body: bytes) -> bool:
    """Every line fits on the wire as it is, its stuffed dot counted (RFC 5321 §4.5.3.1.6)."""
    return all(len(line) + line.startswith(b".") <= wire.MAX_LINE for line in wire.lines(body))


# Bodies rich in what matters: dots at line starts, every kind of line end.
body_bytes = st.lists(
    st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"\n.", b"\r\n.\r\n", b"a", b"\0", b"\xff"]) | st.binary(),
    max_size=30,
).map(b"".join)


@SETTINGS
@given(body_bytes | st.binary())
def test_encoded_body_reads_back(body):
    assume(short_lines(body))
    encoded = wire.encode(body)
    r = reader()
    ends = feed_all(r, encoded)
    # Only the final ".CRLF" ends it, and the reader gives back the body, CRLF-normalised.
    assert ends == [False] * (len(ends) - 1) + [True]
    assert not r.fatal
    if b"\0" in body:
        assert r.error == replies.NUL_IN_DATA
    else:
        assert r.error is None
        assert r.spool.read() == crlf_normalised(body)


@SETTINGS
@given(
    st.binary(max_size=5000) | st.lists(st.sampled_from([b".", b"x" * 997, b"\n", b"\r\n"]), max_size=8).map(b"".join)
)
def test_long_lines_are_split_not_lost(body):
    assume(b"\0" not in body)
    encoded = wire.encode(body)
    assert all(len(line) <= wire.MAX_LINE + 2 for line in encoded.split(b"\n"))
    r = reader()
    assert feed_all(r, encoded)[-1] is True
    assert r.error is None
    # The line breaks may move, the text may not.
    assert r.spool.read().replace(b"\r\n", b"") == b"".join(wire.lines(body))


@SETTINGS
@given(
    body_bytes
    | st.lists(st.sampled_from([b".", b"x" * 996, b"x", b"\r\n", b"\n", b"\r", b"\r\n."]), max_size=8).map(b"".join)
)
def test_the_quick_encoding_of_a_clean_body_is_the_line_by_line_one(body):
    # Half the bodies made clean (CRLF line ends), as received bodies are, so the quick path runs.
    for each in (body, crlf_normalised(body)):
        assert wire._lines_of(each) == wire._by_lines(each)


@SETTINGS
@given(
    body_bytes
    | st.lists(st.sampled_from([b".", b"x" * 996, b"x" * 1500, b"\r\n", b"\n", b"\r", b"\r\n."]), max_size=8).map(
        b"".join
    ),
    st.lists(st.integers(0, 4000), max_size=6),
)
def test_a_body_encoded_in_pieces_is_the_body_encoded_whole(body, cuts):
    # Delivery sends a large message a piece at a time, cut anywhere: in a CRLF, before a dot, in a long line.
    bounds = [0, *sorted(c for c in cuts if c <= len(body)), len(body)]
    encoder = wire.Encoder()
    sent = b"".join(encoder.piece(body[a:b]) for a, b in itertools.pairwise(bounds)) + encoder.end()
    assert sent == wire.encode(body)


# -- the DATA reader ends only on CRLF.CRLF ----------------------------------------

tricky_line = st.sampled_from(
    [b".\r\n", b".\n", b".\r\r\n", b"..\r\n", b" .\r\n", b".\r", b"\r\n", b"\n", b"\r.\r\n", b".\x00\r\n", b"x\r\n"]
)
any_line = st.binary(max_size=40).map(lambda b: b + b"\n") | st.binary(max_size=40)


@SETTINGS
@given(st.lists(tricky_line | any_line, max_size=20), st.lists(st.booleans(), max_size=20), st.booleans())
def test_data_reader_ends_only_on_dot_crlf(lines, overflows, lenient):
    # Lenient (the office's clients): a bare LF ends a line, but only CRLF.CRLF ends the data.
    r = reader(lenient)
    after_crlf = True
    for i, line in enumerate(lines):
        overflow = overflows[i] if i < len(overflows) else False
        ended = r.feed(line, overflow=overflow)
        if ended:
            # Either the message is complete, on exactly ".CRLF" after a CRLF, or the session must close.
            assert (line == b".\r\n" and after_crlf) or (r.fatal and r.error == replies.BARE_NEWLINE)
            return
        assert line != b".\r\n" or (lenient and not after_crlf)
        assert not r.done
        after_crlf = line.endswith(b"\r\n")


# Mostly lines a message is made of, so that runs of them are taken whole.
good_line = st.sampled_from([b"Received: x\r\n", b"\r\n", b"body\r\n", b"..dot\r\n", b"x" * 30 + b"\r\n"])


@SETTINGS
@given(
    st.lists(good_line, max_size=4),
    st.lists(st.one_of(good_line, good_line, good_line, good_line, tricky_line, any_line), max_size=40),
    st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=10),
    st.integers(min_value=1, max_value=400),
    st.integers(min_value=10, max_value=40),
    st.booleans(),
)
def test_runs_of_lines_get_the_verdicts_of_single_lines(header, body, cuts, max_size, max_line, lenient):
    """feed_lines, whatever runs the lines come in, ends where feed ends, with the same body, size and reply."""
    lines = [*header, b"\r\n", *body]
    single = [line + b"\n" for line in b"".join(lines).split(b"\n")[:-1]]
    limits = dict(max_size=max_size, max_line=max_line, max_received=3, max_header=max_size, lenient=lenient)
    one = reader_for(**limits)
    taken = next((i + 1 for i, line in enumerate(single) if one.feed(line)), None)
    runs = reader_for(**limits)
    ended, left, turn = False, b"", 0
    while not ended and single:
        count, turn = cuts[turn % len(cuts)], turn + 1
        run, single = single[:count], single[count:]
        ended, left = runs.feed_lines(b"".join(run))
        left += b"".join(single) if ended else b""
    assert ended == (taken is not None)
    assert (runs.done, runs.fatal, runs.error, runs.size) == (one.done, one.fatal, one.error, one.size)
    assert runs.spool.read() == one.spool.read()
    if taken is not None:
        assert left == b"".join(line + b"\n" for line in b"".join(lines).split(b"\n")[:-1][taken:])


# -- what a local program hands sendmail arrives intact ---------------------------

# Text a program may write: printable ASCII, colons and spaces included, and UTF-8.
TEXT_LINE = st.text(st.characters(min_codepoint=32, max_codepoint=0x24F, exclude_characters="\x7f"), max_size=80)
FIELD_NAME = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=20)
PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


def sent_through_sendmail(text: bytes) -> bytes:
    """What the queue keeps of ``text`` written to `sendmail -i root`."""
    message = read_message(io.BytesIO(text), dot_ends=False)
    (msg,), _ = build(
        Options(dot_ends=False, recipients=["root"]), message, SENDMAIL_CONFIG, "cron", 1.8e9, "Q1", NO_ALIASES
    )
    return msg.head + msg.body.read()


def crlf(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


@SETTINGS
@given(st.lists(TEXT_LINE.map(str.encode), max_size=12), st.booleans())
def test_text_without_a_header_arrives_as_the_body(lines, lf):
    # `echo text | sendmail root`, as cron and monitoring scripts send it.
    # Text, not a header: its first line is no field (and not blank: a blank line ends a header).
    assume(not lines or not (FIELD.match(lines[0]) or lines[0] == b""))
    stored = sent_through_sendmail(b"".join(line + (b"\n" if lf else b"\r\n") for line in lines))
    parsed = BytesParser(policy=compat32).parsebytes(stored)
    assert parsed.get_payload(decode=True) == crlf(lines)
    assert parsed["From"] and parsed["Date"] and parsed["Message-ID"]


@SETTINGS
@given(
    st.lists(st.tuples(FIELD_NAME, PRINTABLE), max_size=6),
    st.booleans(),
    st.lists(TEXT_LINE.map(str.encode), max_size=8),
)
def test_a_header_and_its_body_arrive_whole_with_or_without_the_blank_line(fields, blank, body):
    # Without the blank line the header ends at the first line that is not a field.
    # (A first body line that is blank would itself be the end of the header.)
    assume(blank or not body or not (FIELD.match(body[0]) or body[0][:1] in (b"", b" ", b"\t")))
    header = [f"{name}: {value}".encode() for name, value in fields]
    stored = sent_through_sendmail(crlf(header + ([b""] if blank else []) + body))
    section, _, rest = stored.partition(b"\r\n\r\n")
    assert rest == crlf(body)
    assert all(field in section.split(b"\r\n") for field in header)


# -- the retry schedule -------------------------------------------------------------

schedules = st.builds(
    lambda first, spread, factor: Schedule(first=first, maximum=first * spread, factor=factor),
    st.floats(min_value=1.0, max_value=3600.0),
    st.floats(min_value=1.0, max_value=1000.0),
    st.floats(min_value=1.0, max_value=10.0),
)


@SETTINGS
@given(schedules, st.integers(min_value=1, max_value=200))
def test_retry_delays_rise_to_the_cap(schedule, n):
    delays = [schedule.delay(f) for f in range(1, n + 1)]
    assert delays[0] == min(schedule.first, schedule.maximum)
    assert all(a <= b for a, b in zip(delays, delays[1:], strict=False))
    assert all(0 < d <= schedule.maximum for d in delays)


@SETTINGS
@given(
    schedules,
    st.integers(min_value=0, max_value=10**6),
    st.floats(min_value=0, max_value=1e9),
    st.floats(min_value=-1e6, max_value=1e6),
)
def test_next_attempt_never_after_expiry(schedule, failures, now, lifetime):
    expires_at = now + lifetime
    nxt = schedule.next_attempt(failures, now, expires_at)
    if now >= expires_at:
        assert nxt is None
    else:
        assert nxt is not None
        assert now <= nxt <= expires_at


@SETTINGS
@given(schedules, st.floats(min_value=0, max_value=1e9), st.floats(min_value=0.001, max_value=2000.0))
def test_retries_end_exactly_at_the_lifetime(schedule, received, lifetimes):
    # The lifetime as a multiple of the first wait, so the walk stays short.
    expires_at = received + schedule.first * lifetimes
    assume(expires_at > received)
    t, failures = received, 0
    while True:
        failures += 1
        nxt = schedule.next_attempt(failures, t, expires_at)
        if nxt is None:
            break
        assert t < nxt <= expires_at
        t = nxt
    assert t == expires_at


# -- the SMTP state machine against a model -----------------------------------------

LOCAL_DOMAINS = ("example.test", "other.test")


def reply_class(step) -> int:
    return step.replies[0].code // 100


class SessionModel(RuleBasedStateMachine):
    """A stranger's session on an MX listener (no TLS, no AUTH), with every reply class checked.

    The model: greeted (HELO/EHLO said or not), esmtp, and the transaction:
    no MAIL, or MAIL with the set of accepted recipients.
    """

    @initialize()
    def start(self):
        # No error limit: the model does not follow the hang-up after too many errors.
        policy = Policy(
            hostname="mx.example.test",
            mode="smtp",
            limits=replace(Limits(), max_errors=10**9, max_recipients=10**9),
            local_domains=LOCAL_DOMAINS,
        )
        self.m = Machine(policy, "203.0.113.9", trusted=False)
        self.greeted = False
        self.esmtp = False
        self.in_mail = False
        self.recipients: set[str] = set()

    def say(self, line: str):
        step = self.m.handle(line.encode())
        assert step.replies, line
        return step

    def expect(self, line: str, klass: int, action: Action = Action.NONE):
        step = self.say(line)
        assert reply_class(step) == klass, (line, step.replies)
        assert step.action is action, (line, step.action)
        return step

    @rule(esmtp=st.booleans(), name=label)
    def hello(self, esmtp, name):
        self.expect(f"{'EHLO' if esmtp else 'HELO'} {name}", 2)
        self.greeted, self.esmtp, self.in_mail, self.recipients = True, esmtp, False, set()

    @rule(box=mailbox)
    def mail(self, box):
        if not self.greeted or self.in_mail:
            self.expect(f"MAIL FROM:<{box}>", 5)
            return
        self.expect(f"MAIL FROM:<{box}>", 2)
        self.in_mail = True

    @rule(box=mailbox)
    def mail_with_params(self, box):
        ok = self.greeted and not self.in_mail and self.esmtp
        self.expect(f"MAIL FROM:<{box}> SIZE=1000 BODY=8BITMIME", 2 if ok else 5)
        self.in_mail = self.in_mail or ok

    @rule(local=dot_atom, dom=st.sampled_from(LOCAL_DOMAINS))
    def rcpt_local(self, local, dom):
        if not self.in_mail:
            self.expect(f"RCPT TO:<{local}@{dom}>", 5)
            return
        if any(ch in local for ch in "%!"):
            # Sender-specified routing in the local part is refused from strangers, even for our domains.
            self.expect(f"RCPT TO:<{local}@{dom}>", 5)
            return
        self.expect(f"RCPT TO:<{local}@{dom}>", 2)
        self.recipients.add(f"{local}@{dom}")

    @rule(box=mailbox)
    def rcpt_foreign(self, box):
        assume(box.domain.lower() not in LOCAL_DOMAINS)
        # Not ours and not from a trusted client: relaying is refused, before MAIL too.
        self.expect(f"RCPT TO:<{box}>", 5)

    @rule()
    def data(self):
        if not self.in_mail or not self.recipients:
            self.expect("DATA", 5)
            return
        self.expect("DATA", 3, Action.READ_DATA)
        assert self.m.state is State.DATA
        assert self.m.data_end(None).action is Action.ENQUEUE
        assert reply_class(self.m.queued("Q1")) == 2
        self.in_mail, self.recipients = False, set()

    @rule()
    def rset(self):
        self.expect("RSET", 2)
        self.in_mail, self.recipients = False, set()

    @rule(verb=st.sampled_from(["NOOP", "noop", "HELP"]))
    def harmless(self, verb):
        self.expect(verb, 2)

    @rule(box=mailbox)
    def vrfy(self, box):
        self.expect(f"VRFY {box}", 2)

    @rule(verb=st.sampled_from(["FOO", "XYZZY", "EXPN", "BDAT", "TURN"]))
    def unknown(self, verb):
        self.expect(verb, 5)

    @rule()
    def starttls_unavailable(self):
        self.expect("STARTTLS", replies.TLS_NOT_AVAILABLE.code // 100)

    @rule()
    def helo_without_name(self):
        self.expect("EHLO", 5)  # refused, and the session stays as it was

    @invariant()
    def machine_agrees(self):
        if not hasattr(self, "m"):
            return
        expected = State.FRESH if not self.greeted else State.MAIL if self.in_mail else State.READY
        assert self.m.state is expected
        assert (self.m.transaction is not None) == self.in_mail
        if self.m.transaction is not None:
            assert {r.address for r in self.m.transaction.recipients} == self.recipients


TestSessionModel = SessionModel.TestCase
TestSessionModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
