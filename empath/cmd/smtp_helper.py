"""Entry point of an SMTP helper process: the daemon starts it as ``python -m empath.cmd.smtp_helper``."""

import sys


def main() -> int:
    from gevent import monkey

    monkey.patch_all()  # first thing, before anything imports socket or ssl

    from empath.delivery.verify import standalone
    from empath.smtp.procs.child import main as run

    return run(sys.argv[1:], standalone)


if __name__ == "__main__":
    sys.exit(main())
