"""Checks of the [control] section against the system: the group exists, the tokens file loads."""

import grp

from empath.config.model import ControlSettings
from empath.control import tokens


def problems(settings: ControlSettings) -> list[tuple[str, str]]:
    """Problems with what [control] names on this system, as (key, what is wrong)."""
    problems = []
    if settings.group is not None:
        try:
            grp.getgrnam(settings.group)
        except KeyError:
            problems.append(("control.group", f"there is no group {settings.group!r} on this system"))
    if settings.tokens_file is not None:
        try:
            tokens.read(settings.tokens_file)
        except tokens.TokensFileError as exc:
            problems.append(("control.tokens_file", str(exc)))
    return problems
