"""MPCViT family and the MPC latency devices: formulas, encodings, exact round and byte
accounting, the published SPU counts, and the devices used by search, resume and latency."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, nas_cli, run_search
from nas.errors import UserError
from nas.spaces import get_space

TINY = """
family = "mpcvit"
name = "mpcvit-hand"
resolution = 8
patch = 4
in_chans = 1
num_classes = 3
layers = 1
heads = 2
dim = 4
mlp_ratio = 2
gelu_tokens = true
scalattn_order = "{order}"
"""
# distinct round counts so that a wrong call count shows; bytes 1 per element, 0.5 per matmul output
HAND_OPS = """op,rounds,rounds_per_log2n,bytes_per_element,bytes_per_output,ns_per_unit,per_head,source
share,0,0,0,0,0,0,hand (free: the counts below are the operators'; the CrypTen test checks its round)
matmul,2,0,1,0.5,1,0,hand
bmm,3,0,1,0.5,0,{per_head},hand
trunc,1,0,1,0,0,0,hand
scalattn,5,0,1,0,0,0,hand
layernorm,7,0,1,0,0,0,hand
softmax,11,13,1,0,0,0,hand
rsattn,17,0,1,0,0,0,hand
gelu,19,0,1,0,0,0,hand
relu,23,0,1,0,0,0,hand
"""


def _hand_device(tmp_path: Path, heads="batched", per_head=0, network='"wan"', ops=None, name="hand"):
    d = tmp_path / name
    d.mkdir()
    (d / "ops.csv").write_text(ops if ops is not None else HAND_OPS.format(per_head=per_head))
    (d / "mpcvit.toml").write_text(f'device = "{name}"\nkind = "mpc"\nfamily = "mpcvit"\nunits = "ms"\n'
                                   f'ops = "ops.csv"\nnetwork = {network}\nheads = "{heads}"\n')
    return d / "mpcvit.toml"


@pytest.fixture
def hand(tmp_path):
    p = tmp_path / "hand.toml"
    p.write_text(TINY.format(order="quadratic"))
    return get_space(p)


def _table(path):
    from nas.latency.table import load_any

    return load_any(path)


# ---- the space -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mpcvit-cifar", "mpcvit-tiny-imagenet"])
def test_presets_encode_and_params_are_exact(name):
    import torch  # noqa: F401

    space = get_space(name)
    for preset, arch in space.presets().items():
        enc = space.decode(arch)["encoding"]
        assert space.parse_arch(json.loads(enc)) == arch, preset
        assert space.canonical(arch.genome) == arch
    net = space.build(space.presets()["all-rs"])
    assert int(space.cost(np.asarray([space.presets()["all-rs"].genome]))["params"][0]) == \
        sum(p.numel() for p in net.parameters())


def test_cifar_backbone_and_released_pattern():
    space = get_space("mpcvit-cifar")
    assert (space.tokens, space.head_dim, space.hidden) == (65, 64, 512)
    assert space.param_count() == 3_716_874  # ViT-Lite-7/4: 3.72 M
    mu7 = space.decode(space.presets()["mpcvit-mu0.7"])
    assert (mu7["rs_heads"], mu7["scal_heads"]) == (20, 8)  # 28 - int(0.3 * 28) RS heads
    assert space.decode(space.presets()["all-softmax"])["softmax_heads"] == 28
    # the search vector reaches ScalAttn and RSAttn only; softmax is for baselines and teachers
    g = space.sample(np.random.default_rng(0), 2000)
    assert set(np.unique(space.head_choices(g))) == {0, 1}
    assert not space.linear_tokens(g).any()  # search_gelu = false


def test_bad_encodings_are_one_line_errors():
    space = get_space("mpcvit-cifar")
    with pytest.raises(UserError, match="7 comma-separated layers of 4"):
        space.parse_arch("1000,1111")
    with pytest.raises(UserError, match="unknown character"):
        space.parse_arch("1x00,1111,1111,1111,0111,0101,0101")
    with pytest.raises(UserError, match="did you mean 'all-rs'"):
        space.parse_arch("all-rss")
    with pytest.raises(UserError, match="no GeLU linearisation genes"):
        get_space("mpcvit-tiny-imagenet").parse_arch({"heads": ",".join(["0" * 12] * 9), "linear": ["1"] * 9})


def test_linear_tokens_round_trip(hand):
    arch = hand.parse_arch({"heads": "10", "linear": ["11"]})  # tokens 0 and 4 of 5 linear
    assert hand.linear_tokens(np.asarray([arch.genome]))[0, 0].tolist() == [True, False, False, False, True]
    assert hand.parse_arch(json.loads(hand.decode(arch)["encoding"])) == arch
    with pytest.raises(UserError, match="beyond the 5 tokens"):
        hand.parse_arch({"heads": "10", "linear": ["20"]})


# ---- the formulas ----------------------------------------------------------------------------
def test_attention_formulas_per_head():
    import torch

    from nas.nets.mpcvit import Attention

    torch.manual_seed(0)
    att = Attention(8, 2, 0.0, False)  # 2 heads of 4
    att.set_choices((1, 0))  # head 0 RSAttn, head 1 ScalAttn
    x = torch.randn(2, 5, 8)
    q, k, v = att.qkv(x).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    s = q @ k.transpose(-2, -1) / 2.0  # d_h = 4: scale 1/2
    r = s[:, 0].clamp(min=0)
    rs = r / (r.sum(-1, keepdim=True) + 1e-5)
    scal = s[:, 1] / 5  # N = 5 tokens, the scores already scaled
    out = torch.stack([rs @ v[:, 0], scal @ v[:, 1]], 1).transpose(1, 2).reshape(2, 5, 8)
    torch.testing.assert_close(att(x), att.proj(out), rtol=0, atol=1e-6)
    att.set_choices((2, 2))
    soft = torch.stack([s[:, h].softmax(-1) @ v[:, h] for h in range(2)], 1).transpose(1, 2).reshape(2, 5, 8)
    torch.testing.assert_close(att(x), att.proj(soft), rtol=0, atol=1e-6)
    att.set_choices((0, 0))
    quadratic = att(x)
    att.linear_scalattn = True  # MPCViT+: Q (K^T V) / N, the same function
    torch.testing.assert_close(att(x), quadratic, rtol=1e-5, atol=1e-6)


def test_gelu_linearisation_adds_the_post_relu(hand):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    net = hand.build(hand.parse_arch({"heads": "10", "linear": ["1"]})).eval()  # token 0 linear
    block = net.blocks[0]
    x = torch.randn(2, 5, 4)
    y = block.norm1(x + block.self_attn(block.pre_norm(x)))
    h = block.linear1(y)
    want = y + torch.cat([F.relu(block.linear2(h[:, :1])), block.linear2(F.gelu(h[:, 1:]))], 1)
    torch.testing.assert_close(block(x), want, rtol=0, atol=1e-6)


def test_supernet_extract_equals_active_supernet():
    import torch

    space = get_space("mpcvit-cifar")
    sn = space.build_supernet().eval()
    x = torch.randn(2, 3, 32, 32)
    for preset in ("mpcvit-mu0.7", "all-scal"):
        arch = space.presets()[preset]
        sn.set_active(arch)
        with torch.no_grad():
            torch.testing.assert_close(sn.extract(arch).eval()(x), sn(x), rtol=0, atol=1e-5)


# ---- MPC accounting, counted by hand ------------------------------------------------------------
# mpcvit-hand: N = 5 tokens (4 patches + cls), C = 4, 2 heads of d_h = 2, M = 8, 3 classes, F = 16.
# Arch "10" with token 0 linear: head 0 RSAttn, head 1 ScalAttn.
HAND_ROUNDS = (2  # embed matmul
               + 7 + 2  # LN_pre, qkv
               + 3 + 1 + 17 + 3  # RS head: QK^T, 1/sqrt(d), rsattn, AV
               + 3 + 5 + 3  # Scal head: QK^T, /(sqrt(d) N), AV
               + 2 + 7 + 2 + 19 + 2 + 23  # proj, LN_1, fc1, GeLU (4 tokens), fc2, post ReLU (1 token)
               + 7 + 2)  # final LN, head
HAND_INPUTS = (4 * 16 + 16 * 4  # embed: patches x F + F x C
               + 20 + (20 + 48)  # LN_pre [5,4]; qkv [5,4] + [4,12]
               + (20 + 25 + 25 + 35)  # RS: QK^T 2*N*d, scale N^2, rsattn N^2, AV N^2 + N*d
               + (20 + 25 + 35)  # Scal: QK^T, scalattn N^2, AV
               + (20 + 16) + 20 + (20 + 32) + 4 * 8 + (40 + 32) + 1 * 4  # proj, LN_1, fc1, GeLU, fc2, ReLU
               + 20 + (4 + 12))  # final LN, head on cls
HAND_OUTPUTS = 16 + 60 + (25 + 10) + (25 + 10) + 20 + 40 + 20 + 3  # what each matmul truncates
HAND_MACS = 4 * 16 * 4 + 5 * 4 * 12 + 5 * 4 * 4 + 5 * 4 * 8 + 5 * 8 * 4 + 4 * 3  # matmul (not bmm) MACs


def test_rounds_and_bytes_exact_by_hand(hand, tmp_path):
    t = _table(_hand_device(tmp_path, network="{ rtt_ms = 1.0, bandwidth_mbit_s = 0.008 }"))
    arch = hand.parse_arch({"heads": "10", "linear": ["1"]})
    tot = t.totals(hand, np.asarray([arch.genome]))
    assert tot["rounds"][0] == HAND_ROUNDS == 110
    assert tot["bytes"][0] == HAND_INPUTS + 0.5 * HAND_OUTPUTS
    assert tot["compute_ns"][0] == HAND_MACS
    # 1 ms per round, 1 ms per byte (0.008 Mbit/s), compute in ns
    assert t.predict(hand, np.asarray([arch.genome]))[0] == pytest.approx(110 + tot["bytes"][0] + HAND_MACS * 1e-6)
    rows = t.block_rows(hand, arch)
    assert rows[0]["key"] == "input" and "embed" in {r["key"] for r in rows} and rows[-1]["key"] == "head"
    assert sum(r["rounds"] for r in rows) == 110
    assert sum(r["mb_sent"] for r in rows) == pytest.approx(tot["bytes"][0] / 1e6)
    assert {"layer0.rs.rsattn", "layer0.scal.scalattn", "layer0.post_relu"} <= {r["key"] for r in rows}


def test_sequential_heads_and_per_head_matmuls(hand, tmp_path):
    both_rs = np.asarray([hand.parse_arch("11").genome])
    rs_layer = 3 + 1 + 17 + 3  # one call of each for the two RS heads together
    batched = _table(_hand_device(tmp_path, name="b")).totals(hand, both_rs)
    seq = _table(_hand_device(tmp_path, heads="sequential", name="s")).totals(hand, both_rs)
    per_head = _table(_hand_device(tmp_path, per_head=1, name="p")).totals(hand, both_rs)
    base = HAND_ROUNDS - 24 - 11 - 23  # no Scal head, no linear token
    assert batched["rounds"][0] == base + rs_layer
    assert seq["rounds"][0] == base + 2 * rs_layer  # every head pays its own rounds
    assert per_head["rounds"][0] == base + rs_layer + 2 * 3  # QK^T and AV once per head
    assert batched["bytes"][0] == seq["bytes"][0] == per_head["bytes"][0]  # bytes do not depend on batching
    # softmax rounds grow with ceil(log2 N): N = 5 -> 11 + 13 * 3
    sm = _table(_hand_device(tmp_path, name="m")).totals(hand, np.asarray([hand.parse_arch("ss").genome]))
    assert sm["rounds"][0] == base + rs_layer - 17 + (11 + 13 * 3)


def test_linear_order_scalattn_costs(tmp_path):
    p = tmp_path / "lin.toml"
    p.write_text(TINY.format(order="linear").replace("mpcvit-hand", "mpcvit-lin"))
    space = get_space(p)
    g = np.asarray([space.parse_arch("00").genome])
    t = _table(_hand_device(tmp_path)).totals(space, g)
    # per Scal head: K^T V (2 N d in, d^2 out), Q (K^T V) (N d + d^2 in, N d out), /(sqrt(d) N) on N d
    scal = 2 * ((20 + 0.5 * 4) + (10 + 4 + 0.5 * 10) + 10)
    rs_head, scal_head = (20 + 25 + 25 + 35) + 0.5 * 35, (20 + 25 + 35) + 0.5 * 35  # as in HAND_INPUTS
    rest = HAND_INPUTS + 0.5 * HAND_OUTPUTS - rs_head - scal_head - 4 * 8 - 4 + 5 * 8  # all 5 tokens GeLU
    assert t["bytes"][0] == rest + scal
    assert space.cost(g)["macs"][0] == HAND_MACS + 2 * 2 * 5 * 2 * 2  # two heads, 2 N d^2 each


# ---- the shipped devices ------------------------------------------------------------------------
# Whole-model counts of ViT-7-4-32, heads batched per layer (research notes): spu 0.9.5 SEMI2K's
# simulator (section 6; actions, MiB) and CrypTen 0.4.1's counters (section 5; rounds, MiB, one
# round of them the image's sharing)
WHOLE_MODEL = {
    "mpc-semi2k-wan-batched": ({"all-softmax": 1807, "all-rs": 1296, "all-scal": 974, "mpcvit-mu0.7": 1300},
                               {"all-softmax": 217, "all-rs": 150, "all-scal": 139, "mpcvit-mu0.7": 147}),
    "mpc-crypten-wan-batched": ({"all-softmax": 1380, "all-rs": 841, "all-scal": 575, "mpcvit-mu0.7": 849},
                                {"all-softmax": 208, "all-rs": 155, "all-scal": 127, "mpcvit-mu0.7": 147}),
}


@pytest.mark.parametrize("device", sorted(WHOLE_MODEL))
def test_batched_devices_reproduce_the_measured_whole_model_counts(device):
    from nas.latency import load_table

    space = get_space("mpcvit-cifar")
    t = load_table(device, space)
    rounds, mib = WHOLE_MODEL[device]
    for preset, n in rounds.items():
        tot = t.totals(space, np.asarray([space.presets()[preset].genome]))
        assert tot["rounds"][0] == n, preset
        assert tot["bytes"][0] / 2**20 == pytest.approx(mib[preset], abs=0.5), preset


def test_sequential_latency_is_affine_in_rs_heads():
    """The paper's CIFAR numbers grow by a constant per RSAttn head; so must sequential heads."""
    from nas.latency import load_table

    space = get_space("mpcvit-cifar")
    t = load_table("mpc-semi2k-wan", space)
    g = np.zeros((29, space.n_genes), dtype=np.int16)
    for k in range(29):
        g[k, :k] = 1  # k RSAttn heads
    ms = t.predict(space, g)
    steps = np.diff(ms)
    assert np.all(steps > 0) and np.ptp(steps) < 1e-6 * steps.mean() + 1e-6


def test_every_mpc_device_loads_with_its_kind():
    r = nas_cli("devices", "--json")
    assert r.returncode == 0, r.stderr
    rows = {d["device"]: d for d in json.loads(r.stdout)}
    for proto in ("semi2k", "crypten"):
        for net in ("wan", "lan"):
            for suffix in ("", "-batched"):
                assert rows[f"mpc-{proto}-{net}{suffix}"]["kind"] == "mpc"
    assert rows["pixel6"]["kind"] == "blocks"


def test_latency_json_blocks_have_rounds_and_bytes():
    r = nas_cli("latency", "--space", "mpcvit-cifar", "--device", "mpc-semi2k-wan", "--arch", "mpcvit-mu0.7",
                "--json", "--blocks")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    blocks = out["blocks"]["mpc-semi2k-wan"]
    assert set(blocks[0]) == {"key", "ms", "rounds", "mb_sent"}
    assert sum(b["ms"] for b in blocks) == pytest.approx(out["latency_ms"]["mpc-semi2k-wan"])
    rs = {b["key"]: b["rounds"] for b in blocks if b["key"].endswith(".rsattn")}
    assert len(rs) == 7 and rs["layer0.rs.rsattn"] == 46 and rs["layer1.rs.rsattn"] == 4 * 46  # heads one by one
    assert 40_000 < out["latency_ms"]["mpc-semi2k-wan"] < 200_000


@pytest.mark.parametrize("network, ops_drop, message", [
    ('"wam"', None, "unknown network preset 'wam'; did you mean 'wan'"),
    ('"wan"', "gelu", "lacks operator(s) gelu that space 'mpcvit-cifar' needs"),
])
def test_bad_device_tables_are_one_line_exit_2(tmp_path, network, ops_drop, message):
    ops = (REPO / "predictors/mpc-protocols/semi2k.csv").read_text()
    if ops_drop:
        ops = "\n".join(ln for ln in ops.splitlines() if not ln.startswith(ops_drop + ","))
    meta = _hand_device(tmp_path, network=network, ops=ops)
    r = nas_cli("latency", "--space", "mpcvit-cifar", "--device", str(meta), "--arch", "all-rs", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert str(meta) in lines[0] or "mpcvit.toml" in lines[0]  # names the table


def test_search_and_resume_on_mpc_devices(tmp_path):
    args = dict(space="mpcvit-cifar", devices=("mpc-semi2k-wan", "mpc-crypten-lan-batched"),
                objectives="latency", budget=200, population=20, max_latency=60000.0)
    run = run_search(tmp_path / "a", **args)
    rows = [json.loads(ln) for ln in (run / "evals.jsonl").read_text().splitlines()]
    assert len(rows) == 200 and all(r["status"] in ("ok", "skipped") for r in rows)
    front = (run / "pareto.csv").read_text().splitlines()
    assert "latency_mpc-semi2k-wan_ms" in front[0] and len(front) >= 2
    r = nas_cli("resume", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (run / "pareto.csv").read_text().splitlines() == front


def test_mpc_devices_refuse_other_families():
    from nas.latency import load_table

    with pytest.raises(UserError, match="has no latency table for space 'nb201'"):
        load_table("mpc-semi2k-wan", get_space("nb201"))


def test_activation_proxies_see_the_gelu():
    """NASWOT reads activation modules; a functional GeLU would leave it -inf for every network."""
    from nas.scorers import ProxyScorer

    space = get_space("mpcvit-mini")
    score = ProxyScorer(space, "naswot", 0, 2)(np.asarray(space.presets()["all-rs"].genome))["proxy_naswot"]
    assert np.isfinite(score)


def test_unknown_table_kind_is_named(tmp_path):
    meta = _hand_device(tmp_path)
    meta.write_text(meta.read_text().replace('kind = "mpc"', 'kind = "mcp"'))
    r = nas_cli("latency", "--space", "mpcvit-cifar", "--device", str(meta), "--arch", "all-rs", cwd=tmp_path)
    assert r.returncode == 2 and "unknown table kind 'mcp'; did you mean 'mpc'" in r.stderr, r.stderr
