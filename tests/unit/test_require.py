"""tests/require.py: a missing part skips a test locally and fails it under CI=true."""

from __future__ import annotations

import pytest

from tests.require import require


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_a_missing_part_skips_outside_ci(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", ci)
    require(True, "there")
    with pytest.raises(pytest.skip.Exception, match="no loki here"):
        require(False, "no loki here")


@pytest.mark.parametrize("ci", ["true", "TRUE", "1", "yes"])
def test_a_missing_part_fails_under_ci_with_the_reason(
    ci: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", ci)
    require(True, "there")
    with pytest.raises(pytest.fail.Exception, match=r"no loki here \(CI=true"):
        require(False, "no loki here")
