"""A message handed to Empath, made into its queue entry, in one place for every
way in: an SMTP session, and the sendmail command (plain or ``-bs``).

Here a message gets Empath's Received header, the From, Date and Message-ID
that a submission lacks, and its DKIM signatures, once, before it is queued:
every delivery attempt then sends the same bytes. Pure but for reading the
DKIM key files; the callers store the result and log what signing came to.
"""

import dataclasses
import email.utils
from collections.abc import Iterable
from dataclasses import dataclass, field

from empath.addresses import Domain, EmailAddress, ReversePath
from empath.config import Config
from empath.message import dkim, stamp
from empath.queue.insert import NewMessage, NewRecipient
from empath.queue.spool import Spool
from empath.rewrite import Rules
from empath.srs import Srs


@dataclass(frozen=True)
class Envelope:
    sender: ReversePath
    recipients: list[NewRecipient]  # after aliases
    given: list[EmailAddress] = field(default_factory=list)  # as given, before aliases; []: the same
    smtputf8: bool = False
    body_type: str = "7BIT"
    dsn_ret: str | None = None
    dsn_envid: str | None = None


@dataclass(frozen=True)
class SmtpClient:
    """Mail from an SMTP session."""

    address: str
    helo: str | None
    listener: str
    protocol: str  # the Received header's "with" (stamp.protocol)
    tls: str | None  # "using TLSv1.3 with cipher ...", None in clear
    auth_user: str | None
    trusted: bool  # in relay.trusted_networks

    @property
    def ours(self) -> bool:
        """The office's own client: a trusted network or an authenticated user."""
        return self.trusted or self.auth_user is not None

    @property
    def signs(self) -> bool:
        """Only our own users' mail is signed, never a stranger's that claims to be from our domain."""
        return self.ours

    @property
    def client_helo(self) -> str:
        return self.helo or ""

    def received(self, hostname: str, queue_id: str, trace_id: str, given: list[EmailAddress], now: float) -> bytes:
        return stamp.received(
            helo=self.helo or "unknown",
            client_address=self.address,
            hostname=hostname,
            with_=self.protocol,
            queue_id=queue_id,
            trace_id=trace_id,
            tls=self.tls,
            recipient=given[0] if len(given) == 1 else None,  # the recipient as given, not its aliases
            now=now,
        )

    def missing_headers(self, data: bytes, sender: ReversePath, queue_id: str, hostname: str, now: float) -> bytes:
        """The office's devices get what they left out (Postfix's local_header_rewrite_clients);
        a stranger's mail stays as it came."""
        if not self.ours:
            return b""
        return stamp.missing_headers(data, str(sender) if sender else None, queue_id, hostname, now)

    def describe(self) -> str:
        return f"from {self.helo} [{self.address}] via {self.listener}"


@dataclass(frozen=True)
class LocalUser:
    """Mail from a program on this host, through the sendmail command."""

    user: str
    full_name: str | None = None  # sendmail -F: for the From header a message lacks
    via: str = "sendmail"
    address = ""
    client_helo = ""
    listener = "sendmail"
    auth_user = None
    ours = True  # the host's own mail
    signs = True

    def received(self, hostname: str, queue_id: str, trace_id: str, given: list[EmailAddress], now: float) -> bytes:
        return stamp.received_local(user=self.user, hostname=hostname, queue_id=queue_id, trace_id=trace_id, now=now)

    def missing_headers(self, data: bytes, sender: ReversePath, queue_id: str, hostname: str, now: float) -> bytes:
        address = sender or f"{self.user}@{hostname}"  # a null sender (-bs) is nobody's address
        author = email.utils.formataddr((self.full_name or "", address))
        return stamp.missing_headers(data, author, queue_id, hostname, now)

    def describe(self) -> str:
        return f"from local user {self.user} via {self.via}"


Origin = SmtpClient | LocalUser


def may_sign(config: Config, origin: Origin) -> bool:
    """Will compose try DKIM keys on this message? (Then it costs milliseconds, not microseconds.)"""
    return origin.signs and bool(config.dkim)


