"""MPC latency as a device: an analytic cost model of two-party secure inference.

``T = sum over operators of rounds x RTT + bytes sent / bandwidth + compute``, per architecture,
from two inputs:

* a **protocol table** (``predictors/mpc-protocols/<protocol>.csv``): per operator its rounds per
  call (``rounds`` + ``rounds_per_log2n`` x ceil(log2 n) for a reduction over n), bytes sent per
  party per element (``bytes_per_element``; for a matmul the elements of both operands it opens)
  and per output element (``bytes_per_output``: a matmul's truncation), compute time per unit
  of work (``ns_per_unit``: per MAC for a matmul, else per element), and ``per_head`` (1: the
  protocol runs a head-batched matmul as one call per head, as SPU does);
* a **device TOML** (``kind = "mpc"``): the protocol table, a network preset (``lan``, ``wan``) or
  an explicit ``[network]``, and how heads are evaluated: ``sequential`` (one head at a time, as
  MPCViT's inference loop does; every head pays its own rounds) or ``batched`` (all heads of a
  kind in a layer together).

What operators an architecture runs, with what sizes, is the space's business
(``SearchSpace.mpc_ops``); everything here is numpy over whole batches of genomes.
"""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.errors import UserError
from nas.registry import did_you_mean
from nas.tomldoc import TomlDoc


@dataclass(frozen=True)
class Network:
    rtt_ms: float
    bandwidth_mbit_s: float


# Cheetah's throttle profiles (OpenCheetah scripts/throttle.sh), which MPCViT's WAN setting follows
NETWORKS = {"lan": Network(0.3, 3000.0), "wan": Network(40.0, 400.0)}
HEADS_MODES = ("sequential", "batched")
OP_FIELDS = ("op", "rounds", "rounds_per_log2n", "bytes_per_element", "bytes_per_output", "ns_per_unit", "per_head",
             "source")


@dataclass(frozen=True)
class OpCost:
    rounds: float
    rounds_per_log2n: float
    bytes_per_element: float
    bytes_per_output: float
    ns_per_unit: float
    per_head: bool


