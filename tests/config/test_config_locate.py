"""The line finder, key formatting, discriminator-tag removal and problem formatting."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import ConfigError, ConfigProblem
from gateway.config.explain import explain
from gateway.config.locate import TomlLocator, format_key
from gateway.config.models import DevicesFile, GatewayFile

DOC = '''\
# comment with [brackets] and key = "value"
[gateway]
name = "x"  # trailing [comment]

[gateway.position]
latitude = 1.0

[aura]
base_url = "https://a.example"
timeouts.connect = 3
"quoted key" = 'literal ] string'
multi = """
has [brackets] and
key = "not a key"
"""

[[inputs]]
type = "serial"
list = [
  1, # comment
  [2, 3],
  { a = 4 },
]

[[devices]]
id = "a"
location = { policy = "live", nested = { b = 1 } }
when = 1979-05-27 07:32:00Z

[[devices]]
id = 'b'

[devices.location]
policy = "fixed"

[[devices.extra]]
x = 1

[[devices.extra]]
x = 2

[device_types.pendant-gps]
raise_gestures = ["single",
  "long"]
'''


@pytest.fixture(scope="module")
def locator() -> TomlLocator:
    tomllib.loads(DOC)  # the locator only ever sees text tomllib accepted
    return TomlLocator(DOC)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("gateway",), 2),
        (("gateway", "name"), 3),
        (("gateway", "position"), 5),
        (("gateway", "position", "latitude"), 6),
        (("aura",), 8),
        (("aura", "timeouts"), 10),  # created by a dotted key
        (("aura", "timeouts", "connect"), 10),
        (("aura", "quoted key"), 11),
        (("aura", "multi"), 12),
        (("inputs", 0), 17),
        (("inputs", 0, "list", 0), 20),
        (("inputs", 0, "list", 1, 1), 21),
        (("inputs", 0, "list", 2, "a"), 22),
        (("devices", 0), 25),
        (("devices", 0, "location"), 27),
        (("devices", 0, "location", "nested", "b"), 27),
        (("devices", 0, "when"), 28),
        (("devices", 1), 30),
        (("devices", 1, "id"), 31),
        (("devices", 1, "location"), 33),
        (("devices", 1, "location", "policy"), 34),
        (("devices", 1, "extra", 0, "x"), 37),
        (("devices", 1, "extra", 1), 39),
        (("devices", 1, "extra", 1, "x"), 40),
        (("device_types", "pendant-gps", "raise_gestures", 1), 44),
    ],
)
def test_line_of(locator: TomlLocator, path: tuple[str | int, ...], line: int) -> None:
    assert locator.line_of(path) == line


def test_text_inside_strings_and_comments_is_not_a_key(locator: TomlLocator) -> None:
    assert locator.line_of(("aura", "multi", "key")) is None
    assert locator.line_of(("key",)) is None
    assert locator.line_of(("brackets",)) is None


def test_missing_key_falls_back_to_the_enclosing_table(locator: TomlLocator) -> None:
    assert locator.best_line(("devices", 1, "customer_id")) == 30
    assert locator.best_line(("devices", 0, "location", "predefined_location_id")) == 27
    assert locator.best_line(("aura", "timeouts", "read")) == 10
    assert locator.best_line(("credentials", "x")) is None


def test_unparseable_shape_keeps_what_was_found() -> None:
    # Not TOML after line 2: the scanner stops there instead of guessing or raising.
    locator = TomlLocator("[a]\nb = 1\n@@@\nc = 2\n")
    assert locator.line_of(("a", "b")) == 2
    assert locator.line_of(("a", "c")) is None


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (
            ("devices", 2, "location", "predefined_location_id"),
            "devices[2].location.predefined_location_id",
        ),
        (
            ("device_types", "pendant-gps", "raise_gestures", 0),
            "device_types.pendant-gps.raise_gestures[0]",
        ),
        (("aura", "odd key"), 'aura."odd key"'),
        (("inputs",), "inputs"),
        ((), ""),
    ],
)
def test_format_key(path: tuple[str | int, ...], text: str) -> None:
    assert format_key(path) == text


def _explain(model: type, text: str) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(tomllib.loads(text))
    return [str(p) for p in explain(caught.value, model, Path("f.toml"), TomlLocator(text))]


def test_discriminator_tags_are_dropped_from_keys() -> None:
    text = """\
[[devices]]
id = "a"
type = "t"
route = "customer"
customer_id = 1
response_type_id = 1
location = { policy = "live", colour = "red" }
"""
    # pydantic's loc is devices.0.customer.location.live.colour
    assert _explain(DevicesFile, text) == [
        "f.toml:7 devices[0].location.colour: unknown key (typo?)"
    ]


def test_single_member_union_tag_is_dropped() -> None:
    text = '[aura]\nbase_url = "http://h"\n[[inputs]]\ntype = "serial"\n'
    # pydantic's loc is inputs.0.serial.port
    assert _explain(GatewayFile, text) == ["f.toml:3 inputs[0].port: Field required"]


def test_unknown_location_policy() -> None:
    text = """\
[[devices]]
id = "a"
type = "t"
route = "customer"
customer_id = 1
response_type_id = 1
location = { policy = "gps" }
"""
    assert _explain(DevicesFile, text) == [
        "f.toml:7 devices[0].location.policy: policy must be one of 'live', 'fixed' (got 'gps')"
    ]


def test_problem_str_forms() -> None:
    path = Path("/etc/aura-gateway/devices.toml")
    assert str(ConfigProblem(path, 14, "devices[2].customer_id", "bad")) == (
        "devices.toml:14 devices[2].customer_id: bad"
    )
    assert str(ConfigProblem(path, None, "devices_file", "bad")) == "devices.toml devices_file: bad"
    assert str(ConfigProblem(path, 3, "", "bad")) == "devices.toml:3: bad"
    assert str(ConfigProblem(path, None, "", "bad")) == "devices.toml: bad"
    assert str(ConfigProblem(None, None, "", "bad")) == "bad"
    assert str(ConfigProblem(path, 1, "k", "hm", "warning")) == "devices.toml:1 k: warning: hm"


def test_config_error_joins_problems() -> None:
    err = ConfigError([ConfigProblem(None, None, "a", "x"), ConfigProblem(None, None, "b", "y")])
    assert str(err) == "a: x\nb: y"
    assert len(err.problems) == 2
