"""Architecture arguments: the one parser behind ``--arch`` (``nas latency``, ``nas train``) and
``nas design --evaluate``. A preset name or a family's arch string stays text; JSON (``[``/``{``)
is parsed; ``@FILE`` or a path to an existing ``.json``/``.txt`` file reads that file (a DeepMAD
structure file, a network definition). The space then turns the result into an Arch."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.errors import UserError


def read_arch_spec(text: str) -> Any:
    if text.startswith("@") or (text.endswith((".json", ".txt")) and Path(text).is_file()):
        path = Path(text[1:] if text.startswith("@") else text)
        try:
            text = path.read_text()
        except OSError as e:
            raise UserError(f"--arch {path}: {e.strerror}") from None
    stripped = text.strip()
    if stripped[:1] in "[{":
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as e:
            raise UserError(f"--arch is not valid JSON: {e}") from None
    return stripped


def parse_arch_text(space, text: str):
    """The Arch of ``space`` that an ``--arch`` argument names."""
    return space.parse_arch(read_arch_spec(text))


def self_contained(text: str) -> str:
    """The argument as text that no longer depends on a file (for config.toml: a resumed run may
    not find the file again): file contents become compact JSON."""
    spec = read_arch_spec(text)
    return spec if isinstance(spec, str) else json.dumps(spec, separators=(",", ":"))