def read_ops(path: Path) -> dict[str, OpCost]:
    """A protocol table; errors name the file, the line and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read MPC protocol table {path}: {e.strerror}") from None
    rows = list(csv.reader(line for line in text.splitlines() if not line.startswith("#")))
    if not rows or tuple(rows[0]) != OP_FIELDS:
        raise UserError(f"{path}: expected the header {','.join(OP_FIELDS)!r}")
    out: dict[str, OpCost] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(OP_FIELDS):
            raise UserError(f"{path}: row {line}: expected {len(OP_FIELDS)} fields, got {len(row)}")
        values = []
        for name, v in zip(OP_FIELDS[1:-1], row[1:-1]):
            try:
                x = float(v)
            except ValueError:
                raise UserError(f"{path}: row {line} ({row[0]}): field {name!r}: {v!r} is not a number") from None
            if not math.isfinite(x) or x < 0:
                raise UserError(f"{path}: row {line} ({row[0]}): field {name!r}: {v!r} must be finite and >= 0")
            values.append(x)
        if row[0] in out:
            raise UserError(f"{path}: row {line}: operator {row[0]!r} appears twice")
        out[row[0]] = OpCost(*values[:5], per_head=bool(values[5]))
    return out


@dataclass
class MpcTable:
    """An ``mpc`` device: the same ``predict(space, genomes)`` (ms) as a block table."""

    device: str
    family: str
    ops: dict[str, OpCost]
    network: Network
    heads: str
    meta: dict[str, Any]
    path: Path
    kind: str = "mpc"
    grid_rounding: str = "-"

    @classmethod
    def load(cls, meta_path: Path) -> "MpcTable":
        doc = TomlDoc(meta_path)
        d = doc.data
        device = doc.get(d, "device", "device", str)
        family = doc.get(d, "family", "family", str)
        units = doc.get(d, "units", "units", str, "ms")
        if units != "ms":
            raise doc.error("units", f"only 'ms' tables are supported, got {units!r}")
        ops_path = meta_path.parent / doc.get(d, "ops", "ops", str)
        ops = read_ops(ops_path)
        net = d.get("network")
        if isinstance(net, str):
            if net not in NETWORKS:
                raise doc.error("network", str(did_you_mean(net, NETWORKS, "network preset")))
            network = NETWORKS[net]
        elif isinstance(net, dict):
            try:
                network = Network(float(net["rtt_ms"]), float(net["bandwidth_mbit_s"]))
            except (KeyError, TypeError, ValueError):
                raise doc.error("network", "a [network] table needs numbers rtt_ms and bandwidth_mbit_s") from None
            if not (network.rtt_ms >= 0 and network.bandwidth_mbit_s > 0):
                raise doc.error("network", f"needs rtt_ms >= 0 and bandwidth_mbit_s > 0, got {network}")
        else:
            raise doc.error("network", f"expected a preset name ({', '.join(NETWORKS)}) or a [network] table")
        heads = doc.get(d, "heads", "heads", str, "sequential")
        if heads not in HEADS_MODES:
            raise doc.error("heads", f"expected one of {', '.join(HEADS_MODES)}, got {heads!r}")
        meta = dict(d)
        digest = hashlib.sha256(ops_path.read_bytes() + repr((network, heads)).encode()).hexdigest()
        meta["sha256"] = digest
        meta["ops_path"] = str(ops_path)
        return cls(device, family, ops, network, heads, meta, meta_path)

    @property
    def version(self) -> str:
        """Changes with the protocol table, the network and the heads mode."""
        return f"{self.device}:{self.meta.get('version', 'unversioned')}@{self.meta['sha256'][:8]}"

    @property
    def entries(self) -> int:
        return len(self.ops)

    def describe(self) -> str:
        n = self.network
        return f"{self.meta.get('protocol', '?')}, {n.bandwidth_mbit_s:g} Mbit/s, {n.rtt_ms:g} ms RTT, heads {self.heads}"

    # ---- prediction --------------------------------------------------------------------------
    def missing_keys(self, space) -> list[str]:
        need = space.mpc_ops_needed() if hasattr(space, "mpc_ops_needed") else None
        if need is None:
            return ["<the space has no MPC operator model>"]
        return sorted(need - set(self.ops))

    def check(self, space) -> None:
        if not hasattr(space, "mpc_ops"):
            raise UserError(f"MPC device {self.device!r} ({self.path}) has no cost model for space {space.name!r} "
                            f"(family {space.family!r}); MPC devices cost the mpcvit family")
        missing = self.missing_keys(space)
        if missing:
            raise UserError(f"MPC device table {self.path} ({self.device}, protocol table {self.meta['ops_path']}) "
                            f"lacks operator(s) {', '.join(missing)} that space {space.name!r} needs; add them to "
                            f"the protocol table")

    def _costs(self, u) -> tuple[np.ndarray, float, float, float, np.ndarray]:
        """(calls array, rounds per call, bytes per count, ns per count, count array) of one use."""
        c = self.ops[u.op]
        calls = u.heads if u.heads is not None and (self.heads == "sequential" or c.per_head) else u.calls
        per_call = c.rounds + (c.rounds_per_log2n * math.ceil(math.log2(u.reduce)) if u.reduce > 1 else 0.0)
        return calls, per_call, u.elements * c.bytes_per_element + u.outputs * c.bytes_per_output, \
            u.work * c.ns_per_unit, u.count

    def totals(self, space, genomes: np.ndarray) -> dict[str, np.ndarray]:
        """Rounds, bytes sent per party and compute ns of each genome. Every use multiplies one of
        a few shared count arrays by a constant, so the constants are added up per array first
        and each array is reduced and multiplied once."""
        self.check(space)
        g = np.asarray(genomes)
        coef: dict[int, list] = {}  # id(array) -> [array, rounds, bytes, ns]
        for u in space.mpc_ops(g):
            calls, per_call, nbytes, ns, count = self._costs(u)
            coef.setdefault(id(calls), [calls, 0.0, 0.0, 0.0])[1] += per_call
            entry = coef.setdefault(id(count), [count, 0.0, 0.0, 0.0])
            entry[2] += nbytes
            entry[3] += ns
        out = {k: np.zeros(len(g)) for k in ("rounds", "bytes", "compute_ns")}
        for arr, r, b, t in coef.values():
            per_genome = arr.sum(-1) if arr.ndim == 2 else arr
            for key, v in (("rounds", r), ("bytes", b), ("compute_ns", t)):
                if v:
                    out[key] += v * per_genome
        return out

    def ms(self, rounds, nbytes, compute_ns):
        net = self.network
        return rounds * net.rtt_ms + nbytes * 8e-3 / net.bandwidth_mbit_s + compute_ns * 1e-6

    def predict(self, space, genomes: np.ndarray, corrected: bool = True) -> np.ndarray:
        t = self.totals(space, genomes)
        return self.ms(t["rounds"], t["bytes"], t["compute_ns"])

    def block_rows(self, space, arch: Arch) -> list[dict[str, Any]]:
        """Per operator use of one architecture, in network order (layers spelled out)."""
        self.check(space)
        net, layers = [], []
        for u in space.mpc_ops(np.asarray([arch.genome])):
            calls, per_call, nbytes, ns, count = self._costs(u)
            row = (u.key, calls[0] * per_call, count[0] * nbytes, count[0] * ns)
            (layers if count.ndim == 2 else net).append(row)
        spelled = [(f"layer{l}.{k}", float(r[l]), float(b[l]), float(t[l]))
                   for l in range(space.layers) for k, r, b, t in layers if r[l] or b[l] or t[l]]
        rows = net[:1] + spelled + net[1:]  # the embedding first, the final norm and the head last
        return [{"key": k, "ms": float(self.ms(r, b, t)), "rounds": float(r), "mb_sent": float(b) / 1e6}
                for k, r, b, t in rows]

    def breakdown(self, space, arch: Arch) -> list[tuple[str, float]]:
        return [(r["key"], r["ms"]) for r in self.block_rows(space, arch)]
