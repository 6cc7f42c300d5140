"""Queue ids: 16 characters, unique, sorted by time."""

import pytest

from empath.queue import ids

ALPHABET = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
T0 = 1_700_000_000.0


def test_length_and_alphabet():
    for queue_id in (ids.new_id(), ids.new_id(T0), ids.new_id(0.0)):
        assert len(queue_id) == 16
        assert set(queue_id) <= ALPHABET
        assert not set(queue_id) & set("ILOU")


def test_unique_over_many():
    many = [ids.new_id() for _ in range(500)]
    assert len(set(many)) == len(many)


def test_unique_within_one_millisecond():
    same_time = [ids.new_id(T0) for _ in range(200)]
    assert len(set(same_time)) == len(same_time)
    assert len({queue_id[:10] for queue_id in same_time}) == 1


@pytest.mark.parametrize("step", [0.001, 0.5, 1.0, 3600.0, 86400.0 * 365])
def test_sort_by_time(step):
    times = [T0 + i * step for i in range(50)]
    made = [ids.new_id(t) for t in times]
    assert sorted(made) == made


def test_sorts_across_a_digit_carry():
    # 31 ms and 32 ms differ in the second-to-last time digit.
    assert ids.new_id(0.031) < ids.new_id(0.032) < ids.new_id(1.0)


def test_time_prefix_is_milliseconds():
    assert ids.new_id(0.0)[:10] == "0" * 10
    assert ids.new_id(0.001)[:10] == "0" * 9 + "1"
    assert ids.new_id(0.032)[:10] == "0" * 8 + "10"
    # Ten base32 digits of milliseconds last some 35,000 years.
    assert len(ids.new_id(32.0**10 / 1000 - 1)) == 16


@pytest.mark.parametrize("text", [ids.new_id(), ids.new_id(0), "0123456789ABCDEF"])
def test_valid_queue_ids(text):
    assert ids.valid(text)


@pytest.mark.parametrize(
    "text",
    ["", "../x", "1;id", "0123456789ABCDE", "0123456789ABCDEFG", "0123456789abcdef", "0123456789ABCDEI"]
    + ["01234567\n9ABCDEF", "0123456789ABCDEF\n", " 0123456789ABCDEF", "0123456789ABCDE/", "0" * 200],
)
def test_invalid_queue_ids(text):
    assert not ids.valid(text)
