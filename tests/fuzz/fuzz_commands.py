"""Fuzz target: the SMTP command parser (parse_command, parse_mail, parse_rcpt).

``test_one_input`` is importable without atheris (the regression replay in
tests/unit/test_fuzz_regressions.py calls it); atheris is only needed to fuzz:
    scripts/fuzz commands 60
Only CommandError may come out of the parsers; anything else is a crash.
"""

import contextlib
import sys

from empath.smtp.commands import CommandError, parse_command, parse_mail, parse_rcpt


def test_one_input(data: bytes) -> None:
    # The line as read from the socket, its CRLF already taken off.
    line = data.split(b"\r\n", 1)[0]
    try:
        command = parse_command(line)
    except CommandError:
        return
    arg = command.arg
    with contextlib.suppress(CommandError):
        parse_mail(arg)
    for utf8 in (False, True):
        with contextlib.suppress(CommandError):
            parse_rcpt(arg, utf8)
    # The argument with its verb prefix, as MAIL FROM:/RCPT TO: carry it.
    with contextlib.suppress(CommandError):
        parse_mail("FROM:" + arg)
    with contextlib.suppress(CommandError):
        parse_rcpt("TO:" + arg, True)


if __name__ == "__main__":
    import atheris

    atheris.Setup(sys.argv, atheris.instrument_func(test_one_input), enable_python_coverage=True)
    atheris.instrument_all()
    atheris.Fuzz()
