"""Reading user-editable TOML files with errors that name the file, the line and the field."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from nas.errors import UserError


class TomlDoc:
    """A parsed TOML file that can point at the line of a field when the field is wrong.

    tomllib reports syntax errors with a line; for schema errors (a missing field, a wrong type)
    we find the line ourselves: the n-th ``[[table]]`` header, then the first ``key =`` after it.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.text = self.path.read_text(encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot read {self.path}: {e.strerror}") from None
        try:
            self.data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as e:
            msg = str(e)
            m = re.search(r"\s*\(at line (\d+), column \d+\)", msg)
            if m:
                line, msg = m.group(1), msg[: m.start()] + msg[m.end():]
            else:  # "(at end of document)"
                line = str(max(1, self.text.count("\n")))
                msg = msg.replace(" (at end of document)", " at the end of the file")
            raise UserError(f"{self.path}:{line}: malformed TOML: {msg}") from None
        self._lines = self.text.splitlines()

    def line_of(self, field: str) -> int | None:
        """Line number (1-based) of a dotted field such as ``stages[2].width`` or ``stem.depth``."""
        start, parts = 0, field.split(".")
        for i, part in enumerate(parts):
            m = re.fullmatch(r"(\w[\w-]*)\[(\d+)\]", part)
            last = i == len(parts) - 1
            if m:  # the n-th [[name]] header
                name, n = m.group(1), int(m.group(2))
                hits = [j for j, ln in enumerate(self._lines) if re.match(rf"\s*\[\[\s*{re.escape(name)}\s*\]\]", ln)]
                if n >= len(hits):
                    return None
                start = hits[n]
                continue
            header = [j for j in range(start, len(self._lines)) if re.match(rf"\s*\[\s*([\w.-]*\.)?{re.escape(part)}\s*\]", self._lines[j])]
            assign = [j for j in range(start, len(self._lines)) if re.match(rf"\s*\"?{re.escape(part)}\"?\s*=", self._lines[j])]
            if last or not header:
                hit = assign or header
            else:
                hit = header
            if not hit:
                return None
            start = hit[0]
        return start + 1

    def error(self, field: str, message: str) -> UserError:
        line = self.line_of(field)
        where = f"{self.path}:{line}" if line else str(self.path)
        return UserError(f"{where}: field '{field}': {message}")

    def get(self, table: dict, key: str, field: str, kind: type | tuple, default: Any = ...) -> Any:
        """``table[key]`` checked against ``kind``; ``field`` is the dotted name used in errors."""
        if key not in table:
            if default is not ...:
                return default
            raise self.error(field, "missing")
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(field, f"expected {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.error(field, f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def int_list(self, table: dict, key: str, field: str, *, length: int | None = None, default: Any = ...) -> list[int]:
        value = self.get(table, key, field, list, default)
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise self.error(field, f"expected a non-empty list of integers, got {value!r}")
        if length is not None and len(value) != length:
            raise self.error(field, f"expected {length} integers, got {value!r}")
        return value


def _kind_name(kind: type | tuple) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
