"""A small tmpfs to fill up: the full disk of the disk-full tests (unit and integration).

Mounting needs root; where it cannot mount, the test is skipped with the reason (failed
under CI=true: tests/require.py). The mount is removed in a ``finally``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.require import missing

FILLER = "filler"


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes at ``mount_point`` (created), unmounted at the end."""
    mount_point.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            check=False,
        )
        failure = result.stderr.strip() or f"exit code {result.returncode}"
    except OSError as exc:  # no mount command
        result, failure = None, str(exc)
    if result is None or result.returncode != 0:
        missing(f"cannot mount a tmpfs (needs root): {failure}")
    try:
        yield mount_point
    finally:
        # Busy when a failed test left a file open: detach it now, freed at the last close.
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system of ``directory`` with a filler file, then free ``leave``
    bytes of it (rounded up to whole pages by the file system); returns the filler."""
    filler = directory / FILLER
    block = b"\0" * (64 * 1024)
    with open(filler, "ab", buffering=0) as fh:
        while True:
            try:
                written = fh.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
            if not written:
                break
        size = os.fstat(fh.fileno()).st_size
        os.ftruncate(fh.fileno(), max(0, size - leave))
    return filler


def free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize
