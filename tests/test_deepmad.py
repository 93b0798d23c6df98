"""DeepMAD: the released structures, the objective exactly as the code computes it, the solvers, `nas design`."""
import json
import math

import numpy as np
import pytest

from conftest import REPO, nas_cli
from nas.design.deepmad import Budgets, mutate, solve_evolution, solve_mp
from nas.design.deepmad_objective import Objective, evaluate
from nas.errors import UserError
from nas.spaces import get_space

RELEASED = json.loads((REPO / "tests/data/deepmad/released.json").read_text())["models"]


def one(space, arch, objective=Objective()):
    r = evaluate(space, np.asarray([arch.genome]), objective)
    return {k: (v[0] if v.ndim == 1 else v[0].tolist()) for k, v in r.items()}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_structures_reproduce_rho_penalty_and_budgets(name):
    rec = RELEASED[name]
    space = get_space(rec["space"])
    arch = space.presets()[rec["preset"]]
    m = one(space, arch)
    if "max_rho" in rec:
        assert m["rho"] == pytest.approx(rec["max_rho"], abs=6e-4)  # the note gives 3 decimals (29M-224: 0.4965)
        assert m["rho"] == max(m["rho_per_stage"]) == m["rho_per_stage"][-1]  # the binding stage is the last
    if "penalty" in rec:
        assert m["penalty"] == pytest.approx(rec["penalty"], abs=0.05)
    b = rec["budgets"]
    assert m["params_backbone"] <= b["model_size"]
    assert m["rho"] <= b["efficient_score"]
    if name == "DeepMAD-R18":  # released over its own FLOPs budget under the code's count
        assert m["flops"] == pytest.approx(rec["flops_code"], rel=1e-4) and m["flops"] > b["flops"]
    else:
        assert m["flops"] <= b["flops"]
    assert space.input_resolution(arch) == rec["image_size"]


def test_paper_form_doubles_the_entropy_and_corrected_mode_changes_only_resolution_terms():
    space = get_space("deepmad-mobilenet")
    arch = space.presets()["deepmad-50m"]
    code, paper = one(space, arch), one(space, arch, Objective("paper"))
    assert paper["entropy"] == pytest.approx(2 * code["entropy"], rel=1e-12)
    assert paper["penalty"] == code["penalty"] and paper["rho"] == code["rho"]
    fixed = one(space, arch, Objective(corrected=True))
    # the code's SE quirk: after the first K1DWSEK1 block every stage's side is 1, so only the
    # stem stage (ending before the first stride-2 super-block) keeps a resolution term
    ent = np.asarray(code["entropy_per_stage"])
    true = np.asarray(fixed["entropy_per_stage"])
    assert ent[0] == pytest.approx(true[0]) and (true[1:] > ent[1:]).all()
    resnet = get_space("deepmad-resnet")
    r50 = resnet.presets()["deepmad-r50"]
    assert one(resnet, r50, Objective(corrected=True))["entropy"] == pytest.approx(one(resnet, r50)["entropy"])


def test_stage_entropy_by_hand_on_a_small_structure():
    """H_j = (log C_j + log R_j^2) * sum of 1/2 log fan-in widths up to j, weighted [1,1,1,1,8]."""
    space = get_space("deepmad-tiny")
    st = [{"class": "ConvKXBNRELU", "in": 3, "out": 16, "s": 2, "k": 3}]
    dims = [(32, 8, 3, 2, 1), (64, 16, 3, 2, 2), (64, 16, 1, 2, 1), (64, 16, 1, 1, 1), (128, 16, 1, 2, 1)]
    prev = 16
    for out, btn, k, s, L in dims:
        st.append({"class": "SuperResK1KXK1", "in": prev, "out": out, "s": s, "k": k, "L": L, "btn": btn})
        prev = out
    arch = space.from_structure({"image_size": 32, "structure": st})
    m = one(space, arch)  # scored at 224: sides 112 56 28 14 7
    t = [0.5 * math.log(3 * 9)]
    cin = 16
    for out, btn, k, s, L in dims:
        for j in range(L):
            t.append(0.5 * math.log((cin if j == 0 else out) * btn * btn * k * k))
        cin = out
    cum = np.cumsum(t)
    # stages end after the stem, b1, b2, b4 (b4 has stride 1), and at the end; counts of blocks
    ends = [1, 2, 4, 6, 7]
    widths, sides = [16, 32, 64, 64, 128], [112, 56, 28, 14, 7]
    want = [(math.log(c) + math.log(r * r)) * cum[e - 1] for c, r, e in zip(widths, sides, ends)]
    assert m["entropy_per_stage"] == pytest.approx(want, rel=1e-12)
    assert m["entropy"] == pytest.approx(sum(want[:4]) + 8 * want[4], rel=1e-12)
    assert m["penalty"] == pytest.approx(10 * math.exp(np.std([1, 1, 1])), rel=1e-12)
    layers = [1, 4, 10, 16, 19]  # stem + 3 per inner block, cumulative at each stage end
    logw = np.cumsum(np.asarray(t) * 2)
    rho = [L / math.exp(logw[e - 1] / L) for L, e in zip(layers, ends)]
    assert m["rho_per_stage"] == pytest.approx(rho, rel=1e-12)


