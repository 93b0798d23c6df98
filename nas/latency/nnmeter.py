"""Import an nn-Meter block latency table (a flat JSON ``{block_key: ms}``) into our format.

    python -m nas.latency.nnmeter pixel6_lut_ln_v3.json predictors/pixel6 --device pixel6 \\
        --description "Google Pixel 6 ..." --source "..." --licence MIT

Values are copied exactly (shortest round-trip repr); rows are sorted so the CSV is diffable.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
from pathlib import Path

import tomli_w

from nas.errors import UserError


def import_flat_json(src: Path, out_dir: Path, *, device: str, family: str, description: str,
                     source: str, licence: str, measured: str, version: str, grid_rounding: str = "floor") -> Path:
    try:
        data = json.loads(Path(src).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{src}: not a readable JSON latency table: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in data.values()):
        raise UserError(f"{src}: expected a flat JSON object {{block_key: latency_ms}}")
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{family}.csv"
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["block", "latency_ms"])
        for key in sorted(data):
            w.writerow([key, repr(float(data[key]))])
    tmp.replace(csv_path)
    meta = {
        "device": device,
        "description": description,
        "family": family,
        "table": csv_path.name,
        "units": "ms",
        "grid_rounding": grid_rounding,
        "version": version,
        "rows": len(data),
        "sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
        "provenance": {
            "source": source,
            "source_sha256": hashlib.sha256(Path(src).read_bytes()).hexdigest(),
            "licence": licence,
            "measured": measured,
            "converted_by": "python -m nas.latency.nnmeter (values copied exactly, rows sorted by key)",
        },
    }
    meta_path = out_dir / f"{family}.toml"
    tmp = meta_path.with_suffix(".toml.tmp")
    tmp.write_bytes(tomli_w.dumps(meta).encode())
    tmp.replace(meta_path)
    return meta_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nas.latency.nnmeter", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--device", required=True)
    p.add_argument("--family", default="elasticvit")
    p.add_argument("--description", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--licence", required=True)
    p.add_argument("--measured", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--grid-rounding", default="floor", choices=["floor", "ceil"])
    a = p.parse_args(argv)
    path = import_flat_json(a.json, a.out_dir, device=a.device, family=a.family, description=a.description,
                            source=a.source, licence=a.licence, measured=a.measured, version=a.version,
                            grid_rounding=a.grid_rounding)
    print(path)


if __name__ == "__main__":
    main()
