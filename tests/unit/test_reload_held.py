"""A reload that removes a button while its alarm waits out the abort window does not take
the alarm back: it was decided when the button was pressed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.engine import Engine, Hold
from gateway.journal import held_key
from gateway.signals import Press, Stamp

from .test_engine_gestures import A1, ABORT, Clock, make_config, s


def test_an_alarm_in_its_abort_window_is_raised_after_its_button_was_removed(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, ABORT)
    clock = Clock()
    engine = Engine(config, clock_ns=clock)
    press = Press(
        source="test",
        device_id=A1,
        gesture="single",
        dedup_key="p1",
        counter=1,
        stamp=Stamp(mono_ns=clock(), wall=0.0),
    )
    held = engine.decide(press)
    assert isinstance(held, Hold) and held.hold == "abort"
    engine.apply(held, press)
    # The reload: the same registry without the button that was pressed.
    remaining = [d for d in config.devices.devices if d.id != A1]
    engine.config = dataclasses.replace(
        config, devices=config.devices.model_copy(update={"devices": remaining})
    )
    assert engine.config.device(A1) is None
    [resolution] = engine.expire(clock() + s(3.1))
    assert resolution.key == held_key(press)
    assert resolution.decision == "raise"
    assert resolution.new_incident is not None
    assert resolution.new_incident.device_id == A1
