"""DKIM signing (RFC 6376; Ed25519 after RFC 8463) with dkimpy: which keys sign
a message, which header fields they cover, whether a key file is fit to sign
(for ``empath --check``), and new keys with the DNS record to publish.

The signing itself is CPU work on a message already in memory; the only I/O
is reading the key file, each time, so a key replaced on disk is used at once.
dkimpy and cryptography are imported where they are used: every command
loads the config, and mailq or sendmail without keys need neither (they
cost a tenth of a second at each start).
"""

import base64
import email.utils
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.parser import HeaderParser
from email.policy import compat32
from pathlib import Path

from empath.addresses import AddressError, Domain
from empath.config.model import DkimKey

# RFC 6376 §5.4.1: the fields that make up what a reader sees and what the
# message means. Received, Return-Path and Bcc are left out on purpose: they
# change in transit or must not be revealed.
SIGNED = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-message-id",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
)

# RFC 5322 §3.6: fields a message has at most once. Each is signed once more
# than it occurs ("over-signing", RFC 6376 §5.4.2 and §8.15), so that nobody
# can add a second From or Subject, or a Reply-To the author did not write,
# without breaking the signature. List-* fields are not: lists add them.
SINGLE = frozenset(
    {"from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "in-reply-to", "references"}
)

CANONICALIZATION = (b"relaxed", b"relaxed")  # survives the re-folding of header fields in transit
MIN_RSA_BITS = 1024  # RFC 8301 §3.2; keygen makes 2048 by default
KEY_BITS = (1024, 2048, 3072, 4096)


def header_list(names: Sequence[str]) -> list[str]:
    """The h= tag for a message whose header fields are ``names`` (in any case, repeats kept)."""
    counts = Counter(name.lower() for name in names)
    return [name for name in SIGNED for _ in range(counts[name] + (name in SINGLE))]


def from_domain(message: bytes) -> Domain | None:
    """The domain (A-label) of the message's one From address; None when there is not exactly one."""
    header = message.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    parsed = HeaderParser(policy=compat32).parsestr(header.decode("utf-8", "replace"), headersonly=True)
    fields = parsed.get_all("from") or []
    if len(fields) != 1:
        return None
    found = [address for _, address in email.utils.getaddresses([str(fields[0])]) if address]
    if len(found) != 1:
        return None
    local, at, domain = found[0].rpartition("@")
    if not (local and at):
        return None
    try:
        return Domain.name(domain.rstrip("."))
    except AddressError:
        return None


def keys_for(domain: Domain | None, keys: Sequence[DkimKey]) -> list[DkimKey]:
    """The keys of ``domain``, else of its nearest parent that has keys (relaxed alignment, RFC 7489 §3.1.1)."""
    if domain is None:
        return []
    labels = domain.split(".")
    for start in range(len(labels)):
        candidate = ".".join(labels[start:])
        chosen = [key for key in keys if key.domain == candidate]
        if chosen:
            return chosen
    return []


@dataclass
class Signing:
    """What signing a message came to."""

    fields: bytes = b""  # the DKIM-Signature fields, to go on top of the message
    signed: list[DkimKey] = field(default_factory=list)
    failed: list[tuple[DkimKey, str]] = field(default_factory=list)  # a key that should have signed, and why not

    def warnings(self) -> list[str]:
        """A line for each key that should have signed the queued message and did not
        (what the local commands print; the daemon logs ``dkim_failed`` instead)."""
        return [f"queued unsigned by {key.domain} (DKIM selector {key.selector}): {why}" for key, why in self.failed]


def sign(message: bytes, keys: Sequence[DkimKey]) -> Signing:
    """Sign ``message`` with every key of its From domain. Never raises: a key that
    cannot sign is reported in ``failed`` and the message goes on without it."""
    result = Signing()
    chosen = keys_for(from_domain(message), keys)
    if not chosen:
        return result
    from dkim import DKIM

    try:
        signer = DKIM(message, linesep=b"\r\n")
        names = [name.decode("ascii", "replace") for name, _ in signer.headers]
        include = [name.encode() for name in header_list(names)]
    except Exception as exc:  # noqa: BLE001 - dkimpy's parser on anything a client sent: reported, never fatal
        result.failed = [(key, f"the message cannot be signed: {exc}") for key in chosen]
        return result
    for key in chosen:
        try:
            result.fields += signer.sign(
                key.selector.encode(),
                key.domain.encode(),
                key.key_file.read_bytes(),
                signature_algorithm=key.algorithm.encode(),
                canonicalize=CANONICALIZATION,
                include_headers=include,
            )
        except OSError as exc:
            result.failed.append((key, f"cannot read {key.key_file}: {exc.strerror}"))
        except Exception as exc:  # noqa: BLE001 - a bad key or a dkimpy error: reported, the message goes unsigned
            result.failed.append((key, f"{type(exc).__name__}: {exc}"))
        else:
            result.signed.append(key)
    return result


def key_problem(key: DkimKey) -> str | None:
    """Why ``key`` cannot sign, or None. Run by ``empath --check`` and at start, so a
    bad key is a config error, not mail going out unsigned."""
    from dkim import DKIM
    from dkim.crypto import parse_pem_private_key

    path = key.key_file
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if mode & 0o007:
        return f"{path} is open to every user: chmod 600 (or 640, for a group that runs sendmail)"
    try:
        if key.algorithm == "rsa-sha256":
            bits = parse_pem_private_key(data)["modulus"].bit_length()
            if bits < MIN_RSA_BITS:
                return f"{path} is a {bits}-bit RSA key; RFC 8301 asks for at least {MIN_RSA_BITS} bits (2048 is usual)"
        trial = f"From: check@{key.domain}\r\nSubject: check\r\n\r\ncheck\r\n".encode()
        DKIM(trial).sign(key.selector.encode(), key.domain.encode(), data, signature_algorithm=key.algorithm.encode())
    except Exception as exc:  # noqa: BLE001 - dkimpy's key parsers raise assorted types on a bad file
        return f"{path} is not a {key.algorithm} private key (PEM for RSA, base64 for Ed25519): {exc}"
    return None


def problems(keys: Sequence[DkimKey]) -> list[tuple[str, str]]:
    """The keys that cannot sign, each as (its config key, why): this reads the key files."""
    found = []
    for key in keys:
        problem = key_problem(key)
        if problem:
            found.append((f"dkim[{key.index}].key_file", problem))
    return found


def generate(algorithm: str, bits: int = 2048) -> tuple[bytes, str]:
    """A new private key in the form dkimpy reads, and the public key for the p= tag."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if algorithm == "ed25519-sha256":
        private = ed25519.Ed25519PrivateKey.generate()
        return (
            base64.b64encode(private.private_bytes_raw()) + b"\n",
            base64.b64encode(private.public_key().public_bytes_raw()).decode(),
        )
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der).decode()


def txt_record(domain: Domain, selector: str, algorithm: str, public: str) -> str:
    """The zone-file line to publish: the value cut into strings of at most 255 bytes (RFC 1035 §3.3.14)."""
    value = f"v=DKIM1; k={'ed25519' if algorithm == 'ed25519-sha256' else 'rsa'}; p={public}"
    strings = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{selector}._domainkey.{domain}. IN TXT {strings}"


def key_path(directory: Path, domain: Domain, selector: str) -> Path:
    return directory / f"{domain}.{selector}.key"
