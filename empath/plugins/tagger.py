"""A shipped plug-in: tag messages in a header, by rules (the data hook).

Each rule matches a regular expression (Python ``re.search``) against one
field of the message: ``sender``, ``recipient`` (any of them), ``client``
(the client's IP address), ``auth_user``, ``helo`` or ``header:NAME`` (any
field called NAME). The tags of every rule that matches are written, comma
separated, in one header (``X-Empath-Tag`` unless ``header`` says
otherwise), in place of any the client sent.

    [[plugins]]
    name = "tagger"
    hook = "data"
    call = "empath.plugins.tagger:tag"
    [plugins.options]
    header = "X-Empath-Tag"
    rules = [
      { field = "sender", pattern = "@lists\\.example\\.org$", tag = "list" },
      { field = "header:Subject", pattern = "(?i)invoice", tag = "invoice" },
    ]
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any

from empath.plugins.api import Context, Headers


def values(ctx: Context, field: str) -> Iterable[str]:
    if field.lower().startswith("header:"):
        return ctx.header(field[len("header:") :])
    if field == "recipient":
        return ctx.recipients
    value = {"sender": ctx.sender, "client": ctx.client_address, "auth_user": ctx.auth_user, "helo": ctx.helo}[field]
    return [value] if value is not None else []


def matches(ctx: Context, rule: Mapping[str, Any]) -> bool:
    pattern = re.compile(rule["pattern"])
    return any(pattern.search(value) for value in values(ctx, rule["field"]))


def tag(ctx: Context) -> Headers:
    """The tags in the header; with none, the header is still removed, so that a
    client cannot forge a tag that filters downstream trust."""
    name = ctx.options.get("header", "X-Empath-Tag")
    tags = list(dict.fromkeys(str(rule["tag"]) for rule in ctx.options.get("rules", ()) if matches(ctx, rule)))
    if not tags:
        return Headers(remove=[name])
    return Headers(replace=[(name, ", ".join(tags))])
