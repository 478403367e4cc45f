"""``log-capturer run|check-config -c config.yaml``, ``log-capturer config-reference``.

Exit codes: 0 ok, 1 failure, 2 bad config.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .config.loader import ConfigError, load_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="log-capturer",
        description="Capture Docker container logs exactly once through the Engine API.",
    )
    parser.add_argument("--version", action="version", version=f"log-capturer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "run the daemon until SIGTERM/SIGINT"),
        ("check-config", "validate the configuration and print it with defaults filled in"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument(
            "-c",
            "--config",
            default=os.environ.get("LOG_CAPTURER_CONFIG", "config.yaml"),
            help="YAML config file (default: $LOG_CAPTURER_CONFIG or ./config.yaml)",
        )
    sub.add_parser(
        "config-reference",
        help="print every configuration key with its description and default, as YAML",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config-reference":
        from .config.reference import render_reference

        print(render_reference(), end="")
        return EXIT_OK
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"log-capturer: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        import yaml

        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
        return EXIT_OK

    from .logging_setup import configure_logging
    from .monitor import faults
    from .supervisor import Supervisor

    configure_logging(config.logging)
    try:
        faults.install()
    except ValueError as exc:
        print(f"log-capturer: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        supervisor = Supervisor(config)
    except OSError as exc:
        print(f"log-capturer: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return supervisor.run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
