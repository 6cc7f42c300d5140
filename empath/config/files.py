"""Checks of the files a config names that the config itself can make: the TLS
pair loads, the users file and the log's directory exist, the smarthost's
password file, the CA file, the aliases files, the senders table and each
local domain's recipients table read (and the aliases expand). (The daemon
adds the checks of the parts that own other files: plug-ins, DKIM keys, the
control socket's tokens.)
"""

import ssl
from pathlib import Path

from empath import aliases, recipients, rewrite, senders, srs
from empath.config.model import Config
from empath.watched import FileError, Watched


def check_files(config: Config) -> list[tuple[str, str]]:
    """Problems with the files the config names, each as (the key that names it, what is
    wrong): they must exist and load."""
    problems = []
    if config.tls_certificate is not None and config.tls_key is not None:
        try:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(config.tls_certificate), str(config.tls_key))
        except (OSError, ssl.SSLError) as exc:
            problems.append(("tls.certificate", f"cannot load {config.tls_certificate} with its key: {exc}"))
    for i, listener in enumerate(config.listeners):
        if listener.tls_ciphers is not None:
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).set_ciphers(listener.tls_ciphers)
            except ssl.SSLError:
                problems.append(
                    (f"listeners[{i}].tls_ciphers", f"OpenSSL takes no cipher from {listener.tls_ciphers!r}")
                )
    if config.users_file is not None and not config.users_file.is_file():
        problems.append(
            ("auth.users_file", f"{config.users_file} does not exist (create it with: empathctl user add NAME)")
        )
    if config.log_file is not None and not config.log_file.parent.is_dir():
        problems.append(("server.log_file", f"directory {config.log_file.parent} does not exist"))
    if config.smarthost is not None and config.smarthost.password_file is not None:
        try:
            read_password(config.smarthost.password_file)
        except ValueError as exc:
            problems.append(("smarthost.password_file", str(exc)))
    problems += alias_problems(config)
    if config.rewrite.sender_canonical is not None:
        try:
            rewriter_of(config)
        except FileError as exc:
            problems.append(("rewrite.sender_canonical", str(exc)))
    if config.srs.secret_file is not None:
        try:
            srs_of(config)
        except FileError as exc:
            problems.append(("srs.secret_file", str(exc)))
    if config.senders_file is not None:
        try:
            senders.Senders(config.senders_file)
        except FileError as exc:
            problems.append(("auth.senders", str(exc)))
    for domain, policy in config.domains.items():
        if policy.recipients is not None:
            try:
                recipients.Table(policy.recipients)
            except FileError as exc:
                problems.append((f"domains.{domain}.recipients", str(exc)))
    if config.delivery.tls_ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(config.delivery.tls_ca_file))
        except (OSError, ssl.SSLError) as exc:
            problems.append(("delivery.tls_ca_file", f"cannot load {config.delivery.tls_ca_file}: {exc}"))
    return problems


def read_password(path: Path) -> str:
    """The first line of a password file; ValueError if it cannot be read or is empty."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not lines or not lines[0]:
        raise ValueError(f"{path} is empty")
    return lines[0]


def alias_problems(config: Config) -> list[tuple[str, str]]:
    """The aliases files that cannot be read, or else what is wrong with what they say
    taken together (newaliases says these too)."""
    problems = []
    a = config.aliases
    for key, path, virtual in (("aliases.file", a.file, False), ("aliases.virtual", a.virtual, True)):
        if path is not None:
            try:
                aliases.AliasesFile(path, virtual)
            except FileError as exc:
                problems.append((key, str(exc)))
    if problems:
        return problems
    tables = aliases.Aliases(a.file, a.virtual, config.hostname, a.expansion_limit, local_domains=config.local_domains)
    return tables.problems()


def alias_tables(config: Config, read_srs: bool = True) -> aliases.Aliases:
    """The aliases the config names, read (watched.FileError if one cannot be), with the
    SRS secrets unless ``read_srs`` is false."""
    a = config.aliases
    srs = srs_of(config) if read_srs else None
    return aliases.Aliases(a.file, a.virtual, config.hostname, a.expansion_limit, srs, config.local_domains)


def srs_of(config: Config) -> srs.Srs | None:
    """The config's Sender Rewriting Scheme, its secrets read (watched.FileError if they
    cannot be); None when it names no secret file."""
    s = config.srs
    if s.secret_file is None or config.srs_domain is None:
        return None
    keys = Watched(s.secret_file, srs.parse_keys, "SRS secrets").value
    return srs.Srs(keys, config.srs_domain, s.max_age)


def rewriter_of(config: Config) -> rewrite.Rewriter:
    """The office's sender rewriting as the config says (watched.FileError if its table cannot be read)."""
    return rewrite.Rewriter(config.rewrite.sender_canonical, config.rewrite.masquerade_domains)
