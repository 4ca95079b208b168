"""Helpers for the firmware_bridge tests: PROTOCOL.md vector parsing and waiting."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from firmware_bridge import frames as fr

#: Short enough that "the sim resends" is visible within a test, long enough that a
#: loaded CI machine still acks before the next resend most of the time.
TEST_RESEND_S = 0.05


def protocol_text() -> str:
    """PROTOCOL.md as shipped in the package (package-data), not a copy."""
    return resources.files("firmware_bridge").joinpath("PROTOCOL.md").read_text("utf-8")


def fenced_blocks(kind: str) -> list[str]:
    """The bodies of all ```<kind> fenced blocks in PROTOCOL.md."""
    return re.findall(rf"^```{re.escape(kind)}\n(.*?)^```", protocol_text(), re.M | re.S)


def parse_records(block: str) -> list[dict[str, str]]:
    """Blank-line separated records of ``key: value`` lines."""
    records = []
    for chunk in re.split(r"\n\s*\n", block.strip()):
        record = {}
        for line in chunk.splitlines():
            key, _, value = line.partition(":")
            record[key.strip()] = value.strip()
        records.append(record)
    return records


def parse_value(text: str) -> object:
    """Field notation of PROTOCOL.md §9."""
    if text == "none":
        return None
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("hex:"):
        return bytes.fromhex(text[4:])
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    if "." in text:
        return float(text)
    return int(text, 0)


@dataclass(frozen=True)
class Vector:
    name: str
    wire: bytes
    raw: bytes
    crc: int
    frame: fr.Frame


def parse_frame(text: str) -> fr.Frame:
    """``ClassName field=value ...`` as in PROTOCOL.md §9."""
    classes = {cls.__name__: cls for cls in fr.FRAME_CLASSES.values()}
    cls_name, *pairs = text.split()
    kwargs: dict[str, Any] = {k: parse_value(v) for k, v in (p.split("=", 1) for p in pairs)}
    return classes[cls_name](**kwargs)


def valid_vectors() -> list[Vector]:
    out = []
    for block in fenced_blocks("vectors"):
        for rec in parse_records(block):
            out.append(
                Vector(
                    name=rec["name"],
                    wire=bytes.fromhex(rec["wire"]),
                    raw=bytes.fromhex(rec["raw"]),
                    crc=int(rec["crc"], 16),
                    frame=parse_frame(rec["frame"]),
                )
            )
    return out


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    """Poll ``predicate`` (test helper only; shipped code waits on primitives)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
