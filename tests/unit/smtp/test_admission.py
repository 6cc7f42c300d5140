"""Who gets a connection (smtp/admission.py, pure): the strangers' pools, trusted clients, stress."""

from dataclasses import replace

import pytest

from empath.config.model import Limits
from empath.smtp import admission, replies

LIMITS = replace(Limits(), max_connections=10, max_submission_connections=4, max_connections_per_client=3)


@pytest.mark.parametrize(
    "trusted, pool, strangers, from_client, too_fast, expected",
    [
        (False, "smtp", {}, 0, False, None),
        (False, "smtp", {"smtp": 9}, 2, False, None),
        (False, "smtp", {"smtp": 10}, 0, False, replies.TOO_MANY_CONNECTIONS),
        # The MX port's strangers never take the submission pool's places, nor the other way round.
        (False, "submission", {"smtp": 10}, 0, False, None),
        (False, "submission", {"submission": 4}, 0, False, replies.TOO_MANY_CONNECTIONS),
        (False, "smtp", {"submission": 4}, 0, False, None),
        # Trusted clients count against neither pool, only against the per-address cap.
        (True, "smtp", {"smtp": 10, "submission": 4}, 0, False, None),
        (True, "smtp", {}, 3, False, replies.TOO_MANY_FROM_CLIENT),
        (False, "smtp", {}, 3, False, replies.TOO_MANY_FROM_CLIENT),
        (False, "smtp", {}, 0, True, replies.TOO_FAST_FROM_CLIENT),
    ],
)
def test_refusal(trusted, pool, strangers, from_client, too_fast, expected):
    assert admission.refusal(LIMITS, trusted, pool, strangers, from_client, too_fast) == expected


def test_pools_by_listener_mode():
    assert [admission.pool_of(mode) for mode in ("smtp", "submission", "smtps")] == ["smtp", "submission", "submission"]


@pytest.mark.parametrize(
    "strangers, stressed",
    [({}, False), ({"smtp": 7}, False), ({"smtp": 8}, True), ({"submission": 3}, False), ({"submission": 4}, True)],
)
def test_stress_starts_at_the_threshold_of_either_pool(strangers, stressed):
    assert admission.stressed(replace(LIMITS, stress_threshold=80), strangers) is stressed
