"""Arch ids, registries and their 'did you mean' errors, TOML errors that point at the line."""
import numpy as np
import pytest

from nas.arch import Arch, genome_id
from nas.errors import UserError
from nas.registry import Registry, did_you_mean
from nas.spaces import get_space


def test_arch_id_is_stable_and_depends_on_space_definition(space):
    a = space.presets()["elastic_S1"]
    assert a.id == space.canonical(a.genome).id
    assert a.id.startswith("elasticvit-") and len(a.id.split("-")[1]) == 12
    # the id hashes the space definition too: an edited space never reuses cached results
    assert genome_id("elasticvit", "other-fingerprint", np.asarray(a.genome, np.int16).tobytes()) != a.id
    # golden value: changing the hash would orphan every existing run log
    assert a.id == "elasticvit-027739f3f127"


def test_arch_equality_ignores_fingerprint_field():
    assert Arch("s", (1, 2), "x") == Arch("s", (1, 2), "y")


def test_registry_suggests_close_names():
    reg = Registry("widget")
    reg.register("naswot")(object())
    with pytest.raises(UserError, match="did you mean 'naswot'"):
        reg.get("naswat")
    with pytest.raises(ValueError):
        reg.register("naswot")(object())
    assert "available: a, b" in str(did_you_mean("zzz", ["b", "a"], "thing"))


def test_unknown_space_and_bad_paths(tmp_path):
    with pytest.raises(UserError, match="did you mean 'elasticvit'"):
        get_space("elasticvt")
    with pytest.raises(UserError, match="does not exist"):
        get_space(str(tmp_path / "nope.toml"))


def _space_toml(tmp_path, text):
    src = (get_space("elasticvit").path).read_text()
    p = tmp_path / "s.toml"
    p.write_text(text(src))
    return p


def test_malformed_toml_names_file_and_line(tmp_path):
    p = _space_toml(tmp_path, lambda s: s.replace('head_width = 1984', 'head_width = = 1984'))
    with pytest.raises(UserError) as e:
        get_space(str(p))
    line = next(i for i, ln in enumerate(p.read_text().splitlines(), 1) if "head_width = =" in ln)
    assert f"{p}:{line}: malformed TOML" in str(e.value)


def test_schema_errors_name_field_and_line(tmp_path):
    # the third stage's width becomes a string: the error names stages[2].width and its line
    def edit(s):
        parts = s.split("[[stages]]")
        parts[3] = parts[3].replace("width = [48, 96, 16]", 'width = "wide"')
        return "[[stages]]".join(parts)

    p = _space_toml(tmp_path, edit)
    with pytest.raises(UserError) as e:
        get_space(str(p))
    line = next(i for i, ln in enumerate(p.read_text().splitlines(), 1) if 'width = "wide"' in ln)
    assert f"{p}:{line}: field 'stages[2].width'" in str(e.value)

    p = _space_toml(tmp_path, lambda s: s.replace('family = "elasticvit"', 'family = "elasticvt"'))
    with pytest.raises(UserError, match=r"field 'family'.*did you mean 'elasticvit'"):
        get_space(str(p))

    p = _space_toml(tmp_path, lambda s: s.replace("num_classes = 1000\n", ""))
    with pytest.raises(UserError, match="field 'num_classes': missing"):
        get_space(str(p))


def test_bad_preset_in_toml_points_at_it(tmp_path):
    p = _space_toml(tmp_path, lambda s: s.replace("elastic_T1 = [128,", "elastic_T1 = [129,"))
    space = get_space(str(p))
    with pytest.raises(UserError, match=r"field 'presets.elastic_T1'.*resolution=129"):
        space.presets()
