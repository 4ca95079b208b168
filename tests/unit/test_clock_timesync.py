"""Under ProtectClock=yes adjtimex(2) is refused: timesyncd's flag file answers instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import clock


class RefusingLibc:
    """What the unit's seccomp filter does to adjtimex: -1 (EPERM)."""

    def adjtimex(self, _buf: object) -> int:
        return -1


class Libc:
    def __init__(self, state: int) -> None:
        self.state = state

    def adjtimex(self, _buf: object) -> int:
        return self.state


@pytest.fixture
def flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "synchronized"
    monkeypatch.setattr(clock, "TIMESYNC_FLAG", path)
    return path


def test_refused_adjtimex_falls_back_to_the_timesyncd_flag(
    flag: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clock, "_libc", RefusingLibc())
    assert clock.clock_synchronised() is False
    flag.touch()
    assert clock.clock_synchronised() is True


def test_adjtimex_answers_when_allowed_and_the_flag_is_not_asked(
    flag: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag.touch()
    monkeypatch.setattr(clock, "_libc", Libc(clock.TIME_ERROR))
    assert clock.clock_synchronised() is False  # the kernel's word wins
    monkeypatch.setattr(clock, "_libc", Libc(0))  # TIME_OK
    assert clock.clock_synchronised() is True


def test_the_flag_path_is_timesyncds() -> None:
    assert Path("/run/systemd/timesync/synchronized") == clock.TIMESYNC_FLAG
