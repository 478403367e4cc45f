"""``log-capturer run|check-config -c config.yaml``, ``log-capturer config-reference``.

Exit codes: 0 ok, 1 failure, 2 bad config.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

from . import __version__

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


MALLOC_TUNABLES = "glibc.malloc.tcache_count=0"
"""glibc tunables the daemon runs with: no per-thread caches of freed chunks.

glibc keeps up to 7 freed chunks of each size class per thread, counted as in use; with a
thread per container they fill for many minutes, and resident memory rose with them
(240 KB/min in a 9-minute soak with churn, flat without them: benchmarks/README.md,
"Memory"). Python's own allocator serves every object up to 512 bytes, so they save
little here (backlog CPU: same README). glibc reads tunables only as a process starts:
:func:`exec_with_malloc_tunables` starts the daemon again, same pid, with them set.
``GLIBC_TUNABLES`` in the environment is left to glibc."""


def exec_with_malloc_tunables() -> None:
    """Replace this process by itself with :data:`MALLOC_TUNABLES` in its environment,
    unless the environment sets ``GLIBC_TUNABLES`` or this is not glibc; returns only
    when it does not (or cannot) do it. Call it before anything else is set up."""
    if "GLIBC_TUNABLES" in os.environ or not sys.executable:
        return
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):  # not glibc (musl, macOS)
        return
    os.environ["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError:  # run on as we are; the environment says what we ran with
        del os.environ["GLIBC_TUNABLES"]


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
    """The program (``argv`` None: the command line; the daemon then first starts itself
    again with its malloc tunables, :func:`exec_with_malloc_tunables`)."""
    args = _parser().parse_args(argv)
    if argv is None and args.command == "run":
        exec_with_malloc_tunables()
    from .config.loader import ConfigError, load_config

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
