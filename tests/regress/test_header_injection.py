"""Header and reply injection through a trailing line break.

Python's ``$`` also matches just before a final ``\\n``, so a check written
``re.match(r"^...$", text)`` lets ``"text\\n"`` through. Through the places
below that one character became:

- ``sendmail -F "Eve\\r\\nBcc: victim"``: header fields of the caller's choosing
  in the From line, then signed with the site's DKIM key (web forms pass user
  input to -F);
- ``sendmail "a@b.test\\n"``: a recipient whose domain ends in a line feed,
  sent on as a bare LF inside RCPT TO (SMTP smuggling's raw material);
- a plug-in's ``Reject(550, "5.7.1\\n", …)`` or ``Headers(add=[("X-A\\n", …)])``:
  a bare LF in an SMTP reply, or an empty line that ends the header early.

Every one must be refused where it enters. A failure here means such a value
was accepted.
"""

import pytest

from empath import addresses
from empath.cmd.sendmail import UsageError, parse_args
from empath.plugins import api


@pytest.mark.parametrize("name", ["Eve\r\nBcc: victim@x.test", "Eve\nX-Injected: 1", "Eve\x00"])
def test_sendmail_full_name_with_a_line_break_is_refused(name):
    with pytest.raises(UsageError, match="-F"):
        parse_args(["-F", name, "a@b.test"])


@pytest.mark.parametrize("text", ["b.test\n", "b.test\r\n", "b.\ntest"])
def test_a_domain_ending_in_a_line_feed_is_not_a_domain(text):
    with pytest.raises(addresses.AddressError):
        addresses.parse_domain(text)
    with pytest.raises(addresses.AddressError):
        addresses.parse_mailbox(f"a@{text}")


@pytest.mark.parametrize(
    "make",
    [
        lambda: api.Reject(550, "5.7.1\n", "blocked"),
        lambda: api.Reject(550, "5.7.1", "blocked\n"),
        lambda: api.Headers(add=[("X-Spam\n", "yes")]),
        lambda: api.Headers(add=[("X-Spam", "yes\n")]),
    ],
)
def test_a_plugin_decision_with_a_trailing_line_feed_is_refused(make):
    with pytest.raises(api.DecisionError):
        make()
