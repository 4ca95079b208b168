"""Small helpers for the technician's human output: aligned tables and "3 min ago"."""

from __future__ import annotations

from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned with two spaces between them; the last column is not padded (it
    holds the free text: a reason, a label), and no line ends in spaces."""
    cells = [[str(c) for c in header], *([_cell(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header) - 1)]
    lines = []
    for r in cells:
        padded = [c.ljust(w) for c, w in zip(r, widths, strict=False)]
        lines.append("  ".join([*padded, r[-1]]).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    text = str(value).replace("\n", " ")
    return text


def ago(seconds: float | None) -> str:
    """How long ago, in the unit a technician would say it."""
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def duration(seconds: float | None) -> str:
    """A length of time: "45 s", "12 min", "3 h", "2 d"."""
    text = ago(seconds)
    return text[: -len(" ago")] if text.endswith(" ago") else text


def clip(text: str | None, width: int) -> str:
    """One line, at most ``width`` characters (an ellipsis marks the cut)."""
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
