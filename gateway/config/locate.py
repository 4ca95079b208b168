"""Find the line where a key is defined in TOML text.

tomllib returns values without positions. This scanner re-reads text that tomllib has
already accepted and records, for every key path (``("devices", 2, "location")``), the line
that defines it: a ``key = value`` line, a ``[table]`` or ``[[array]]`` header, an element of
a multi-line array, or a key inside an inline table (which shares its table's line). It
skips values without interpreting them, so it needs no TOML semantics beyond structure.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence

KeyPart = str | int
KeyPath = tuple[KeyPart, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# A scalar (number, bool, date, time) runs until a separator; dates may contain a space.
_SCALAR = re.compile(r"[^,\]}\r\n#]*")


def format_key(path: Sequence[KeyPart]) -> str:
    """``("devices", 2, "location")`` → ``devices[2].location``; odd keys are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            out = f"{out}.{text}" if out else text
    return out


class TomlLocator:
    """Line numbers (1-based) of the keys and tables of one TOML document."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._explicit: dict[KeyPath, int] | None = None
        self._implicit: dict[KeyPath, int] = {}

    def line_of(self, path: Sequence[KeyPart]) -> int | None:
        """The line that defines exactly ``path``, or None."""
        if self._explicit is None:
            scanner = _Scanner(self._text)
            scanner.scan()
            self._explicit, self._implicit = scanner.explicit, scanner.implicit
        key = tuple(path)
        return self._explicit.get(key) or self._implicit.get(key)

    def best_line(self, path: Sequence[KeyPart]) -> int | None:
        """The line of ``path``, else of its nearest enclosing key or table, else None.

        A missing key thus points at the header of the table that lacks it.
        """
        for end in range(len(path), 0, -1):
            line = self.line_of(path[:end])
            if line is not None:
                return line
        return None


class _Stop(Exception):
    """The text has a shape this scanner does not follow; keep what was found so far."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.src = text
        self.pos = 0
        self.line = 1
        # Explicit: assigned keys, headers, array elements. Implicit: tables created on the
        # way (dotted keys, parents of [a.b]); used only when nothing explicit matches.
        self.explicit: dict[KeyPath, int] = {}
        self.implicit: dict[KeyPath, int] = {}
        self.aot_len: dict[KeyPath, int] = {}

    # ----------------------------------------------------------------- document level

    def scan(self) -> None:
        table: KeyPath = ()
        try:
            while True:
                self._skip_blank()
                if self.pos >= len(self.src):
                    return
                line = self.line
                if self.src.startswith("[[", self.pos):
                    self._move(self.pos + 2)
                    table = self._header(self._key(), line, array=True)
                    self._expect("]]")
                elif self.src[self.pos] == "[":
                    self._move(self.pos + 1)
                    table = self._header(self._key(), line, array=False)
                    self._expect("]")
                else:
                    keys = self._key()
                    self._expect("=")
                    self._assign(table, keys, line)
                    self._value((*table, *keys))
                self._skip_spaces()
                self._skip_comment()
        except (_Stop, IndexError):
            return

    def _header(self, keys: KeyPath, line: int, *, array: bool) -> KeyPath:
        path: KeyPath = ()
        for n, key in enumerate(keys):
            path = (*path, key)
            last = n == len(keys) - 1
            if last and array:
                index = self.aot_len.get(path, 0)
                self.aot_len[path] = index + 1
                self.implicit.setdefault(path, line)
                path = (*path, index)
            elif path in self.aot_len:
                # [devices.location] after [[devices]] extends the latest element.
                path = (*path, self.aot_len[path] - 1)
            elif not last:
                self.implicit.setdefault(path, line)
        self.explicit.setdefault(path, line)
        return path

    def _assign(self, base: KeyPath, keys: KeyPath, line: int) -> None:
        for end in range(1, len(keys)):
            self.implicit.setdefault((*base, *keys[:end]), line)
        self.explicit.setdefault((*base, *keys), line)

    # ----------------------------------------------------------------- keys and values

    def _key(self) -> KeyPath:
        parts: list[str] = []
        while True:
            self._skip_spaces()
            ch = self.src[self.pos]
            if ch == '"':
                end = self._basic_string_end(self.pos)
                parts.append(tomllib.loads("k = " + self.src[self.pos : end])["k"])
                self._move(end)
            elif ch == "'":
                end = self.src.index("'", self.pos + 1) + 1
                parts.append(self.src[self.pos + 1 : end - 1])
                self._move(end)
            else:
                match = _BARE_KEY.match(self.src, self.pos)
                if match is None:
                    raise _Stop
                parts.append(match.group())
                self._move(match.end())
            self._skip_spaces()
            if self.src.startswith(".", self.pos):
                self._move(self.pos + 1)
                continue
            return tuple(parts)

    def _value(self, path: KeyPath) -> None:
        self._skip_spaces()
        src, pos = self.src, self.pos
        if src.startswith('"""', pos) or src.startswith("'''", pos):
            self._move(self._multiline_end(pos))
        elif src[pos] == '"':
            self._move(self._basic_string_end(pos))
        elif src[pos] == "'":
            self._move(src.index("'", pos + 1) + 1)
        elif src[pos] == "[":
            self._array(path)
        elif src[pos] == "{":
            self._inline_table(path)
        else:
            match = _SCALAR.match(src, pos)
            if match is None or match.end() == pos:
                raise _Stop  # no progress: not a value this scanner knows
            self._move(match.end())

    def _array(self, path: KeyPath) -> None:
        self._move(self.pos + 1)
        index = 0
        while True:
            self._skip_blank()
            if self.src[self.pos] == "]":
                self._move(self.pos + 1)
                return
            self.explicit.setdefault((*path, index), self.line)
            self._value((*path, index))
            self._skip_blank()
            if self.src[self.pos] == ",":
                self._move(self.pos + 1)
                index += 1

    def _inline_table(self, path: KeyPath) -> None:
        self._move(self.pos + 1)
        while True:
            self._skip_blank()
            if self.src[self.pos] == "}":
                self._move(self.pos + 1)
                return
            line = self.line
            keys = self._key()
            self._expect("=")
            self._assign(path, keys, line)
            self._value((*path, *keys))
            self._skip_blank()
            if self.src[self.pos] == ",":
                self._move(self.pos + 1)

    def _basic_string_end(self, pos: int) -> int:
        i = pos + 1
        while self.src[i] != '"':
            i += 2 if self.src[i] == "\\" else 1
        return i + 1

    def _multiline_end(self, pos: int) -> int:
        quote = self.src[pos] * 3
        i = pos + 3
        while not self.src.startswith(quote, i):
            i += 2 if quote == '"""' and self.src[i] == "\\" else 1
            if i >= len(self.src):
                raise _Stop
        i += 3
        # Up to two quote characters may end the content right before the delimiter.
        for _ in range(2):
            if self.src.startswith(quote[0], i):
                i += 1
        return i

    # ----------------------------------------------------------------- whitespace

    def _move(self, to: int) -> None:
        self.line += self.src.count("\n", self.pos, to)
        self.pos = to

    def _skip_spaces(self) -> None:
        while self.pos < len(self.src) and self.src[self.pos] in " \t":
            self.pos += 1

    def _skip_comment(self) -> None:
        if self.src.startswith("#", self.pos):
            end = self.src.find("\n", self.pos)
            self.pos = len(self.src) if end < 0 else end

    def _skip_blank(self) -> None:
        """Spaces, newlines and comments."""
        while self.pos < len(self.src):
            ch = self.src[self.pos]
            if ch in " \t\r":
                self.pos += 1
            elif ch == "\n":
                self.pos += 1
                self.line += 1
            elif ch == "#":
                self._skip_comment()
            else:
                return

    def _expect(self, token: str) -> None:
        self._skip_spaces()
        if not self.src.startswith(token, self.pos):
            raise _Stop
        self._move(self.pos + len(token))
