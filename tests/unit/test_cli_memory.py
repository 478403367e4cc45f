"""The daemon fixes glibc's mmap threshold at start, unless the environment sets it."""

from __future__ import annotations

import ctypes
import platform

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
