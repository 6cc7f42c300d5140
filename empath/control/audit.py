"""Audit lines for control actions (empath.log.audit): who, what, with what, and the result.

Never the token: a caller is named by its token's name, or by its uid.
"""

import logging
from typing import Any

from empath.log import audit

MAX_IDS_SHOWN = 20


def _args(args: dict[str, Any]) -> dict[str, Any]:
    """The arguments as the audit line shows them: a long list of ids as its count."""
    shown = dict(args)
    ids = shown.get("ids")
    if isinstance(ids, list) and len(ids) > MAX_IDS_SHOWN:
        shown["ids"] = f"{len(ids)} queue ids, first {ids[0]}"
    return shown


def summary(result: Any) -> str:
    """A result in a few words for the audit line."""
    if isinstance(result, dict):
        return " ".join(f"{key}={value}" for key, value in result.items() if not isinstance(value, dict | list))
    return str(result)


def action(who: str, uid: int, verb: str, args: dict[str, Any], result: str, via: str = "socket") -> None:
    audit("control", who=who, uid=uid, verb=verb, args=_args(args) or None, result=result or "ok", via=via)


def denied(who: str, verb: str, reason: str) -> None:
    audit("control_denied", level=logging.WARNING, who=who, verb=verb, reason=reason)
