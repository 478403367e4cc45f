"""The daemon fixes glibc's mmap threshold and tunables at start, unless the environment
sets them."""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path

import pytest

from log_capturer import cli


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_the_threshold_is_fixed_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    calls: list[tuple[int, int]] = []
    real = ctypes.CDLL

    class Recording:
        def __init__(self, name: str | None) -> None:
            self._lib = real(name)

        @property
        def mallopt(self) -> object:
            fn = self._lib.mallopt

            class Wrapped:
                argtypes: object = None
                restype: object = None

                def __call__(self, param: int, value: int) -> int:
                    calls.append((param, value))
                    return int(fn(param, value))

            return Wrapped()

    monkeypatch.setattr(ctypes, "CDLL", Recording)
    assert cli.fix_mmap_threshold() is True
    assert calls == [(cli.M_MMAP_THRESHOLD, 128 * 1024)]


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: pytest.fail("mallopt called"))
    assert cli.fix_mmap_threshold() is False


def test_without_mallopt_nothing_is_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)

    class NoMallopt:
        def __init__(self, name: str | None) -> None:
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert cli.fix_mmap_threshold() is False


class _Exec(Exception):
    """os.execv was called (a test must not replace the test runner)."""


def _recording_execv(calls: list[tuple[str, list[str], str | None]]) -> object:
    def execv(path: str, args: list[str]) -> None:
        calls.append((path, list(args), os.environ.get("GLIBC_TUNABLES")))
        raise _Exec

    return execv


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's tunables only")
def test_the_daemon_starts_itself_again_with_its_malloc_tunables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    calls: list[tuple[str, list[str], str | None]] = []
    monkeypatch.setattr(os, "execv", _recording_execv(calls))
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-m", "log_capturer", "run", "-c", "x"])
    with pytest.raises(_Exec):
        cli.exec_with_malloc_tunables()
    argv = [sys.executable, "-m", "log_capturer", "run", "-c", "x"]
    assert calls == [(sys.executable, argv, cli.MALLOC_TUNABLES)]


def test_tunables_in_the_environment_win_and_a_failed_exec_runs_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list[str], str | None]] = []
    monkeypatch.setattr(os, "execv", _recording_execv(calls))
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=7")
    cli.exec_with_malloc_tunables()
    assert calls == []
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=7"

    monkeypatch.delenv("GLIBC_TUNABLES")

    def failing(path: str, args: list[str]) -> None:
        raise OSError("exec refused")

    monkeypatch.setattr(os, "execv", failing)
    cli.exec_with_malloc_tunables()  # returns: the daemon runs on as it is
    assert "GLIBC_TUNABLES" not in os.environ


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's tunables only")
def test_main_with_arguments_never_replaces_the_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    calls: list[tuple[str, list[str], str | None]] = []
    monkeypatch.setattr(os, "execv", _recording_execv(calls))
    (tmp_path / "bad.yaml").write_text("sinks: [\n")
    assert cli.main(["run", "-c", str(tmp_path / "bad.yaml")]) == cli.EXIT_CONFIG
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["log-capturer", "run", "-c", str(tmp_path / "bad.yaml")])
    with pytest.raises(_Exec):  # the command line's `run` does
        cli.main()
