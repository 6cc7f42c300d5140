"""Who gets a connection: the slots of strangers, and stress mode (pure).

Clients outside ``trusted_networks`` share a bounded number of sessions: one
pool on the smtp listeners (the MX port), another on the submission and
smtps listeners, so that strangers on port 25 never crowd out people coming
to log in. Trusted clients are counted in neither: a full server still
serves the office's own printers and apps. Everyone, trusted or not, is
bounded per address (``max_connections_per_client``), and strangers also by
how fast they connect (smtp/anvil.py).

When a pool is ``stress_threshold`` percent full, the server is under
stress: strangers that connect then get short timeouts and no patience for
errors or idle commands (smtp/session.py), as Postfix does.
"""

from collections.abc import Mapping

from empath.config.model import Limits
from empath.smtp import replies
from empath.smtp.replies import Reply

SMTP, SUBMISSION = "smtp", "submission"


def pool_of(mode: str) -> str:
    """The strangers' pool a listener's sessions count against."""
    return SMTP if mode == "smtp" else SUBMISSION


def caps(limits: Limits) -> dict[str, int]:
    return {SMTP: limits.max_connections, SUBMISSION: limits.max_submission_connections}


def refusal(
    limits: Limits, trusted: bool, pool: str, strangers: Mapping[str, int], from_client: int, too_fast: bool
) -> Reply | None:
    """Why a new connection is refused, or None. ``strangers``: the untrusted sessions
    open in each pool; ``from_client``: those open from this address; ``too_fast``: it
    connects faster than its rate allows (only asked of strangers)."""
    if from_client >= limits.max_connections_per_client:
        return replies.TOO_MANY_FROM_CLIENT
    if trusted:
        return None
    if strangers.get(pool, 0) >= caps(limits)[pool]:
        return replies.TOO_MANY_CONNECTIONS
    if too_fast:
        return replies.TOO_FAST_FROM_CLIENT
    return None


def stressed(limits: Limits, strangers: Mapping[str, int]) -> bool:
    """Is a strangers' pool at least stress_threshold percent full?"""
    return any(strangers.get(pool, 0) * 100 >= cap * limits.stress_threshold for pool, cap in caps(limits).items())