def test_flops_convention_against_a_hand_count():
    """The code's FLOPs: conv MACs, 2C per BN, C per ReLU, per output pixel; residual projection and
    its add; the 2x2 avg-pool's C per input pixel... counted by hand for one inner block and a stem."""
    space = get_space("deepmad-tiny")
    st = [{"class": "ConvKXBNRELU", "in": 3, "out": 16, "s": 2, "k": 3}]
    prev = 16
    for out, s in ((32, 2), (64, 2), (64, 2), (64, 1), (128, 2)):
        st.append({"class": "SuperResK1KXK1", "in": prev, "out": out, "s": s, "k": 3, "L": 1, "btn": 16})
        prev = out
    a = space.from_structure(st)
    deeper = [dict(b) for b in st]
    deeper[2]["L"] = 2  # one more inner block in super-block 2: 64 -> 64, btn 16, k 3, stride 1, on its 4x4 output
    b = space.from_structure(deeper)
    o, n, k, side = 64, 16, 3, 4
    inner = (o * n + 2 * n + n) + (n * n * k * k + 2 * n + n) + (n * o + 2 * o) + o  # conv1, conv2, conv3 (+BN, ReLU), final ReLU
    assert one(space, b)["flops"] - one(space, a)["flops"] == pytest.approx(inner * side ** 2, rel=1e-12)
    wider = [dict(x) for x in st]
    wider[0]["out"] = wider[1]["in"] = 24
    # the stem at 32 px: 3 -> c, 3x3 stride 2 onto 16x16, BN, ReLU; then super-block 1's first inner
    # block reads c channels: conv1 c -> 16 on 16x16, the 2x2 avg-pool (c per input pixel), the
    # projection c -> 32 on 8x8
    stem = lambda c: (3 * c * 9 + 2 * c + c) * 16 ** 2  # noqa: E731
    reads = lambda c: c * 16 * 16 ** 2 + c * 16 ** 2 + c * 32 * 8 ** 2  # noqa: E731
    delta = one(space, space.from_structure(wider))["flops"] - one(space, a)["flops"]
    assert delta == pytest.approx(stem(24) - stem(16) + reads(24) - reads(16), rel=1e-12)


def test_torch_model_matches_analytic_params_and_macs():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    tiny, mob = get_space("deepmad-tiny"), get_space("deepmad-mobilenet")
    small_288 = np.asarray(mob.smallest().genome)
    small_288[0] = 1  # the 288 px input, sides 144 72 36 18 9
    cases = [(tiny, a, True) for a in [tiny.smallest(), tiny.largest()] + [tiny.arch(g) for g in tiny.sample(np.random.default_rng(1), 3)]]
    cases += [(mob, mob.smallest(), True), (mob, mob.arch(small_288), True),
              (get_space("deepmad-resnet"), get_space("deepmad-resnet").presets()["deepmad-r18"], False),
              (mob, mob.presets()["deepmad-29m-288"], False)]
    for space, a, forward in cases:
            net = space.build(a).eval()
            c = space.cost(np.asarray([a.genome]))
            assert sum(p.numel() for p in net.parameters()) == c["params"][0]
            if not forward:
                continue
            r = space.input_resolution(a)
            with FlopCounterMode(display=False) as fc, torch.no_grad():
                y = net(torch.randn(1, 3, r, r))
            assert y.shape == (1, space.num_classes)
            assert fc.get_total_flops() == 2 * c["macs"][0]  # convs and linears, 2 FLOPs per MAC
            assert c["params"][0] - c["params_backbone"][0] == space.num_classes * (net.fc.in_features + 1)


