"""Fuzz target: the control socket's request parser (empath.control.protocol.parse).

``test_one_input`` is importable without atheris (the regression replay in
tests/unit/test_fuzz_regressions.py calls it); atheris is only needed to fuzz:
    scripts/fuzz control 60
Only ProtocolError may come out of the parser; what it accepts must be a verb
of the table with arguments that verb knows, ready to be sent back as JSON.
"""

import json
import sys

from empath.control.protocol import VERBS, ProtocolError, parse


def test_one_input(data: bytes) -> None:
    # One line as the daemon reads it, its newline taken off.
    line = data.split(b"\n", 1)[0]
    try:
        request = parse(line)
    except ProtocolError:
        return
    verb = VERBS[request.verb]
    assert set(request.args) <= set(verb.args), request
    assert set(verb.required) <= set(request.args), request
    json.dumps(request.args)


if __name__ == "__main__":
    import atheris

    atheris.Setup(sys.argv, atheris.instrument_func(test_one_input), enable_python_coverage=True)
    atheris.instrument_all()
    atheris.Fuzz()
