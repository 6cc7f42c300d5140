"""Logging: one event per line, as text or JSON, to stderr or a file.

Code logs an event name and fields: ``event(log, "queued", queue_id=..., size=...)``.
The text form reads ``queued queue_id=... size=...``; the JSON form is one
object per line with ``time``, ``level``, ``logger``, ``event`` and the fields.
The same thing always has the same field name (docs/logging.md lists them);
the delivery and reject events' text forms read like Postfix's lines.

``audit(name, ...)`` writes a marked event (``audit=true``, logger
``empath.audit``) that no log level hides: AUTH outcomes, control actions,
config reloads. ``set_level(name)`` changes the level at run time.
"""

import json
import logging
import logging.handlers
import re
import sys
import time
from pathlib import Path
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

AUDIT = logging.getLogger("empath.audit")
AUDIT.setLevel(logging.INFO)  # audit events pass whatever the level of the rest

# A reply such as "450 4.2.1 mailbox busy": its code, for the ``code`` field.
_REPLY_CODE = re.compile(r"([2-5][0-9][0-9])(?:[ -]|$)")


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def audit(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """An audit event: AUTH success or failure, a control action, a config reload.

    Never pass a password, an AUTH blob or a token.
    """
    AUDIT.log(level, name, extra={"fields": {**fields, "audit": True}})


def reply_code(reply: str | None) -> int | None:
    """The SMTP reply code a reply text starts with, if it is one (not for local errors)."""
    m = _REPLY_CODE.match(reply or "")
    return int(m.group(1)) if m else None


def set_level(name: str) -> None:
    """Change the log level of the running process (the audit log is not affected)."""
    try:
        level = LEVELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {name!r}; one of {', '.join(LEVELS)}") from None
    logging.getLogger().setLevel(level)


# A value with one of these is quoted (JSON string syntax), so the line still splits on spaces.
_QUOTE = re.compile(r'[ "=\\]')


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text == "" or _QUOTE.search(text) or not text.isprintable():
        return json.dumps(text, ensure_ascii=False)
    return text


def _postfix_delivery(fields: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The delivery event as Postfix writes it: ``to=<…> relay=… delay=… dsn=… status=sent (250 …)``.

    The names are the event's own (to, dsn, status); only the values are
    shaped as Postfix shows them: the address in angle brackets, the reply
    in parentheses after the status, the code and domain left to JSON.
    """
    rest = dict(fields)
    for key in ("to", "status", "code", "dsn", "reply", "domain"):
        rest.pop(key, None)
    parts = []
    if "queue_id" in rest:
        parts.append(f"queue_id={_value(rest.pop('queue_id'))}")
    parts.append(f"to=<{fields.get('to', '')}>")
    for key in ("relay", "delay", "attempt"):
        if rest.get(key) is not None:
            parts.append(f"{key}={_value(rest.pop(key))}")
    if fields.get("dsn"):
        parts.append(f"dsn={fields['dsn']}")
    reply = str(fields.get("reply") or "").replace("\n", " ").replace("\r", " ")
    parts.append(f"status={fields.get('status')} ({reply})")
    return parts, rest


def _postfix_reject(fields: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """A refusal as Postfix writes it: ``RCPT from unknown[192.0.2.1]: 554 5.7.1 Relay access denied;``
    then ``from=<…> to=<…> helo=<…>``. Empath looks up no client names: always ``unknown``.

    The fail2ban filter (conf/fail2ban/) reads this shape; keep it stable.
    """
    rest = dict(fields)
    for key in ("command", "client", "code", "dsn", "reply", "from", "to", "helo"):
        rest.pop(key, None)
    reply = " ".join(str(part) for part in (fields.get("code"), fields.get("dsn"), fields.get("reply")) if part)
    parts = [f"{fields.get('command')} from unknown[{fields.get('client')}]: {reply};"]
    for key in ("from", "to", "helo"):
        if fields.get(key) is not None:
            parts.append(f"{key}=<{fields[key]}>")
    return parts, rest


# Events whose text form is not plain ``key=value`` pairs, by logger and name.
TEXT_RENDERINGS = {("empath.delivery", "delivery"): _postfix_delivery, ("empath.smtp", "reject"): _postfix_reject}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = getattr(record, "fields", {})
        name = record.getMessage()
        parts = [f"{stamp}.{int(record.msecs):03d}Z", record.levelname.lower(), record.name, name]
        render = TEXT_RENDERINGS.get((record.name, name))
        if render is not None:
            shown, fields = render(fields)
            parts += shown
        parts += [f"{key}={_value(value)}" for key, value in fields.items() if value is not None]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            if value is not None:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def _skip_unused_record_fields() -> None:
    # Neither formatter prints the caller's file and line, the thread or the
    # process: not working them out for every record saves a stack walk and
    # a few lookups per event, which the logging HOWTO's "Optimization"
    # section recommends (a measurable share of CPU at hundreds of messages a
    # second, several events each).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def setup(level: str, fmt: str, file: Path | None) -> None:
    _skip_unused_record_fields()
    # A file is watched: when logrotate (conf/logrotate/empath) moves it away, the next
    # record goes to a new file at the path, with no signal to send.
    handler: logging.Handler = logging.handlers.WatchedFileHandler(file) if file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    logging.getLogger("peewee").setLevel(logging.WARNING)