def test_structure_files_and_bad_structures(tmp_path):
    space = get_space("deepmad-resnet")
    r18 = space.presets()["deepmad-r18"]
    enc = json.loads(space.decode(r18)["encoding"])
    assert space.parse_arch(enc) == r18
    assert space.parse_arch(enc["structure"]) == r18  # a bare block list
    blocks = space.structure(r18)
    assert space.parse_arch({"best_structures": [blocks]}) == r18
    bad = [dict(b) for b in blocks]
    bad[3]["in"] = 100
    with pytest.raises(UserError, match=r"block 3 \(SuperResK1KXK1\): field 'in': 100 differs from the previous block's out 384"):
        space.parse_arch(bad)
    bad = [dict(b) for b in blocks]
    bad[2]["k"] = 7
    with pytest.raises(UserError, match=r"block 2 \(SuperResK1KXK1\): field 'k': 7 is not in \[3, 5\]"):
        space.parse_arch(bad)
    bad = [dict(b) for b in blocks]
    bad[1]["class"] = "SuperResK1DWSEK1"
    with pytest.raises(UserError, match=r"block 1: field 'class': expected 'SuperResK1KXK1'"):
        space.parse_arch(bad)
    bad = [dict(b) for b in blocks]
    bad[4]["s"] = 2  # five stride-2 super-blocks: six stages
    with pytest.raises(UserError, match="5 stride-2 super-blocks"):
        space.parse_arch(bad)
    bad = [dict(b) for b in blocks]
    bad[1]["nbitsA"] = 8
    with pytest.raises(UserError, match=r"unknown field\(s\) \['nbitsA'\]"):
        space.parse_arch(bad)


def test_solver_rules_hold_for_every_grid_vector_and_mutation():
    space = get_space("deepmad-resnet")
    rng = np.random.default_rng(0)
    g = space.sample(rng, 2000)
    assert (space.values(g).out <= 4 * space.values(g).cin).all()
    g = np.concatenate([g, mutate(space, g, rng, 2)])
    s = space.values(g)
    widths = np.concatenate([s.stem[:, None], s.out], axis=1)
    assert (np.diff(widths, axis=1) >= 0).all()  # non-decreasing
    assert (s.out <= 4 * s.cin).all() and (s.out % 8 == 0).all() and (s.stem % 8 == 0).all()
    assert (s.btn <= s.out).all() and (s.btn >= s.out / 10 - 8).all() and (s.btn % 8 == 0).all()
    assert (s.L[:, 0] <= 3).all() and (s.stem <= 32).all()
    mob = get_space("deepmad-mobilenet")
    m = mob.values(np.concatenate([mob.sample(rng, 500), mutate(mob, mob.sample(rng, 500), rng)]))
    ratio = m.btn / m.out
    assert (ratio >= 1.5 - 8 / m.out).all() and (ratio <= 6.0 + 8 / m.out).all()
    assert ((m.stem >= 16) & (m.stem <= 32)).all()


def test_mp_solver_beats_the_released_r18_within_every_budget():
    space = get_space("deepmad-resnet")
    b = Budgets(1.82e9, 11.69e6, 0.3)
    sol = solve_mp(space, b, seed=0, restarts=1)
    m = sol.metrics
    assert m["flops"] <= b.flops and m["params_backbone"] <= b.params and m["rho"] <= b.rho
    released = one(space, space.presets()["deepmad-r18"])
    assert m["score"] >= released["score"]
    evo = solve_evolution(space, b, seed=0, iterations=20_000)
    seed_score = one(space, next(iter(space.seeds().values())))["score"]
    assert evo.metrics["score"] > seed_score and evo.metrics["flops"] <= b.flops and evo.metrics["rho"] <= b.rho
    pop = [r for _, r in evo.candidates]
    assert all(r["params_backbone"] <= b.params for r in pop)
    assert len({tuple(g) for g, _ in evo.candidates}) == len(evo.candidates)  # duplicates removed


