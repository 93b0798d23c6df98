"""Calibrating the MPC protocol table with a real MPC framework: SecretFlow SPU's SEMI2K simulator.

SPU (``pip install spu==0.9.5``) needs numpy < 2 and jax <= 0.4.34, so it never enters vitnas's
environment: it lives in a virtual environment of its own, and this file is two programs.

* **The probe** (``python nas/latency/spu_calibration.py probe [--sizes cifar]``, run by that environment's
  Python; it imports only the standard library, numpy, jax and spu): runs every operator of the
  cost model at CIFAR sizes, and the whole ViT-7-4-32 for the four presets (heads of a kind
  batched per layer), each in a fresh two-party SEMI2K simulator with profiling on, and prints one
  JSON line per run with SPU's own counters (send actions, send bytes of one party, execution
  time), read from its ``Link details`` and ``execution took`` log lines.
* **The calibration** (``nas lut spu-calibrate --spu-python PATH``, in vitnas): runs the probe,
  derives a protocol table in ``predictors/mpc-protocols/`` format from the per-operator runs, and
  reports, for the whole models, the analytic model's rounds and bytes against the simulator's.

Parsing is plain text processing (``parse_profile``, ``derive_table``): tests run it on recorded
probe output, so neither SPU nor jax is needed to test it.
"""
from __future__ import annotations

import json
import math
import re
import sys

# ---- shared: what the probe prints, and reading SPU's log ------------------------------------------
LINK = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), recv actions (\d+)")
EXEC = re.compile(r"execution took ([0-9.eE+-]+)s")

# CIFAR sizes of ViT-7-4-32 (B 1, heads 4, tokens 65, width 256, head width 64, MLP 512)
CIFAR = {"H": 4, "N": 65, "C": 256, "D": 64, "M": 512, "N_big": 257}


def parse_profile(log: str) -> dict:
    """SPU's counters for one execution from its log: ``actions`` and ``bytes`` sent by one party
    (the simulator's link is symmetric), ``exec_s``. Raises ValueError when the log has none."""
    links = LINK.findall(log)
    if not links:
        raise ValueError("no 'Link details' line in SPU's output (profiling off, or SPU failed)")
    sent, _, actions, _ = (int(x) for x in links[-1])
    times = EXEC.findall(log)
    return {"actions": actions, "bytes": sent, "exec_s": float(times[-1]) if times else float("nan")}


def op_cases(sizes: dict = CIFAR) -> list[dict]:
    """The per-operator runs: model operator, shapes, and the sizes the cost model multiplies
    (``elements``, ``outputs``, ``work``; ``reduce`` for a reduction's length)."""
    H, N, C, D, M, Nb = (sizes[k] for k in ("H", "N", "C", "D", "M", "N_big"))
    return [
        {"case": "linear_qkv", "op": "matmul", "x": [N, C], "w": [C, 3 * C], "elements": N * C + C * 3 * C,
         "outputs": N * 3 * C, "work": N * C * 3 * C},
        {"case": "qk_batched", "op": "bmm", "x": [H, N, D], "w": [H, D, N], "elements": H * 2 * N * D,
         "outputs": H * N * N, "work": H * N * N * D, "heads": H},
        {"case": "scale", "op": "trunc", "x": [H, N, N], "elements": H * N * N, "work": H * N * N},
        {"case": "scalattn", "op": "scalattn", "x": [H, N, N], "elements": H * N * N, "work": H * N * N},
        {"case": "layernorm", "op": "layernorm", "x": [N, C], "elements": N * C, "work": N * C},
        {"case": "softmax", "op": "softmax", "x": [H, N, N], "elements": H * N * N, "work": H * N * N, "reduce": N},
        {"case": "softmax_big", "op": "softmax", "x": [H, Nb, Nb], "elements": H * Nb * Nb, "work": H * Nb * Nb,
         "reduce": Nb},
        {"case": "rsattn", "op": "rsattn", "x": [H, N, N], "elements": H * N * N, "work": H * N * N, "reduce": N},
        {"case": "gelu", "op": "gelu", "x": [N, M], "elements": N * M, "work": N * M},
        {"case": "relu", "op": "relu", "x": [N, M], "elements": N * M, "work": N * M},
    ]


