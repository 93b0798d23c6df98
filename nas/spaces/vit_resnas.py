"""ViT-ResNAS (Liao, Karaman, Sze, 2021): a three-stage ViT with residual spatial reduction.

Macro-architecture (fixed): conv patch embedding (3x3/2 stem conv, two 3x3 convs in one residual,
a (patch/2) x (patch/2) projection with that stride), a cls token and a position embedding; three
stages of pre-LN transformer blocks separated by residual spatial-reduction (SR) blocks that halve
the token grid (LN -> 3x3/2 conv, plus 2x2 avg-pool with zero-padded channels; the cls token
through a linear plus zero-padded residual; a new position embedding); final LN on the cls token,
linear classifier. Training adds a patch head (a linear on the patch tokens, for patch-token
mixup); the published parameter counts include it, the deployed model does not.

Genome layout, per stage s (1-based): ``stage{s}.embed``, ``stage{s}.head_dim``, then per block
slot j: ``stage{s}.block{j}.exists`` (skippable slots only; choices (0, 1)), ``.heads``,
``.mlp``. Choices are ascending, so the all-zeros search vector is the smallest network. Heads and
MLP of a skipped slot are inactive. The skip rule of the original (``update_depth``): inside a run
of consecutive skippable slots, a slot is off when the one before it is off (with the published
alternating patterns every run has one slot, so every skip is independent).

``head_dim`` is a *fixed* gene: it has no search variable, so searches, samples, smallest and
largest always use the stage's head_dim. Its other choices exist only for the space's reference
networks (``[references]``, e.g. the hand-designed ViT-Res-Tiny with head_dim 64 in stages 1-2):
any genome that uses one must be exactly a reference network. Supernets reject them.

The original encoding (``network_def``) is an input and output format; see ``from_network_def``.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.arch import GENOME_DTYPE, Arch, Gene
from nas.errors import UserError
from nas.spaces.base import BlockSpec, LatencySlot, SearchSpace, Var
from nas.tomldoc import TomlDoc

EMBED, BLOCK, SR, HEAD = 4, 1, 3, 2  # block codes of the original network_def


@dataclass(frozen=True)
class Stage:
    embeds: tuple[int, ...]  # ascending
    head_dims: tuple[int, ...]  # [0]: the searched one; the rest only for reference networks
    heads: tuple[int, ...]  # ascending
    mlps: tuple[int, ...]  # absolute hidden sizes, ascending
    skippable: tuple[bool, ...]  # per block slot

    @property
    def slots(self) -> int:
        return len(self.skippable)


def _ascending(doc: TomlDoc, table: dict, key: str, field: str) -> tuple[int, ...]:
    values = doc.int_list(table, key, field)
    if len(set(values)) != len(values) or min(values) <= 0:
        raise doc.error(field, f"expected distinct positive integers, got {values}")
    return tuple(sorted(values))


class ViTResNASSpace(SearchSpace):
    family = "vit-resnas"

    def __init__(self, doc: TomlDoc):
        d = self._read_header(doc)
        self.resolution = doc.get(d, "resolution", "resolution", int)
        self.patch = doc.get(d, "patch", "patch", int)
        self.stem_width = doc.get(d, "stem_width", "stem_width", int, 24)
        self.num_classes = doc.get(d, "num_classes", "num_classes", int)
        if self.patch < 2 or self.patch % 2:
            raise doc.error("patch", f"expected an even patch (a 3x3/2 stem conv, then (patch/2)-strided projection), got {self.patch}")
        if self.resolution % self.patch:
            raise doc.error("resolution", f"expected a multiple of patch={self.patch}, got {self.resolution}")
        raw = doc.get(d, "stages", "stages", list)
        if not raw:
            raise doc.error("stages", "expected at least one [[stages]] table")
        self.grid = self.resolution // self.patch  # token-grid side of stage 1
        if self.grid % (2 ** (len(raw) - 1)):
            raise doc.error("resolution", f"the {self.grid}x{self.grid} token grid cannot halve {len(raw) - 1} times")
        stages = []
        for i, st in enumerate(raw):
            f = f"stages[{i}]"
            pattern = doc.get(st, "blocks", f"{f}.blocks", str)
            if not pattern or set(pattern) - {"B", "S"} or pattern[0] != "B":
                raise doc.error(f"{f}.blocks", f"expected a string of B (block) and S (skippable block) starting with B, got {pattern!r}")
            if doc.get(st, "head_dim", f"{f}.head_dim", int) <= 0:
                raise doc.error(f"{f}.head_dim", "expected a positive head dimension")
            stages.append(Stage(
                embeds=_ascending(doc, st, "embed", f"{f}.embed"),
                head_dims=(doc.get(st, "head_dim", f"{f}.head_dim", int),),
                heads=_ascending(doc, st, "heads", f"{f}.heads"),
                mlps=_ascending(doc, st, "mlp", f"{f}.mlp"),
                skippable=tuple(c == "S" for c in pattern),
            ))
        for i in range(1, len(stages)):  # the SR residual zero-pads channels: widths never shrink
            if stages[i].embeds[0] < stages[i - 1].embeds[-1]:
                raise doc.error(f"stages[{i}].embed", f"must be at least stage {i}'s largest embed "
                                f"{stages[i - 1].embeds[-1]} (the residual of spatial reduction zero-pads channels)")
        self._doc = doc
        self._ref_specs = doc.get(d, "references", "references", dict, {})
        for name, spec in self._ref_specs.items():  # reference head_dims become fixed-gene choices
            for s, hd in self._head_dims_of(spec, name, len(stages)).items():
                if hd not in stages[s].head_dims:
                    stages[s] = Stage(stages[s].embeds, stages[s].head_dims + (hd,), stages[s].heads,
                                      stages[s].mlps, stages[s].skippable)
        self.stages = tuple(stages)
        self._build_genes()
        search = doc.get(d, "search", "search", dict, {})
        self.search_defaults = {}
        if "max_macs" in search:  # the constraint C of `--preset resnas` (M MACs)
            self.search_defaults["max_macs"] = float(doc.get(search, "max_macs", "search.max_macs", (int, float)))
        canon = json.dumps({k: v for k, v in d.items() if k not in ("presets", "description", "source", "train", "search")},
                           sort_keys=True)
        self.fingerprint = hashlib.blake2b(canon.encode(), digest_size=8).hexdigest()
        self._preset_specs = doc.get(d, "presets", "presets", dict, {})

    def _head_dims_of(self, spec: Any, name: str, n_stages: int) -> dict[int, int]:
        """Stage index -> head_dim of a reference network_def (read before the genes exist; the
        full validation happens when the reference is parsed)."""
        out, s = {}, 0
        for blk in spec if isinstance(spec, list) else []:
            if isinstance(blk, list) and blk and blk[0] == SR:
                s += 1
            elif isinstance(blk, list) and len(blk) == 4 and blk[0] == BLOCK and isinstance(blk[1], list) \
                    and len(blk[1]) == 3 and isinstance(blk[1][2], int) and blk[1][2] > 0:
                out.setdefault(s, blk[1][2])
        if not out:
            raise self._doc.error(f"references.{name}", "expected a network_def list")
        return {k: v for k, v in out.items() if k < n_stages}

    @functools.cached_property
    def train_recipe(self) -> dict:
        """``[train]``: settings of multi-architecture supernet training tied to this space."""
        doc = self._doc
        t = doc.get(doc.data, "train", "train", dict, {})
        out: dict[str, Any] = {}
        if "drop_path" in t:
            out["drop_path"] = float(doc.get(t, "drop_path", "train.drop_path", (int, float)))
            if not 0 <= out["drop_path"] < 1:
                raise doc.error("train.drop_path", f"expected a probability in [0, 1), got {out['drop_path']}")
        if "warmup_epochs" in t:
            out["warmup_epochs"] = doc.get(t, "warmup_epochs", "train.warmup_epochs", int)
            if out["warmup_epochs"] < 0:
                raise doc.error("train.warmup_epochs", f"expected 0 or more epochs, got {out['warmup_epochs']}")
        return out

    # ---- genes and search vector -----------------------------------------------------------
    def _build_genes(self) -> None:
        genes: list[Gene] = []
        self.g_embed, self.g_hd, self.g_exists, self.g_heads, self.g_mlp = [], [], [], [], []
        for s, st in enumerate(self.stages, 1):
            self.g_embed.append(len(genes))
            genes.append(Gene(f"stage{s}.embed", st.embeds))
            self.g_hd.append(len(genes))
            genes.append(Gene(f"stage{s}.head_dim", st.head_dims))
            ex, he, ml = [], [], []
            for j, skip in enumerate(st.skippable):
                if skip:
                    ex.append(len(genes))
                    genes.append(Gene(f"stage{s}.block{j}.exists", (0, 1)))
                else:
                    ex.append(None)
                he.append(len(genes))
                genes.append(Gene(f"stage{s}.block{j}.heads", st.heads))
                ml.append(len(genes))
                genes.append(Gene(f"stage{s}.block{j}.mlp", st.mlps))
            self.g_exists.append(ex)
            self.g_heads.append(he)
            self.g_mlp.append(ml)
        self.genes = tuple(genes)
        fixed = set(self.g_hd)  # head_dim is never searched
        self.vars = tuple(Var(g.name, g.size, (k,)) for k, g in enumerate(genes) if k not in fixed)

    def _exists(self, genomes: np.ndarray, s: int) -> np.ndarray:
        """Bool (n, slots): which block slots of stage s exist."""
        cols = [np.ones(len(genomes), bool) if g is None else genomes[:, g] == 1 for g in self.g_exists[s]]
        return np.stack(cols, 1)

    def active_mask(self, genomes: np.ndarray) -> np.ndarray:
        mask = np.ones(genomes.shape, dtype=bool)
        for s in range(len(self.stages)):
            on = self._exists(genomes, s)
            mask[:, self.g_heads[s]] = on
            mask[:, self.g_mlp[s]] = on
        return mask

    def repair(self, genomes: np.ndarray) -> np.ndarray:
        """The skip rule: in a run of consecutive skippable slots, a slot after a skipped one is skipped."""
        genomes = genomes.copy()
        for s in range(len(self.stages)):
            prev = None
            for g in self.g_exists[s]:
                if g is not None and prev is not None:
                    genomes[:, g] = np.minimum(genomes[:, g], genomes[:, prev])
                prev = g
        return genomes

    def violations(self, genomes: np.ndarray) -> list[str]:
        for s in range(len(self.stages)):
            prev = None
            for j, g in enumerate(self.g_exists[s]):
                if g is not None and prev is not None:
                    bad = np.flatnonzero((genomes[:, g] == 1) & (genomes[:, prev] == 0))
                    if bad.size:
                        return [f"stage {s + 1} block {j} exists but block {j - 1}, the skippable block before it, "
                                "is skipped (skip rule: a run of skippable blocks is skipped from its end)"]
                prev = g
        odd = np.flatnonzero((genomes[:, self.g_hd] != 0).any(1))
        if odd.size:
            refs = {r.genome: n for n, r in self.references().items()}
            for i in odd:
                canon = tuple(int(x) for x in self.canonicalize(genomes[i:i + 1])[0])
                if canon not in refs:
                    s = int(np.flatnonzero(genomes[i, self.g_hd] != 0)[0])
                    hd = self.stages[s].head_dims[genomes[i, self.g_hd[s]]]
                    return [f"stage {s + 1} head_dim {hd} is used only by the reference network(s) "
                            f"{', '.join(sorted(self._ref_specs))}; the space searches head_dim {self.stages[s].head_dims[0]}"]
        return []

    def size(self) -> int:
        total = 1
        for st in self.stages:
            hm = len(st.heads) * len(st.mlps)
            stage, run = len(st.embeds), 0
            for skip in st.skippable + (False,):
                if skip:
                    run += 1
                    continue
                if run:  # a run of r skippable slots: its first 0..r slots exist
                    stage *= sum(hm ** k for k in range(run + 1))
                    run = 0
            stage *= hm ** sum(not s for s in st.skippable)
            total *= stage
        return total

    # ---- values and cost ---------------------------------------------------------------------
    def values(self, genomes: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Per stage: embed (n,), head_dim (n,), exists/heads/mlp (n, slots) (heads, mlp 0 where skipped)."""
        g = np.asarray(genomes)
        out = []
        for s, st in enumerate(self.stages):
            on = self._exists(g, s)
            out.append({
                "embed": np.asarray(st.embeds, dtype=np.int64)[g[:, self.g_embed[s]]],
                "head_dim": np.asarray(st.head_dims, dtype=np.int64)[g[:, self.g_hd[s]]],
                "exists": on,
                "heads": np.where(on, np.asarray(st.heads, dtype=np.int64)[g[:, self.g_heads[s]]], 0),
                "mlp": np.where(on, np.asarray(st.mlps, dtype=np.int64)[g[:, self.g_mlp[s]]], 0),
            })
        return out

    def sides(self) -> list[int]:
        """Token-grid side of each stage."""
        return [self.grid // 2 ** s for s in range(len(self.stages))]

    def cost(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        """MACs in the original's convention (ComputationEstimator, return_mac=True): the conv embed,
        qkv, QK^T and AV (N^2 * heads * head_dim each), proj, FFN, SR conv + cls linear, the
        classifier; N includes the cls token; LN, softmax, GELU, BN and additions are not counted.
        ``params``: the deployed model; ``params_with_patch_head``: plus the training-only patch
        head (the published counts)."""
        v = self.values(genomes)
        n = len(genomes)
        stem, k = self.stem_width, self.patch // 2
        half = self.resolution // 2
        e0 = v[0]["embed"]
        macs = np.full(n, half * half * stem * (27 + 2 * 9 * stem), dtype=np.int64) + self.grid ** 2 * e0 * stem * k * k
        params = np.full(n, 27 * stem + 2 * 9 * stem * stem + 3 * 2 * stem, dtype=np.int64) + stem * k * k * e0 + e0
        params += (self.grid ** 2 + 1) * e0 + e0  # position embedding, cls token
        for s, (st, side) in enumerate(zip(self.stages, self.sides())):
            e, hd = v[s]["embed"], v[s]["head_dim"]
            if s:
                ein = v[s - 1]["embed"]
                macs += side * side * e * 9 * ein + ein * e
                params += 2 * ein + 9 * ein * e + e + ein * e + e + (side * side + 1) * e
            tokens = side * side + 1
            for j in range(st.slots):
                on = v[s]["exists"][:, j]
                a = v[s]["heads"][:, j] * hd
                hidden = v[s]["mlp"][:, j]
                bm = e * a * 3 * tokens + 2 * tokens * tokens * a + tokens * a * e + 2 * tokens * e * hidden
                bp = 4 * e + e * 3 * a + 3 * a + a * e + e + e * hidden + hidden + hidden * e + e
                macs += np.where(on, bm, 0)
                params += np.where(on, bp, 0)
        e = v[-1]["embed"]
        c = self.num_classes
        macs += e * c
        params += 2 * e + e * c + c
        return {"macs": macs, "params": params, "params_with_patch_head": params + e * c + c}

    # ---- latency-table blocks ----------------------------------------------------------------
    def latency_slots(self, grid_rounding: str) -> list[LatencySlot]:
        """Keys (this family's grammar; grids are even, so the rounding does not matter):
        ``resnas_embed_{res}_{stem}_{patch}_{E}``, ``resnas_block_{tokens}_{E}_{heads}_{head_dim}_{mlp}``
        per existing block, ``resnas_sr_{side_in}_{Ein}_{Eout}`` per reduction, ``resnas_head_{E}_{classes}``."""
        r, stem, p, c = self.resolution, self.stem_width, self.patch, self.num_classes
        slots = [LatencySlot((self.g_embed[0],), lambda e: f"resnas_embed_{r}_{stem}_{p}_{e}",
                             block=lambda e: BlockSpec.of("resnas_embed", (3, r, r), side=r, stem=stem, patch=p, cout=e))]
        for s, (st, side) in enumerate(zip(self.stages, self.sides())):
            tokens = side * side + 1
            if s:
                sin = side * 2

                def key_sr(ein, eout, sin=sin):
                    return f"resnas_sr_{sin}_{ein}_{eout}"

                def block_sr(ein, eout, sin=sin):
                    return BlockSpec.of("resnas_sr", (sin * sin + 1, ein), side=sin, cout=eout)
                slots.append(LatencySlot((self.g_embed[s - 1], self.g_embed[s]), key_sr, block=block_sr))
            for j in range(st.slots):
                def key(e, hd, h, m, tokens=tokens):
                    return f"resnas_block_{tokens}_{e}_{h}_{hd}_{m}"

                def block(e, hd, h, m, tokens=tokens):
                    return BlockSpec.of("resnas_block", (tokens, e), heads=h, head_dim=hd, mlp=m)
                ex = self.g_exists[s][j]
                slots.append(LatencySlot((self.g_embed[s], self.g_hd[s], self.g_heads[s][j], self.g_mlp[s][j]), key,
                                         None if ex is None else (ex, 1), block=block))
        slots.append(LatencySlot((self.g_embed[-1],), lambda e: f"resnas_head_{e}_{c}",
                                 block=lambda e: BlockSpec.of("resnas_head", (self.sides()[-1] ** 2 + 1, e), classes=c)))
        return slots

    # ---- the original encoding (network_def) ---------------------------------------------------
    def to_network_def(self, arch: Arch) -> list:
        """The original's network_def with every slot listed; skipped slots keep ``exists = 0``
        (their heads and MLP are the smallest choices, as the canonical genome stores)."""
        g = np.asarray([arch.genome])
        v = self.values(g)
        out: list = [[EMBED, int(v[0]["embed"][0])]]
        for s, st in enumerate(self.stages):
            e, hd = int(v[s]["embed"][0]), int(v[s]["head_dim"][0])
            if s:
                out.append([SR, int(v[s - 1]["embed"][0]), e])
            for j in range(st.slots):
                on = bool(v[s]["exists"][0, j])
                h = int(v[s]["heads"][0, j]) if on else st.heads[0]
                m = int(v[s]["mlp"][0, j]) if on else st.mlps[0]
                out.append([BLOCK, [e, h, hd], [e, m], int(on)])
        out.append([HEAD, int(v[-1]["embed"][0]), self.num_classes])
        return out

    def from_network_def(self, spec: Any, what: str = "network_def") -> Arch:
        """An Arch from the original's network_def. A stage may list every slot (skipped ones with
        ``exists = 0``, as the original's sampler writes) or only its existing blocks (as its
        searched-network scripts do, skipped blocks deleted). Deleted blocks are taken to be the
        stage's *last* skippable slots: the listed blocks fill the other slots in order. That
        choice fixes which supernet weights a deleted-form network uses; the cost and the
        standalone model do not depend on it. Errors name the block (its index in the list) and
        the field."""
        def bad(i: int | None, msg: str) -> UserError:
            where = f"{what}[{i}]" if i is not None else what
            return UserError(f"{where}: {msg}")

        if not isinstance(spec, (list, tuple)) or len(spec) < 3:
            raise bad(None, "expected the original network_def: a list [[4, E], [1, [E, heads, head_dim], [E, mlp], exists], "
                            "..., [3, E_in, E_out], ..., [2, E, classes]]")

        def ints(i: int, name: str, x: Any) -> int:
            if isinstance(x, bool) or not isinstance(x, int):
                raise bad(i, f"field {name}: expected an integer, got {x!r}")
            return x

        first, last = spec[0], spec[-1]
        if not isinstance(first, (list, tuple)) or len(first) != 2 or first[0] != EMBED:
            raise bad(0, f"expected the patch embedding [4, E] first, got {first!r}")
        if not isinstance(last, (list, tuple)) or len(last) != 3 or last[0] != HEAD:
            raise bad(len(spec) - 1, f"expected the head [2, E, {self.num_classes}] last, got {last!r}")
        # split into stages at the SR blocks
        stages: list[list[tuple[int, Any]]] = [[]]
        srs: list[tuple[int, Any]] = []
        for i, blk in enumerate(spec[1:-1], 1):
            if not isinstance(blk, (list, tuple)) or not blk:
                raise bad(i, f"expected a block list, got {blk!r}")
            if blk[0] == SR:
                if len(blk) != 3:
                    raise bad(i, f"expected a spatial-reduction block [3, E_in, E_out], got {blk!r}")
                srs.append((i, blk))
                stages.append([])
            elif blk[0] == BLOCK:
                if len(blk) != 4 or not all(isinstance(x, (list, tuple)) for x in blk[1:3]) or len(blk[1]) != 3 or len(blk[2]) != 2:
                    raise bad(i, f"expected a transformer block [1, [E, heads, head_dim], [E, mlp], exists], got {blk!r}")
                stages[-1].append((i, blk))
            elif blk[0] in (EMBED, HEAD):
                raise bad(i, f"block code {blk[0]} ({'patch embedding' if blk[0] == EMBED else 'head'}) is only allowed "
                             f"{'first' if blk[0] == EMBED else 'last'}")
            else:
                raise bad(i, f"unknown block code {blk[0]!r} (4 patch embedding, 1 transformer block, 3 spatial reduction, 2 head)")
        if len(stages) != len(self.stages):
            raise bad(None, f"space {self.name!r} has {len(self.stages)} stages ({len(self.stages) - 1} spatial-reduction "
                            f"blocks), got {len(stages)}")
        values: dict[str, Any] = {}
        embeds = [ints(0, "E", first[1])]
        for k, (i, blk) in enumerate(srs):
            ein, eout = ints(i, "E_in", blk[1]), ints(i, "E_out", blk[2])
            embeds.append(eout)
            srs[k] = (i, (ein, eout))
        for s, blocks in enumerate(stages):  # widths first: a block in the wrong place shows as a width mismatch
            if embeds[s] not in self.stages[s].embeds:
                raise bad(0 if s == 0 else srs[s - 1][0], f"field {'E' if s == 0 else 'E_out'}: stage {s + 1} embed "
                                                          f"{embeds[s]} is not one of {list(self.stages[s].embeds)}")
            for i, blk in blocks:
                be, me = ints(i, "E", blk[1][0]), ints(i, "mlp E", blk[2][0])
                if be != embeds[s] or me != embeds[s]:
                    raise bad(i, f"field E: {be if be != embeds[s] else me} differs from stage {s + 1}'s embed {embeds[s]}")
        for s, st in enumerate(self.stages):
            e = embeds[s]
            where = 0 if s == 0 else srs[s - 1][0]
            field = "E" if s == 0 else "E_out"
            if e not in st.embeds:
                raise bad(where, f"field {field}: stage {s + 1} embed {e} is not one of {list(st.embeds)}")
            values[f"stage{s + 1}.embed"] = e
            if s:
                i, (ein, _) = srs[s - 1]
                if ein != embeds[s - 1]:
                    raise bad(i, f"field E_in: {ein} differs from stage {s}'s embed {embeds[s - 1]}")
            blocks = stages[s]
            n_fixed = sum(not x for x in st.skippable)
            if len(blocks) > st.slots or len(blocks) < n_fixed:
                at = blocks[-1][0] if len(blocks) > st.slots else where
                raise bad(at, f"stage {s + 1} has {len(blocks)} transformer blocks; the space allows {n_fixed}-{st.slots} "
                              f"(slots {''.join('S' if x else 'B' for x in st.skippable)})")
            deleted = st.slots - len(blocks)
            skip_slots = [j for j, x in enumerate(st.skippable) if x]
            gone = set(skip_slots[len(skip_slots) - deleted:]) if deleted else set()
            slots = [j for j in range(st.slots) if j not in gone]
            hd_seen = None
            for j, (i, blk) in zip(slots, blocks):
                (be, h, hd), (me, m), ex = blk[1], blk[2], blk[3]
                for name, x in (("E", be), ("heads", h), ("head_dim", hd), ("mlp E", me), ("mlp", m), ("exists", ex)):
                    ints(i, name, x)
                if be != e or me != e:
                    raise bad(i, f"field E: {be if be != e else me} differs from stage {s + 1}'s embed {e}")
                if hd not in st.head_dims:
                    raise bad(i, f"field head_dim: {hd} is not stage {s + 1}'s head_dim {st.head_dims[0]}")
                if hd_seen is not None and hd != hd_seen:
                    raise bad(i, f"field head_dim: {hd} differs from {hd_seen}, the head_dim of the stage's other blocks")
                hd_seen = hd
                if ex not in (0, 1):
                    raise bad(i, f"field exists: expected 0 or 1, got {ex}")
                if not st.skippable[j] and ex == 0:
                    raise bad(i, f"field exists: stage {s + 1} block {j} cannot be skipped (only slots "
                                 f"{[k for k in skip_slots]} can)")
                if h not in st.heads:
                    raise bad(i, f"field heads: {h} is not one of {list(st.heads)}")
                if m not in st.mlps:
                    raise bad(i, f"field mlp: {m} is not one of {list(st.mlps)}")
                if st.skippable[j]:
                    values[f"stage{s + 1}.block{j}.exists"] = ex
                    prev = j - 1
                    if ex == 1 and prev >= 0 and st.skippable[prev]:
                        prev_on = values.get(f"stage{s + 1}.block{prev}.exists", 0)
                        if prev_on == 0:
                            raise bad(i, f"field exists: stage {s + 1} block {j} exists but block {prev}, the skippable block "
                                         "before it, is skipped (skip rule)")
                if ex:
                    values[f"stage{s + 1}.block{j}.heads"] = h
                    values[f"stage{s + 1}.block{j}.mlp"] = m
            for j in gone:
                values[f"stage{s + 1}.block{j}.exists"] = 0
            if hd_seen is not None:
                values[f"stage{s + 1}.head_dim"] = hd_seen
        e_head, classes = ints(len(spec) - 1, "E", last[1]), ints(len(spec) - 1, "classes", last[2])
        if e_head != embeds[-1]:
            raise bad(len(spec) - 1, f"field E: {e_head} differs from the last stage's embed {embeds[-1]}")
        if classes != self.num_classes:
            raise bad(len(spec) - 1, f"field classes: space {self.name!r} has {self.num_classes} classes, got {classes}")
        try:
            return self.from_values(values)
        except UserError as e:
            raise UserError(f"{what}: {e}") from None

    def parse_arch(self, spec: Any) -> Arch:
        if isinstance(spec, str) and spec.lstrip().startswith("("):  # as the original's --network-def writes it
            import ast

            try:
                spec = ast.literal_eval(spec.strip())
            except (ValueError, SyntaxError) as e:
                raise UserError(f"network_def: not a Python tuple literal ({e.__class__.__name__}: {e})") from None
            spec = json.loads(json.dumps(spec))  # tuples -> lists
        if isinstance(spec, (list, tuple)):
            return self.from_network_def(spec)
        if isinstance(spec, str) and spec in self._ref_specs:
            return self.references()[spec]
        if isinstance(spec, str) and spec not in self.presets():
            from nas.registry import did_you_mean

            raise did_you_mean(spec, list(self.presets()) + list(self._ref_specs), f"preset of space {self.name!r}")
        return super().parse_arch(spec)

    @functools.cached_property
    def _presets(self) -> dict[str, Arch]:
        return self._read_defs("presets", self._preset_specs)

    def presets(self) -> dict[str, Arch]:
        return self._presets

    @functools.cached_property
    def _references(self) -> dict[str, Arch]:
        return self._read_defs("references", self._ref_specs)

    def references(self) -> dict[str, Arch]:
        """Fixed networks outside the searched choices (e.g. ViT-Res-Tiny), accepted by ``--arch``."""
        return self._references

    def _read_defs(self, table: str, specs: dict) -> dict[str, Arch]:
        out = {}
        for name, spec in specs.items():
            try:
                arch = self.from_network_def(spec, what=f"{table}.{name}") if table == "presets" else self._reference(spec, name)
            except UserError as e:
                raise self._doc.error(f"{table}.{name}", str(e)) from None
            out[name] = arch
        return out

    def _reference(self, spec: Any, name: str) -> Arch:
        # Validated like any network_def, except for the reference-only head_dim check, which is
        # defined by these very networks: ``canonical`` skips ``violations`` while the flag is set
        # (violations() itself asks for the references, so the check cannot run here).
        self._building_ref = True
        try:
            arch = self.from_network_def(spec, what=f"references.{name}")
        finally:
            self._building_ref = False
        return arch

    def canonical(self, genome) -> Arch:
        if getattr(self, "_building_ref", False):
            g = np.asarray(genome, dtype=GENOME_DTYPE).reshape(1, -1)
            return self.arch(self.canonicalize(g)[0])
        return super().canonical(genome)

    def is_reference(self, arch: Arch) -> bool:
        return any(arch.genome[g] != 0 for g in self.g_hd)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "references": sorted(self._ref_specs)}

    # ---- human-readable columns --------------------------------------------------------------
    def decode(self, arch: Arch) -> dict[str, Any]:
        v = self.values(np.asarray([arch.genome]))
        out: dict[str, Any] = {}
        for s, st in enumerate(self.stages, 1):
            vs = v[s - 1]
            on = vs["exists"][0]
            out[f"stage{s}.embed"] = int(vs["embed"][0])
            out[f"stage{s}.depth"] = int(on.sum())
            if len(st.head_dims) > 1:
                out[f"stage{s}.head_dim"] = int(vs["head_dim"][0])
            out[f"stage{s}.heads"] = "|".join(str(int(h)) for h in vs["heads"][0][on])
            out[f"stage{s}.mlp"] = "|".join(str(int(m)) for m in vs["mlp"][0][on])
        out["encoding"] = json.dumps(self.to_network_def(arch), separators=(",", ":"))
        return out

    def input_resolution(self, arch: Arch) -> int:
        return self.resolution

    def build(self, arch: Arch, patch_head: bool = False):
        from nas.nets.vit_resnas import ViTResNet

        return ViTResNet.from_arch(self, arch, patch_head=patch_head)

    def build_supernet(self):
        from nas.elastic.vit_resnas import ViTResNASSupernet

        return ViTResNASSupernet(self)
