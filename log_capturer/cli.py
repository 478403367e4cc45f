"""``log-capturer run|check-config -c config.yaml``, ``log-capturer config-reference``.

Exit codes: 0 ok, 1 failure, 2 bad config.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

from . import __version__
from .config.loader import ConfigError, load_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024
"""Allocations from this size get their own mapping, returned to the system when freed.

glibc raises its threshold (up to 32 MiB) each time such a block is freed, after which
socket reads of up to 256 KiB, made by hundreds of threads, come from the per-thread
arenas, which fragment and do not shrink. Fixed at glibc's own starting value, RSS
stays lower with hundreds of containers at the same CPU (benchmarks/README.md, "Figures
behind choices in the code"). ``MALLOC_MMAP_THRESHOLD_`` in the environment is left to
glibc."""


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold (see MMAP_THRESHOLD); False where there is no glibc
    ``mallopt`` (musl, macOS) or the environment sets the threshold itself."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="log-capturer",
        description="Capture Docker container logs exactly once through the Engine API.",
    )
    parser.add_argument("--version", action="version", version=f"log-capturer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "run the daemon until SIGTERM/SIGINT (SIGHUP reloads the config)"),
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

    from .docker.endpoint import EndpointError
    from .logging_setup import configure_logging
    from .supervisor import Supervisor

    configure_logging(config.logging)
    if not fix_mmap_threshold():
        import structlog

        structlog.get_logger(__name__).info(
            "mmap_threshold_left", reason="MALLOC_MMAP_THRESHOLD_ set or no glibc mallopt"
        )
    try:
        supervisor = Supervisor(config, args.config)
    except EndpointError as exc:  # DOCKER_HOST or TLS settings that cannot work
        print(f"log-capturer: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"log-capturer: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return supervisor.run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
