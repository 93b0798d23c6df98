"""Measuring a list of things (blocks, whole networks) in passes, resumably.

One append-only JSONL log per job: a header record pinning what the numbers depend on, then one
record per (item, pass) the moment it is taken. A killed job resumes where it stopped; a log
written under other conditions is refused, naming the field that differs. Pass p walks the items
in the opposite order of pass p - 1, so a slow spell of the machine never hits the same items
twice, and each item keeps the median over its passes (``measure.combine_passes``).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from nas.errors import UserError
from nas.latency.measure import Measurement, combine_passes
from nas.runs import read_records, write_atomic


@dataclass
class PassLog:
    combined: dict[str, dict]  # item -> its median pass (items with at least one pass)
    new: int  # measurements taken by this call
    complete: bool  # every item measured in every pass


def open_log(path: Path, header: dict, what: str, hint: str) -> list[dict]:
    """The log's records, header first; a new log is started with ``header``."""
    records = read_records(path, what)
    if not records:
        write_atomic(path, json.dumps({"header": header}) + "\n")
        return [{"header": header}]
    old = records[0].get("header")
    if old is None:
        raise UserError(f"{path}:1: not a {what} log (no header record); {hint}")
    for field in header:
        if old.get(field) != header[field]:
            raise UserError(f"{path} holds {what} measurements with a different {field} "
                            f"({_short(old.get(field))} there, {_short(header[field])} now); {hint}")
    return records


def measure_in_passes(path: Path, header: dict, items: Sequence[str], passes: int,
                      measure: Callable[[str], Measurement], *, field: str, what: str, hint: str,
                      unit: str, progress: bool, limit: int | None = None) -> PassLog:
    """Measure every item ``passes`` times into the log at ``path`` (records name the item in
    ``field``); ``limit`` stops after that many new measurements, as an interruption would."""
    records = open_log(path, header, what, hint)
    taken = {(r[field], r.get("pass", 0)): r for r in records[1:]}
    plan = [(item, p) for p in range(passes) for item in (items if p % 2 == 0 else items[::-1])]
    todo = [ip for ip in plan if ip not in taken]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), initial=len(plan) - len(todo), unit=unit, desc=what, dynamic_ncols=True,
                   file=sys.stderr)
    new = 0
    try:
        with path.open("a", encoding="utf-8") as log:
            for item, p in todo:
                if limit is not None and new >= limit:
                    break
                rec = {field: item, "pass": p, **measure(item).as_dict()}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                taken[(item, p)] = rec
                new += 1
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    by_item: dict[str, list[dict]] = {}
    for (item, _), rec in taken.items():
        by_item.setdefault(item, []).append(rec)
    combined = {item: combine_passes(recs) for item, recs in by_item.items()}
    return PassLog(combined, new, all(ip in taken for ip in plan))


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True)
    return text if len(text) < 120 else text[:117] + "..."