def test_layer_budget_binds_and_the_solver_is_deterministic():
    space = get_space("deepmad-tiny")
    b = Budgets(30e6, 1e6, 0.3, layers=25)
    sol = solve_mp(space, b, Objective(corrected=True), restarts=1, maxiter=300)
    assert sol.metrics["layers"] <= 25
    depths = space.values(sol.genome[None, :]).L[0]
    assert depths[0] <= 3 and (depths[1:] <= 25 // 3 // 4).all()  # the original's per-block cap under a layer budget
    evo = solve_evolution(space, b, Objective(corrected=True), iterations=5000)
    assert (space.values(evo.genome[None, :]).L[0][1:] <= 2).all() and evo.metrics["layers"] <= 25
    free = solve_mp(space, Budgets(30e6, 1e6, 0.3), Objective(corrected=True), restarts=1, maxiter=300)
    assert free.metrics["layers"] > 25  # the budget binds: without it the design is deeper
    again = solve_mp(space, b, Objective(corrected=True), restarts=1, maxiter=300)
    assert (again.genome == sol.genome).all()


def test_nas_design_cli(tmp_path):
    out = tmp_path / "run"
    r = nas_cli("design", "--space", "deepmad-tiny", "--max-flops", "30M", "--max-params", "1M", "--corrected",
                "--restarts", "1", "--out", str(out), "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert list(res) == ["score", "entropy", "penalty", "rho", "rho_per_stage", "flops", "params", "params_with_fc",
                         "layers", "solve_s", "structure"]
    assert res["flops"] <= 30e6 and res["params"] <= 1e6 and res["rho"] <= 0.3
    assert res["score"] == pytest.approx(res["entropy"] - res["penalty"])
    assert {"config.toml", "evals.jsonl", "pareto.csv", "structure.json"} <= {p.name for p in out.iterdir()}
    lines = (out / "evals.jsonl").read_text().splitlines()
    assert len(lines) > 1 and all(json.loads(x)["status"] == "ok" for x in lines)
    import csv

    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert rows and all(float(r["score"]) == pytest.approx(res["score"], rel=1e-5) for r in rows)  # ties are kept
    structure = out / "structure.json"
    assert json.loads(structure.read_text())["structure"] == res["structure"]
    ev = nas_cli("design", "--space", "deepmad-tiny", "--evaluate", str(structure), "--corrected", "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["score"] == pytest.approx(res["score"])
    lat = nas_cli("latency", "--space", "deepmad-tiny", "--arch", str(structure), "--json")
    assert lat.returncode == 0, lat.stderr
    assert json.loads(lat.stdout)["params_m"] == pytest.approx(res["params_with_fc"] / 1e6)
    # report.html, as a search writes it: the score against the budgeted costs, the design in its table
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "DeepMAD design (mp)" in page
    assert f"<td>{rows[0]['arch_id']}</td>" in page and "flops &lt;= 3e+07" in page


def test_report_places_the_released_structures_by_the_same_score():
    from nas.design.deepmad import breakdown, preset_columns

    space = get_space("deepmad-resnet")
    cols = preset_columns(space, Objective())
    assert set(cols) == set(space.presets())
    for name in ("deepmad-r18", "deepmad-r50"):
        b = breakdown(space, space.presets()[name].genome)
        assert cols[name]["score"] == pytest.approx(b["score"]) and cols[name]["flops"] == b["flops"]
        assert cols[name]["params"] == b["params"]  # without the classifier, as the --max-params budget counts


def test_infeasible_budgets_name_the_constraint_and_write_nothing(tmp_path):
    out = tmp_path / "never"
    r = nas_cli("design", "--space", "deepmad-resnet", "--max-flops", "1M", "--max-params", "11.69M", "--out", str(out))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--max-flops 1M cannot be met" in r.stderr and "8.011M" in r.stderr
    assert not out.exists()
    r = nas_cli("design", "--space", "deepmad-resnet", "--max-flops", "1.8G", "--max-params", "11M", "--rho", "0.001")
    assert r.returncode == 2 and "--rho 0.001 cannot be met" in r.stderr
    r = nas_cli("design", "--space", "nb201", "--max-flops", "1G", "--max-params", "1M")
    assert r.returncode == 2 and "family 'nb201'" in r.stderr
