"""``empath``: run the daemon in the foreground, or check its config."""

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="empath", description="Empath mail transfer agent")
    # The default is cmd/config.py's DEFAULT_PATH, which cannot be imported before gevent patches.
    parser.add_argument("--config", "-c", help="the config file (default: $EMPATH_CONFIG or /etc/empath/empath.toml)")
    parser.add_argument("--check", action="store_true", help="validate the config and exit (0 good, 1 bad)")
    args = parser.parse_args(argv)

    if not args.check:
        # First thing, before anything imports socket or ssl.
        from gevent import monkey

        monkey.patch_all()

    from empath import daemon
    from empath.cmd.config import loaded, local_path
    from empath.config import risks

    config = loaded("empath", local_path(args.config), daemon.check)
    if config is None:
        return 1
    if args.check:
        for line in risks.warnings(config):
            print(f"empath: warning: {line}", file=sys.stderr)
        print(f"empath: {config.path} is valid")
        return 0
    return _run(config)


def _run(config) -> int:
    from empath import log
    from empath.daemon import Daemon
    from empath.queue.database import QueueError

    log.setup(config.log_level, config.log_format, config.log_file)
    daemon = Daemon(config)
    try:
        daemon.run()
    except (QueueError, OSError) as exc:
        print(f"empath: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