def compose(
    config: Config,
    origin: Origin,
    envelope: Envelope,
    data: Spool,
    queue_id: str,
    now: float,
    trace_id: str,
    rules: Rules | None = None,
) -> tuple[NewMessage, dkim.Signing]:
    """The queue entry for ``data`` as it came from ``origin``, and what DKIM signing came to.

    ``rules``: the office's sender rewriting (rewrite.py), for its own clients' mail only,
    made to the envelope sender and the header section before anything is added or signed.

    ``trace_id`` is used unless the message already carries one of ours (it came back).
    The fields added go into the entry's ``head``; ``data`` becomes its body as it is,
    never copied (a 25 MB message must not be held twice). Only DKIM signing reads it
    whole: the caller bounds how many do at once (smtp/session.py).
    """
    hostname = config.hostname
    events = [("received", origin.describe())]
    if rules is not None and origin.ours:
        envelope, rewritten = _rewritten(envelope, data, rules)
        events += rewritten
    header = data.header_section()
    trace_id = stamp.trace_from(header, hostname) or trace_id
    given = envelope.given or [r.address for r in envelope.recipients]
    head = origin.received(hostname, queue_id, trace_id, given, now) + origin.missing_headers(
        header, envelope.sender, queue_id, hostname, now
    )
    # Signing needs the message whole: a copy, for our own users' mail only.
    signing = dkim.sign(b"".join([head, *data.pieces()]), config.dkim) if may_sign(config, origin) else dkim.Signing()
    head = signing.fields + head
    events += [("dkim", f"signed: d={k.domain} s={k.selector} a={k.algorithm}") for k in signing.signed]
    events += [("dkim", f"not signed: d={k.domain} s={k.selector}: {why}") for k, why in signing.failed]
    message = NewMessage(
        queue_id=queue_id,
        sender=envelope.sender,
        head=head,
        body=data,
        recipients=envelope.recipients,
        received_at=now,
        expires_at=now + config.queue.lifetime,
        client_address=origin.address,
        client_helo=origin.client_helo,
        listener=origin.listener,
        trace_id=trace_id,
        auth_user=origin.auth_user,
        smtputf8=envelope.smtputf8,
        body_type=envelope.body_type,
        dsn_ret=envelope.dsn_ret,
        dsn_envid=envelope.dsn_envid,
        stranger=not origin.ours,
        events=events,
    )
    return message, signing


def _rewritten(envelope: Envelope, data: Spool, rules: Rules) -> tuple[Envelope, list[tuple[str, str]]]:
    """The envelope with its sender rewritten, the header section of ``data`` too; the events saying so."""
    events = []
    sender = envelope.sender
    if sender:
        new = rules.address(sender)
        if new != sender:
            events.append(("rewritten", f"sender {sender} as {new}"))
            envelope = dataclasses.replace(envelope, sender=ReversePath._trusted(new))
    section = data.header_section()
    changed = rules.header_section(section)
    if changed != section:
        data.replace_header_section(changed)
        events.append(("rewritten", "sender addresses in the header (From, Sender, Reply-To)"))
    return envelope, events


Given = tuple[EmailAddress, Domain, tuple[str, ...], str | None, tuple[EmailAddress, ...]]


def expanded(given: list[Given]) -> list[NewRecipient]:
    """The queue's recipients of the recipients given — (address, domain, NOTIFY, ORCPT, what
    its aliases expand to, () if none) — each alias's targets in its place, each address once.
    A target keeps its recipient's NOTIFY, and its ORCPT, or the recipient as the original
    (RFC 3461 §4.2; ASCII only): reports name the address the sender wrote."""
    out: dict[str, NewRecipient] = {}
    for address, domain, notify, orcpt, targets in given:
        if not targets:
            out.setdefault(address, NewRecipient(address, domain, notify, orcpt))
            continue
        # An internationalized original is not written as an ORCPT: RFC 6533's utf-8-addr
        # forms are not what the xtext of our DSN parameters makes of it.
        original = orcpt or (f"rfc822;{address}" if address.isascii() else None)
        for target in targets:
            out.setdefault(target, NewRecipient(target, target.domain, notify, original))
    return list(out.values())


def entries(
    message: NewMessage,
    aliased: Iterable[tuple[EmailAddress, tuple[EmailAddress, ...]]],
    ours: tuple[Domain, ...],
    srs: Srs | None,
    now: float,
    new_id: str,
) -> tuple[NewMessage, ...]:
    """What an accepted message becomes in the queue: itself; or, when an alias sends some
    of its recipients off-site and SRS is on, those in a copy of their own whose sender is
    rewritten (srs.py), so that the next hop's SPF check finds us, not the original sender's
    domain. Mail that is not forwarded, and mail from our own domains (SPF passes for us
    already), keeps its sender. A message whose every recipient is forwarded keeps its id."""
    sender = message.sender
    if srs is None or not sender or sender.rpartition("@")[2] in ours:
        return (message,)
    off_site = {t for _, targets in aliased for t in targets if t.domain not in ours}
    moving = [r for r in message.recipients if r.address in off_site]
    rewritten = srs.forward(sender, now) if moving else None
    if rewritten is None:
        return (message,)
    staying = [r for r in message.recipients if r.address not in off_site]
    note = ("received", f"forwarded by an alias: the sender {sender} rewritten (SRS)")
    copy = dataclasses.replace(
        message,
        queue_id=new_id if staying else message.queue_id,
        sender=ReversePath._trusted(rewritten),
        recipients=moving,
        events=[*message.events, note],
    )
    return (dataclasses.replace(message, recipients=staying), copy) if staying else (copy,)
