"""Fuzz target: the address parser (split_path, parse_path, parse_mailbox, parse_helo).

``test_one_input`` is importable without atheris; fuzz with
    scripts/fuzz addresses 60
Only AddressError (NeedsSMTPUTF8 is one) may come out; anything else is a crash.
"""

import contextlib
import sys

from empath.addresses import AddressError, parse_helo, parse_mailbox, parse_path, split_path


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    with contextlib.suppress(AddressError):
        parse_helo(text)
    for utf8 in (False, True):
        with contextlib.suppress(AddressError):
            parse_mailbox(text, utf8)
        for allow_null in (False, True):
            with contextlib.suppress(AddressError):
                parse_path(text, utf8, allow_null)
    try:
        path, rest = split_path(text)
    except AddressError:
        return
    assert isinstance(path, str) and isinstance(rest, str)
    with contextlib.suppress(AddressError):
        parse_path(path, True, True)


if __name__ == "__main__":
    import atheris

    atheris.Setup(sys.argv, atheris.instrument_func(test_one_input), enable_python_coverage=True)
    atheris.instrument_all()
    atheris.Fuzz()
