"""The Sender Rewriting Scheme (empath/srs.py): forward, reverse, forged and expired."""

import pytest

from empath.srs import DAY, Srs, SrsError, parse_keys

NOW = 1_800_000_000.0
SRS = Srs((b"this is the current secret",), "office.test")


def local(address: str) -> str:
    return address.rpartition("@")[0]


def test_a_forwarded_sender_turns_back_into_itself():
    rewritten = SRS.forward("alice@far.example", NOW)
    assert rewritten is not None and rewritten.endswith("@office.test")
    assert rewritten.startswith("SRS0=") and "=far.example=alice@" in rewritten
    assert SRS.reverse(local(rewritten), NOW + 3 * DAY) == "alice@far.example"
    # Case may be lost on the way: the hash is base32, the data compared without it.
    assert SRS.reverse(local(rewritten).upper().replace("FAR.EXAMPLE=ALICE", "far.example=alice"), NOW) == (
        "alice@far.example"
    )


def test_an_srs0_from_another_forwarder_becomes_srs1_and_back():
    theirs = "SRS0=abcdef=ab=far.example=alice@other.example"
    rewritten = SRS.forward(theirs, NOW)
    assert rewritten is not None and rewritten.startswith("SRS1=")
    assert "=other.example==abcdef=ab=far.example=alice@office.test" in rewritten
    assert SRS.reverse(local(rewritten), NOW) == theirs  # back to the other forwarder, which reverses its own
    chained = SRS.forward(rewritten.replace("@office.test", "@third.example"), NOW)
    assert chained is not None and SRS.reverse(local(chained), NOW) == theirs  # the first forwarder kept


def test_an_old_key_still_verifies_while_the_new_one_signs():
    old = Srs((b"last year's secret",), "office.test")
    made = old.forward("alice@far.example", NOW)
    rotated = Srs((b"this year's secret", b"last year's secret"), "office.test")
    assert rotated.reverse(local(made), NOW) == "alice@far.example"
    assert rotated.forward("alice@far.example", NOW) != made


@pytest.mark.parametrize(
    "address, why",
    [
        ("alice", "not an SRS address"),
        ("SRS0=xxxxxx=ab=far.example=alice", "not an SRS address made here"),  # forged
        ("SRS0=abc=far.example", "malformed"),
        ("SRS0==ab=far.example=alice", "malformed"),
        ("SRS1=xxxxxx=other.example==abcdef=ab=far.example=alice", "not an SRS address made here"),
        ("SRS1=xxxxxx=other.example=abcdef", "not an SRS address made here"),
    ],
)
def test_a_bad_srs_address_is_refused(address, why):
    with pytest.raises(SrsError, match=why):
        SRS.reverse(address, NOW)


def test_an_srs_address_expires():
    made = local(SRS.forward("alice@far.example", NOW))
    assert SRS.reverse(made, NOW + 21 * DAY) == "alice@far.example"
    with pytest.raises(SrsError, match="expired"):
        SRS.reverse(made, NOW + 23 * DAY)


def test_a_sender_too_long_to_rewrite_is_left_alone():
    assert SRS.forward("a" * 50 + "@far.example", NOW) is None


def test_a_quoted_local_part_is_not_rewritten():
    assert SRS.forward('"a b"@far.example', NOW) is None  # no valid SRS address holds it


def test_the_hash_binds_where_the_domain_ends_and_the_local_part_begins():
    issued = local(SRS.forward("z@victim.comx.attacker.net", NOW))
    _, hashed, tt, _, _ = issued.split("=", 4)
    moved = f"SRS0={hashed}={tt}=victim.com=x.attacker.netz"  # the same characters, split elsewhere
    with pytest.raises(SrsError, match="not an SRS address made here"):
        SRS.reverse(moved, NOW)


def test_original_is_for_our_srs_addresses_only():
    made = SRS.forward("alice@far.example", NOW)
    assert SRS.original(made, NOW) == "alice@far.example"
    assert SRS.original(made.replace("@office.test", "@other.test"), NOW) is None
    assert SRS.original("alice@office.test", NOW) is None


def test_the_secrets_file():
    keys = parse_keys(
        "# the first signs\n  first secret, long enough  \n\nsecond secret, long enough   # last year's\n"
    )
    assert keys == (b"first secret, long enough", b"second secret, long enough")
    with pytest.raises(ValueError, match="line 1: a secret must be at least 16 characters"):
        parse_keys("short\n")
    with pytest.raises(ValueError, match="no secret in it"):
        parse_keys("# nothing\n")