def derive_table(records: list[dict]) -> list[dict]:
    """Protocol-table rows (``nas.latency.mpc.OP_FIELDS``) from the probe's per-operator records.

    Rounds are SPU's send actions per call. Bytes: a matmul opens both operands (8 B per element
    at FM64) and truncates its output; the truncation's bytes per output are taken as the
    elementwise ``trunc`` run's bytes per element, and the rest of the matmul's bytes are spread
    over the operand elements. Softmax's rounds grow with ceil(log2 N): the two sizes give the
    line. ``per_head`` is 1 where a head-batched matmul costs a call per head (SPU: actions a
    multiple of the heads'). Compute: SPU's execution time per unit of work (MACs for matmuls)."""
    by = {r["case"]: r for r in records if "case" in r}
    trunc_bpe = by["scale"]["bytes"] / by["scale"]["elements"]
    trunc_rounds = by["scale"]["actions"]
    rows = []

    def row(op, rounds, per_log2n, bpe, bpo, r, per_head, source):
        ns = 1e9 * r["exec_s"] / r["work"] if r.get("exec_s") == r.get("exec_s") else 0.0
        rows.append({"op": op, "rounds": rounds, "rounds_per_log2n": per_log2n, "bytes_per_element": round(bpe, 3),
                     "bytes_per_output": round(bpo, 3), "ns_per_unit": round(ns, 3), "per_head": per_head,
                     "source": source})

    rows.append({"op": "share", "rounds": 0, "rounds_per_log2n": 0, "bytes_per_element": 0, "bytes_per_output": 0,
                 "ns_per_unit": 0, "per_head": 0,
                 "source": "inputs are fed into SPU's simulator without counted communication"})
    for case, op in (("linear_qkv", "matmul"), ("qk_batched", "bmm")):
        r = by[case]
        heads = r.get("heads", 1)
        per_head = int(heads > 1 and r["actions"] % heads == 0 and r["actions"] // heads == 1 + trunc_rounds)
        calls = heads if per_head else 1
        bpe = (r["bytes"] - trunc_bpe * r["outputs"]) / r["elements"]
        row(op, r["actions"] // calls, 0, bpe, trunc_bpe, r, per_head,
            f"spu {case} {r['x']}x{r['w']}: {r['actions']} actions, {r['bytes']} B")
    for case in ("scale", "scalattn", "layernorm", "rsattn", "gelu", "relu"):
        r = by[case]
        row(r["op"], r["actions"], 0, r["bytes"] / r["elements"], 0, r, 0,
            f"spu {case} {r['x']}: {r['actions']} actions, {r['bytes']} B")
    a, b = by["softmax"], by["softmax_big"]
    la, lb = math.ceil(math.log2(a["reduce"])), math.ceil(math.log2(b["reduce"]))
    slope = (b["actions"] - a["actions"]) / (lb - la)
    row("softmax", a["actions"] - slope * la, slope, a["bytes"] / a["elements"], 0, a, 0,
        f"spu softmax {a['x']}: {a['actions']} actions ({b['actions']} at N={b['reduce']}), {a['bytes']} B")
    order = {"share": 0, "matmul": 1, "bmm": 2, "trunc": 3, "scalattn": 4, "layernorm": 5, "softmax": 6, "rsattn": 7,
             "gelu": 8, "relu": 9}
    return sorted(rows, key=lambda r: order[r["op"]])


# ---- the calibration (vitnas's environment) --------------------------------------------------------
PRESETS = ("all-softmax", "all-rs", "all-scal", "mpcvit-mu0.7")


def read_probe(text: str, what: str = "the probe's output") -> tuple[dict, list[dict], list[dict]]:
    """(header, operator records, model records) from the probe's JSON lines; other lines (SPU's
    own chatter, if any reached stdout) are skipped."""
    header, ops, models = None, [], []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if "spu" in rec:
            header = rec
        elif "case" in rec:
            ops.append(rec)
        elif "model" in rec:
            models.append(rec)
    if header is None or not ops:
        raise ValueError(f"{what} holds no probe records (did the probe run under SPU's Python?)")
    return header, ops, models


def table_csv(header: dict, rows: list[dict], date: str) -> str:
    import csv
    import io

    from nas.latency.mpc import OP_FIELDS

    buf = io.StringIO()
    buf.write(f"# SecretFlow SPU {header['spu']} SEMI2K ({header['field']}) per-operator costs, regenerated by "
              f"`nas lut spu-calibrate` on {date}\n# (nas/latency/spu_calibration.py; jax {header['jax']}; sizes "
              f"{json.dumps(header['sizes'])}). Rounds = send actions per call, bytes per party; ns_per_unit = SPU's\n"
              "# execution time per element (per MAC for matmul, bmm) on the machine that ran it, no network.\n")
    w = csv.DictWriter(buf, fieldnames=list(OP_FIELDS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in r.items()})
    return buf.getvalue()


def compare_models(table_path, models: list[dict]) -> list[dict]:
    """The analytic model (heads batched, the calibrated table) against the simulator's counts
    for each whole model the probe ran."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from nas.latency.mpc import MpcTable
    from nas.spaces import get_space

    space = get_space("mpcvit-cifar")
    with tempfile.TemporaryDirectory() as d:
        meta = Path(d) / "mpcvit.toml"
        meta.write_text(f'device = "spu-calibration"\nkind = "mpc"\nfamily = "mpcvit"\nunits = "ms"\n'
                        f'ops = "{Path(table_path).resolve()}"\nnetwork = "wan"\nheads = "batched"\n')
        table = MpcTable.load(meta)
        out = []
        for m in models:
            genome = np.asarray([space.presets()[m["model"]].genome])
            tot = table.totals(space, genome)
            out.append({"model": m["model"], "sim_actions": m["actions"], "model_rounds": float(tot["rounds"][0]),
                        "sim_mib": m["bytes"] / 2**20, "model_mib": float(tot["bytes"][0]) / 2**20,
                        "sim_exec_s": m["exec_s"]})
    return out


def calibrate(spu_python: str, out, timeout_s: float = 3600, probe_output=None) -> dict:
    """Run the probe under ``spu_python`` (or read ``probe_output``: a file of its recorded
    output), write the protocol table to ``out`` and compare the whole models."""
    import subprocess
    import tempfile
    from datetime import date
    from pathlib import Path

    import numpy as np

    from nas.errors import UserError
    from nas.runs import write_atomic
    from nas.spaces import get_space

    space = get_space("mpcvit-cifar")
    models = {name: space.head_choices(np.asarray([space.presets()[name].genome]))[0].tolist() for name in PRESETS}
    if probe_output is not None:
        text, what = Path(probe_output).read_text(), str(probe_output)
    else:
        if not Path(spu_python).is_file():
            raise UserError(f"--spu-python {spu_python}: no such file (give the Python of a venv with spu==0.9.5 "
                            "installed: python3 -m venv V && V/bin/pip install spu==0.9.5)")
        with tempfile.TemporaryDirectory() as cwd:  # not the repo: nothing there may shadow spu or jax
            try:
                r = subprocess.run([spu_python, str(Path(__file__).resolve()), "probe", json.dumps(models)],
                                   capture_output=True, text=True, cwd=cwd, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise UserError(f"the SPU probe did not finish in {timeout_s:.0f} s") from None
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"the SPU probe failed under {spu_python}: {last[:300]}")
        text, what = r.stdout, f"the probe under {spu_python}"
    try:
        header, ops, recs = read_probe(text, what)
    except (ValueError, json.JSONDecodeError) as e:
        raise UserError(str(e)) from None
    rows = derive_table(ops)
    out = Path(out)
    write_atomic(out, table_csv(header, rows, date.today().isoformat()))
    if probe_output is None:  # the raw counters beside the table: its provenance, re-readable with --from-output
        write_atomic(out.with_name(out.name + ".probe.jsonl"), "".join(ln + "\n" for ln in text.splitlines()
                                                                       if ln.startswith("{")))
    return {"table": str(out), "spu": header["spu"], "rows": rows, "models": compare_models(out, recs)}


# ---- the probe (SPU's environment) -----------------------------------------------------------------
def _run(sim_fn, *args) -> dict:
    """Run one SPU execution with its C++ log captured (it writes to the process's stdout)."""
    import os
    import tempfile

    with tempfile.TemporaryFile(mode="w+b") as log:
        sys.stdout.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            sim_fn(*args)
        finally:
            sys.stdout.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        log.seek(0)
        return parse_profile(log.read().decode(errors="replace"))


def _simulator():
    import spu.libspu as libspu
    import spu.utils.simulation as spsim

    cfg = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.SEMI2K, field=libspu.FieldType.FM64)
    cfg.enable_hal_profile = True
    cfg.enable_pphlo_profile = True
    return spsim, spsim.Simulator(2, cfg)


def _layernorm(x, eps=1e-5):
    import jax
    import jax.numpy as jnp

    m = jnp.mean(x, -1, keepdims=True)
    v = jnp.mean((x - m) ** 2, -1, keepdims=True)
    return (x - m) * jax.lax.rsqrt(v + eps)


def _rsattn(s):
    import jax
    import jax.numpy as jnp

    r = jax.nn.relu(s)
    return r * (1.0 / (jnp.sum(r, -1, keepdims=True) + 1e-5))  # r * (1 / sum): SPU's cheap form


def _op_fn(case: dict, sizes: dict):
    import jax
    import jax.numpy as jnp

    N, D = sizes["N"], sizes["D"]
    return {
        "matmul": lambda x, w: jnp.dot(x, w),
        "bmm": lambda x, w: jnp.einsum("hnd,hdm->hnm", x, w),
        "trunc": lambda x: x * (1.0 / math.sqrt(D)),
        "scalattn": lambda x: x * (1.0 / (math.sqrt(D) * N)),
        "layernorm": _layernorm,
        "softmax": lambda x: jax.nn.softmax(x, -1),
        "rsattn": _rsattn,
        "gelu": lambda x: jax.nn.gelu(x, approximate=True),
        "relu": jax.nn.relu,
    }[case["op"]]


def _vit(kinds: list[list[int]], sizes: dict, layers: int, classes: int = 10, patch_dim: int = 48):
    """ViT-7-4-32 in JAX as vitnas's cost model runs it: per layer LN, qkv, the heads of each kind
batched, proj, residual, LN, MLP (tanh GeLU), residual; final
    LN and the classifier on the cls token. ``kinds[layer][head]`` as vitnas's mpcvit genes: 0
    ScalAttn, 1 RSAttn, 2 softmax. Returns (fn, args)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    H, N, C, D, M = (sizes[k] for k in ("H", "N", "C", "D", "M"))
    rng = np.random.default_rng(0)
    P = N - 1
    params = {"embed": rng.normal(0, 0.05, (patch_dim, C)), "cls": rng.normal(0, 0.05, (1, C)),
              "pos": rng.normal(0, 0.05, (N, C)), "head": rng.normal(0, 0.05, (C, classes))}
    for i in range(layers):
        params[f"qkv{i}"] = rng.normal(0, 0.05, (C, 3 * C))
        params[f"proj{i}"] = rng.normal(0, 0.05, (C, C))
        params[f"fc1{i}"] = rng.normal(0, 0.05, (C, M))
        params[f"fc2{i}"] = rng.normal(0, 0.05, (M, C))
    patches = rng.normal(0, 1, (P, patch_dim))

    def fn(patches, params):
        x = jnp.concatenate([params["cls"], jnp.dot(patches, params["embed"])], 0) + params["pos"]
        for i in range(layers):
            y = _layernorm(x)
            qkv = jnp.dot(y, params[f"qkv{i}"]).reshape(N, 3, H, D).transpose(1, 2, 0, 3)  # (3, H, N, D)
            out = [None] * H
            for kind in (0, 1, 2):
                idx = [h for h in range(H) if kinds[i][h] == kind]
                if not idx:
                    continue
                q, k, v = qkv[0, np.array(idx)], qkv[1, np.array(idx)], qkv[2, np.array(idx)]
                s = jnp.einsum("hnd,hmd->hnm", q, k)
                if kind == 0:
                    a = s * (1.0 / (math.sqrt(D) * N))
                else:
                    s = s * (1.0 / math.sqrt(D))
                    a = _rsattn(s) if kind == 1 else jax.nn.softmax(s, -1)
                o = jnp.einsum("hnm,hmd->hnd", a, v)
                for j, h in enumerate(idx):
                    out[h] = o[j]
            x = x + jnp.dot(jnp.concatenate(out, -1), params[f"proj{i}"])
            x = _layernorm(x)
            x = x + jnp.dot(jax.nn.gelu(jnp.dot(x, params[f"fc1{i}"]), approximate=True), params[f"fc2{i}"])
        return jnp.dot(_layernorm(x)[0], params["head"])

    return fn, (patches, params)


def probe(models: dict[str, list[list[int]]], sizes: dict = CIFAR) -> None:
    """Every operator case, then every model (name -> per-layer head kinds), one JSON line each."""
    import jax
    import numpy as np

    jax.config.update("jax_platforms", "cpu")
    from importlib.metadata import version

    rng = np.random.default_rng(0)
    print(json.dumps({"spu": version("spu"), "jax": jax.__version__, "protocol": "SEMI2K", "field": "FM64",
                      "sizes": sizes}), flush=True)
    for case in op_cases(sizes):
        spsim, sim = _simulator()
        fn = spsim.sim_jax(sim, _op_fn(case, sizes))
        args = [rng.normal(0, 1, case["x"]).astype(np.float32)]
        if "w" in case:
            args.append(rng.normal(0, 0.05, case["w"]).astype(np.float32))
        print(json.dumps({**case, **_run(fn, *args)}), flush=True)
    for name, kinds in models.items():
        spsim, sim = _simulator()
        fn, args = _vit(kinds, sizes, len(kinds))
        print(json.dumps({"model": name, "kinds": kinds, **_run(spsim.sim_jax(sim, fn), *args)}), flush=True)


if __name__ == "__main__":  # the probe, in SPU's environment: probe [MODELS_JSON]
    if sys.argv[1:2] != ["probe"]:
        sys.exit("usage: python nas/latency/spu_calibration.py probe ['{\"name\": [[kind per head] per layer]}']")
    probe(json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
